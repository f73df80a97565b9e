//! `POST /build` with the classic builder (works on API 1.41): the context is streamed as the
//! request body, never buffered whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::errors::Error as BollardError;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use super::{describe, is_connection_error, DockerEngine, Obj, UPLOAD_TIMEOUT_SECS};
use crate::engine::*;

impl DockerEngine {
    pub(super) async fn build(
        &self,
        opts: &BuildOptions,
        context: ContextStream,
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<String> {
        let args: HashMap<&str, &str> = opts
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let labels: HashMap<&str, &str> = opts
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut b = BuildImageOptionsBuilder::new()
            .t(&opts.tag)
            .dockerfile(&opts.dockerfile)
            .buildargs(&args)
            .labels(&labels)
            .nocache(opts.no_cache)
            .rm(true)
            .forcerm(true);
        if let Some(t) = &opts.target {
            b = b.target(t);
        }
        if let Some(n) = &opts.network {
            b = b.networkmode(n);
        }
        // The query parameter takes one `host:ip` (the build module warns about the others).
        if let Some(h) = opts.extra_hosts.first() {
            b = b.extrahosts(h);
        }
        if let Some(s) = opts.shm_size {
            b = b.shmsize(i32::try_from(s).unwrap_or(i32::MAX));
        }
        if !opts.cache_from.is_empty() {
            b = b.cachefrom(&opts.cache_from);
        }
        if opts.pull {
            b = b.pull("1");
        }

        // Keep the context's own error (hyper only reports "body error").
        let source_err: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let slot = source_err.clone();
        let body = context.map(move |item| {
            if let Err(e) = &item {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
            item
        });
        let docker = self.with_timeout(UPLOAD_TIMEOUT_SECS);
        let mut stream = docker.build_image(b.build(), None, Some(bollard::body_try_stream(body)));
        let fail = |message: String| EngineError::BuildFailed {
            image: opts.tag.clone(),
            message,
        };
        let mut partial = String::new();
        while let Some(item) = stream.next().await {
            let context_err = source_err.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(e) = context_err {
                return Err(EngineError::api(
                    "build",
                    opts.tag.clone(),
                    format!("reading the build context: {e}"),
                ));
            }
            match item {
                Ok(info) => {
                    if let Some(msg) = info.error_detail.and_then(|d| d.message) {
                        return Err(fail(msg));
                    }
                    if let Some(text) = info.stream {
                        partial.push_str(&text);
                        while let Some(i) = partial.find('\n') {
                            let line: String = partial.drain(..=i).collect();
                            emit(line.trim_end(), progress);
                        }
                    }
                }
                Err(e) if is_connection_error(&e) => {
                    return Err(self.err("build", Obj::Image(&opts.tag), e))
                }
                Err(BollardError::DockerStreamError { error }) => return Err(fail(error)),
                Err(e) => {
                    if let Some(msg) = source_err.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        return Err(EngineError::api(
                            "build",
                            opts.tag.clone(),
                            format!("reading the build context: {msg}"),
                        ));
                    }
                    // A Dockerfile error (unknown instruction, missing stage...) comes as a 400.
                    return Err(match super::status(&e) {
                        Some(400 | 500) => fail(
                            super::server_message(&e)
                                .map(str::to_string)
                                .unwrap_or_else(|| describe(&e)),
                        ),
                        _ => EngineError::api("build", opts.tag.clone(), describe(&e)),
                    });
                }
            }
        }
        if !partial.trim().is_empty() {
            emit(partial.trim_end(), progress);
        }
        match self.docker.inspect_image(&opts.tag).await {
            Ok(r) => Ok(r.id.unwrap_or_default()),
            Err(e) => Err(self.err("inspect image", Obj::Image(&opts.tag), e)),
        }
    }
}

/// Classic builder output: "Step 2/5 : RUN make" starts a step; " ---> abc" lines are the
/// builder's own bookkeeping (kept as output).
fn emit(line: &str, progress: &(dyn Fn(BuildEvent) + Send + Sync)) {
    if line.starts_with("Step ") && line.contains(" : ") {
        progress(BuildEvent::Step(line.to_string()));
    } else if !line.is_empty() {
        progress(BuildEvent::Output(line.to_string()));
    }
}
