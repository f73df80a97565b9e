//! Attached sessions over bollard: log streams, exec and container attach, resize, wait, top.

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, LogsOptionsBuilder, ResizeContainerTTYOptionsBuilder,
    TopOptions, WaitContainerOptionsBuilder,
};
use std::pin::Pin;

use futures_util::{Stream, StreamExt};

use super::{describe, is_connection_error, DockerEngine, Obj};
use crate::engine::*;

/// Attached sessions and followed logs run as long as the user wants: a year.
const SESSION_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// bollard output → the engine's plain chunks.
fn chunk(item: LogOutput) -> Option<OutputChunk> {
    let (kind, message) = match item {
        LogOutput::StdOut { message } => (OutputKind::Stdout, message),
        LogOutput::StdErr { message } => (OutputKind::Stderr, message),
        LogOutput::Console { message } => (OutputKind::Console, message),
        LogOutput::StdIn { .. } => return None,
    };
    Some(OutputChunk {
        kind,
        bytes: Vec::from(message),
    })
}

/// Maps a stream of bollard output, turning errors into engine errors about `container`.
fn output_stream(
    endpoint: String,
    container: String,
    op: &'static str,
    s: Pin<Box<dyn Stream<Item = std::result::Result<LogOutput, BollardError>> + Send>>,
) -> OutputStream {
    Box::pin(s.filter_map(move |item| {
        let endpoint = endpoint.clone();
        let container = container.clone();
        async move {
            match item {
                Ok(o) => chunk(o).map(Ok),
                Err(e) if is_connection_error(&e) => Some(Err(EngineError::Unreachable {
                    endpoint,
                    reason: describe(&e),
                })),
                Err(e) => Some(Err(EngineError::api(
                    op,
                    format!("container {container}"),
                    describe(&e),
                ))),
            }
        }
    }))
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i64::from(i32::MAX)) as i32
}

impl DockerEngine {
    pub(super) async fn session_log_stream(
        &self,
        id: &str,
        opts: &LogOptions,
    ) -> Result<OutputStream> {
        let tail = opts
            .tail
            .map(|t| t.to_string())
            .unwrap_or_else(|| "all".to_string());
        let mut b = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(opts.follow)
            .timestamps(opts.timestamps)
            .tail(&tail);
        if let Some(since) = opts.since {
            b = b.since(clamp_i32(since));
        }
        if let Some(until) = opts.until {
            b = b.until(clamp_i32(until));
        }
        // Following has no end: no request timeout once the stream started (bollard's timeout
        // covers the whole request otherwise).
        let docker = if opts.follow {
            self.with_timeout(SESSION_TIMEOUT_SECS)
        } else {
            self.docker.clone()
        };
        // Surface a missing container now rather than as the stream's first item.
        self.inspect_container(id).await?;
        let s = docker.logs(id, Some(b.build()));
        Ok(output_stream(
            self.endpoint.clone(),
            id.to_string(),
            "logs",
            Box::pin(s),
        ))
    }

    pub(super) async fn session_exec_attach(&self, id: &str, spec: &ExecSpec) -> Result<Attached> {
        let opts = CreateExecOptions::<String> {
            attach_stdin: Some(spec.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(spec.tty),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            cmd: Some(spec.cmd.clone()),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            ..Default::default()
        };
        let docker = self.with_timeout(SESSION_TIMEOUT_SECS);
        let created = docker
            .create_exec(id, opts)
            .await
            .map_err(|e| self.err("exec", Obj::Container(id), e))?;
        let start = StartExecOptions {
            detach: false,
            tty: spec.tty,
            output_capacity: Some(1024 * 1024),
        };
        match docker
            .start_exec(&created.id, Some(start))
            .await
            .map_err(|e| self.err("exec", Obj::Container(id), e))?
        {
            StartExecResults::Attached { output, input } => Ok(Attached {
                id: created.id,
                output: output_stream(self.endpoint.clone(), id.to_string(), "exec", output),
                input,
            }),
            StartExecResults::Detached => Err(EngineError::api(
                "exec",
                format!("container {id}"),
                "the engine started the command detached",
            )),
        }
    }

    pub(super) async fn session_resize_exec(
        &self,
        exec_id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<()> {
        self.docker
            .resize_exec(
                exec_id,
                ResizeExecOptions {
                    height: rows,
                    width: cols,
                },
            )
            .await
            .map_err(|e| self.err("resize exec", Obj::Other(exec_id), e))
    }

    pub(super) async fn session_attach_container(&self, id: &str) -> Result<Attached> {
        let opts = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            // Attached before the start (as `docker run` does): nothing to replay. `logs=true`
            // replays the log while the stream is attached too, and a short one-off's output
            // came out twice (seen: `0\n0` for one `echo 0`; moby/moby#29285: switching from
            // logs to the stream is racy).
            .logs(false)
            .build();
        let docker = self.with_timeout(SESSION_TIMEOUT_SECS);
        let r = docker
            .attach_container(id, Some(opts))
            .await
            .map_err(|e| self.err("attach", Obj::Container(id), e))?;
        Ok(Attached {
            id: id.to_string(),
            output: output_stream(self.endpoint.clone(), id.to_string(), "attach", r.output),
            input: r.input,
        })
    }

    pub(super) async fn session_resize_container(
        &self,
        id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<()> {
        let opts = ResizeContainerTTYOptionsBuilder::new()
            .h(i32::from(rows))
            .w(i32::from(cols))
            .build();
        self.docker
            .resize_container_tty(id, opts)
            .await
            .map_err(|e| self.err("resize", Obj::Container(id), e))
    }

    pub(super) async fn session_wait_container(&self, id: &str) -> Result<i64> {
        let docker = self.with_timeout(SESSION_TIMEOUT_SECS);
        let opts = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut s = docker.wait_container(id, Some(opts));
        let mut code = None;
        while let Some(item) = s.next().await {
            match item {
                Ok(r) => code = Some(r.status_code),
                // bollard reports a non-zero exit as an error carrying the code.
                Err(BollardError::DockerContainerWaitError { code: c, .. }) => code = Some(c),
                Err(e) => return Err(self.err("wait", Obj::Container(id), e)),
            }
        }
        match code {
            Some(c) => Ok(c),
            None => Ok(self.inspect_container(id).await?.exit_code.unwrap_or(-1)),
        }
    }

    pub(super) async fn session_top(&self, id: &str) -> Result<TopInfo> {
        let r = self
            .docker
            .top_processes(id, None::<TopOptions>)
            .await
            .map_err(|e| self.err("top", Obj::Container(id), e))?;
        Ok(TopInfo {
            titles: r.titles.unwrap_or_default(),
            processes: r.processes.unwrap_or_default(),
        })
    }
}
