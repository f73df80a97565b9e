//! The one place that maps errors to exit codes and hints.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 data loss detected, 4 engine unreachable.

use std::process::ExitCode;

use crate::engine::EngineError;
use crate::output::{PromptError, Ui};

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_DATA_LOSS: u8 = 3;
pub const EXIT_ENGINE: u8 = 4;

/// Returned by commands that found data missing (the details were already printed).
#[derive(Debug, thiserror::Error)]
#[error("data loss detected: {summary}")]
pub struct DataLossDetected {
    pub summary: String,
    /// The exact command that would undo it, when a snapshot exists.
    pub restore_command: Option<String>,
    /// What brings the data back without a restore (a renamed project: run with the old name);
    /// preferred over the restore command in the hint.
    pub fix: Option<String>,
}

/// A usage error found after argument parsing (e.g. a bad duration).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A command run in a container (`exec`, `run`, `psql`, `redis-cli`) ended with this non-zero exit
/// code: nodus exits with it too, printing nothing more (the command spoke for itself).
#[derive(Debug, thiserror::Error)]
#[error("the command exited with code {0}")]
pub struct PassThroughExit(pub i64);

/// Exit code and hint for an error chain.
pub fn classify(err: &anyhow::Error) -> (u8, Option<String>) {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<DataLossDetected>() {
            return (
                EXIT_DATA_LOSS,
                Some(match (&e.fix, &e.restore_command) {
                    (Some(fix), _) => fix.clone(),
                    (None, Some(cmd)) => format!("to put the data back, run: {cmd}"),
                    (None, None) => {
                        "no usable snapshot from before the loss holds what is missing; see `nodus snapshot list`"
                            .into()
                    }
                }),
            );
        }
        // `LifecycleError::Engine`/`Build` and `BuildError::Engine` are transparent: their source
        // is the inner error's source, so the inner error is only reachable through them.
        let build = cause
            .downcast_ref::<crate::build::BuildError>()
            .or_else(
                || match cause.downcast_ref::<crate::lifecycle::LifecycleError>() {
                    Some(crate::lifecycle::LifecycleError::Build(e)) => Some(e),
                    _ => None,
                },
            );
        match build {
            Some(crate::build::BuildError::MissingNotAllowed { service, .. }) => {
                return (
                    EXIT_ERROR,
                    Some(format!("build it first: `nodus build {service}`")),
                )
            }
            Some(crate::build::BuildError::Failed { services, .. }) => {
                return (
                    EXIT_ERROR,
                    Some(format!(
                        "fix the failing step; `nodus -v build {}` shows the whole build log (running services were left as they were)",
                        services[0]
                    )),
                )
            }
            _ => {}
        }
        let engine = cause
            .downcast_ref::<EngineError>()
            .or_else(
                || match cause.downcast_ref::<crate::lifecycle::LifecycleError>() {
                    Some(crate::lifecycle::LifecycleError::Engine(e)) => Some(e),
                    _ => None,
                },
            )
            .or(match build {
                Some(crate::build::BuildError::Engine(e)) => Some(e),
                _ => None,
            });
        if let Some(e) = engine {
            if let EngineError::Unreachable { endpoint, .. } = e {
                return (
                    EXIT_ENGINE,
                    Some(format!(
                        "is the Docker engine running and is {endpoint} the right one? Check `docker info` and that you may use the socket; choose another engine with `--context NAME` (`docker context ls` lists them), `-H URL` or DOCKER_HOST"
                    )),
                );
            }
            if let EngineError::ImageUnavailable { image, .. } = e {
                return (
                    EXIT_ERROR,
                    Some(format!("build or load {image} locally (`docker images` must list it), or make its registry reachable")),
                );
            }
        }
        if let Some(e) = cause.downcast_ref::<PromptError>() {
            if let PromptError::NoTty { command, .. } = e {
                return (EXIT_USAGE, Some(format!("run: {command}")));
            }
            if let PromptError::Declined = e {
                return (EXIT_ERROR, None);
            }
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return (EXIT_USAGE, None);
        }
        if let Some(e) = cause.downcast_ref::<crate::stack::StackError>() {
            return match e {
                // A service named on the command line that the stack does not have.
                crate::stack::StackError::UnknownService { .. } => (
                    EXIT_USAGE,
                    Some("`nodus status` lists the services".to_string()),
                ),
                _ => (EXIT_ERROR, None),
            };
        }
        if let Some(crate::state::StateError::LockTimeout { .. }) =
            cause.downcast_ref::<crate::state::StateError>()
        {
            return (
                EXIT_ERROR,
                Some("wait for the other command to finish, or raise --lock-timeout".into()),
            );
        }
    }
    (EXIT_ERROR, None)
}

/// Prints the error (and its causes) with a hint, returns the exit code. With `--json`, a
/// command that failed before printing its document prints `{"error", "exit_code", "hint"}`
/// instead, so stdout always holds exactly one JSON document.
pub fn report(err: &anyhow::Error, ui: &Ui) -> ExitCode {
    if let Some(PassThroughExit(code)) = err.downcast_ref::<PassThroughExit>() {
        // Like a shell: codes outside 1..=255 wrap (a signal's 128+N stays as it is).
        let code = u8::try_from(code.rem_euclid(256)).unwrap_or(EXIT_ERROR);
        return ExitCode::from(if code == 0 { EXIT_ERROR } else { code });
    }
    let (code, hint) = classify(err);
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(&format!("\n  caused by: {c}"));
        }
    }
    // With --json the loss is in the command's document; the hint still says how to undo it.
    if code != EXIT_DATA_LOSS || !ui.json {
        ui.error(&msg);
    }
    if let Some(h) = &hint {
        ui.hint(h);
    }
    if ui.json && !ui.json_printed() {
        ui.json_out(&serde_json::json!({
            "error": msg,
            "exit_code": code,
            "hint": hint,
        }));
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_service_is_a_usage_error() {
        let e = anyhow::Error::new(crate::stack::StackError::UnknownService {
            name: "dbb".into(),
            available: vec!["db".into()],
        });
        assert_eq!(classify(&e).0, EXIT_USAGE);
        let e = anyhow::Error::new(crate::stack::StackError::DependencyCycle {
            cycle: vec!["a".into(), "b".into()],
        });
        assert_eq!(classify(&e).0, EXIT_ERROR);
    }

    #[test]
    fn engine_unreachable_inside_a_lifecycle_error_is_exit_4() {
        let e = crate::lifecycle::LifecycleError::Engine(EngineError::Unreachable {
            endpoint: "unix:///tmp/x.sock".into(),
            reason: "connection closed before message completed".into(),
        });
        let any = anyhow::Error::new(e).context("nodus up");
        assert_eq!(classify(&any).0, EXIT_ENGINE);
    }
}
