//! Ctrl-C (SIGINT) and SIGTERM during a command.
//!
//! `lib.rs` races the command against [`wait`]. When a signal wins, the command's future is
//! dropped: what it was doing stops at its next await point, and whatever it held is released by
//! its destructors — a snapshot being written (`PartialSnapshot`) removes its `.partial`
//! directory. A stopped database is fine as it is. Then [`report`] says what the interruption
//! left (the project's containers and their state, from the engine), what was removed, and the
//! command that completes the work; the exit code is 128 + the signal (130 for SIGINT, 143 for
//! SIGTERM).
//!
//! Steps that cannot stop halfway without leaving damaged data (emptying a volume and uploading a
//! snapshot into it, loading a logical backup into emptied databases) hold a [`Critical`] guard:
//! a first signal during one is noted and the step finishes before the command is abandoned; a
//! second signal abandons it at once (the message then names the safety copy to restore).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::engine::{Engine, RunState};
use crate::output::Ui;

/// The signals nodus handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// 128 + the signal number, as shells report it.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "Ctrl-C (SIGINT)",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// What the running command registered about itself.
#[derive(Default)]
struct State {
    /// Project and engine to describe the state left (set once the command has them).
    project: Option<String>,
    engine: Option<Arc<dyn Engine>>,
    /// What the command is doing now (e.g. "snapshot of db"), for the message.
    step: Option<String>,
    /// Descriptions of the critical steps running.
    critical: Vec<(u64, String)>,
    /// Safety copies made by this command that undo a critical step (e.g. a safety snapshot).
    safety: Vec<String>,
    /// Unfinished snapshots/backups removed since the command started.
    removed: Vec<String>,
    /// A signal that arrived during a critical step, acted on when the step ends.
    pending: Option<Signal>,
    next_token: u64,
}

fn state() -> std::sync::MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn notify() -> &'static Notify {
    static N: OnceLock<Notify> = OnceLock::new();
    N.get_or_init(Notify::new)
}

/// The command works on `project` (lets [`report`] list its containers).
pub fn set_project(project: &str) {
    state().project = Some(project.to_string());
}

/// The engine the command talks to.
pub fn set_engine(engine: Arc<dyn Engine>) {
    state().engine = Some(engine);
}

/// What the command does now; shown if it is interrupted.
pub fn set_step(step: impl Into<String>) {
    state().step = Some(step.into());
}

/// What the command does now (the last [`set_step`]), if anything was said.
pub fn current_step() -> Option<String> {
    state().step.clone()
}

/// A safety copy this command made (snapshot id, backup file) that undoes its critical step.
pub fn note_safety_copy(what: impl Into<String>) {
    state().safety.push(what.into());
}

/// An unfinished snapshot or backup file was removed (called from the writers' destructors).
pub fn note_removed(what: impl Into<String>) {
    state().removed.push(what.into());
}

/// A step that must not stop halfway; see the module docs. Dropping it ends the step.
#[must_use = "the step is critical only while the guard lives"]
pub struct Critical(u64);

pub fn critical(what: impl Into<String>) -> Critical {
    let mut s = state();
    s.next_token += 1;
    let t = s.next_token;
    s.critical.push((t, what.into()));
    Critical(t)
}

impl Drop for Critical {
    fn drop(&mut self) {
        let mut s = state();
        s.critical.retain(|(t, _)| *t != self.0);
        if s.critical.is_empty() && s.pending.is_some() {
            notify().notify_one();
        }
    }
}

/// Waits for SIGINT or SIGTERM and returns it once the command should be abandoned: at once,
/// or — during a critical step — when the step ends or a second signal comes.
pub async fn wait(ui: Ui) -> Signal {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        // Without handlers the default actions stay: nothing to wait for.
        _ => return std::future::pending().await,
    };
    loop {
        let sig = tokio::select! {
            _ = int.recv() => Signal::Interrupt,
            _ = term.recv() => Signal::Terminate,
            _ = notify().notified() => {
                match state().pending {
                    Some(p) => return p,
                    None => continue,
                }
            }
        };
        let mut s = state();
        if s.pending.is_some() || s.critical.is_empty() {
            return sig;
        }
        let what: Vec<String> = s.critical.iter().map(|(_, w)| w.clone()).collect();
        s.pending = Some(sig);
        drop(s);
        ui.warn(format!(
            "{} received: finishing {} first (stopping it halfway would leave damaged data); press Ctrl-C again to abandon it anyway",
            sig.name(),
            what.join(", ")
        ));
    }
}

/// Says what the interrupted command left and how to complete it; returns the exit code.
/// `resume` is the command line to run again.
pub async fn report(sig: Signal, ui: &Ui, resume: &str) -> u8 {
    let (project, engine, step, critical, safety, removed) = {
        let s = state();
        (
            s.project.clone(),
            s.engine.clone(),
            s.step.clone(),
            s.critical
                .iter()
                .map(|(_, w)| w.clone())
                .collect::<Vec<_>>(),
            s.safety.clone(),
            s.removed.clone(),
        )
    };
    let during = step.map(|s| format!(" during {s}")).unwrap_or_default();
    ui.error(format!("interrupted by {}{during}", sig.name()));
    if let (Some(project), Some(engine)) = (project, engine) {
        let filter = crate::labels::project_filter(&project);
        match tokio::time::timeout(Duration::from_secs(5), engine.list_containers(&filter)).await {
            Ok(Ok(mut cs)) => {
                cs.sort_by(|a, b| a.name.cmp(&b.name));
                if cs.is_empty() {
                    ui.status(format!("state left: no containers of project {project}"));
                } else {
                    let states: Vec<String> = cs
                        .iter()
                        .map(|c| {
                            let svc = c
                                .labels
                                .get(crate::labels::SERVICE)
                                .cloned()
                                .unwrap_or_else(|| c.name.clone());
                            format!("{svc} {}", describe(c.state))
                        })
                        .collect();
                    ui.status(format!(
                        "state left: {} (volumes are kept; a stopped database is safe)",
                        states.join(", ")
                    ));
                }
            }
            _ => ui.status("state left: the engine could not be asked (run `nodus status`)"),
        }
    }
    for r in &removed {
        ui.status(format!("removed the unfinished {r}"));
    }
    if !critical.is_empty() {
        ui.warn(format!(
            "abandoned halfway: {}; its data may be incomplete{}",
            critical.join(", "),
            if safety.is_empty() {
                String::new()
            } else {
                format!(" — the safety copy taken before it: {}", safety.join(", "))
            }
        ));
    }
    let snapshot_first =
        removed.iter().any(|r| r.starts_with("snapshot")) && !resume.contains(" snapshot ");
    if snapshot_first {
        let base = resume
            .split_once(" down")
            .or_else(|| resume.split_once(" stop"))
            .or_else(|| resume.split_once(" restart"))
            .map(|(b, _)| b.to_string());
        match base {
            Some(b) => ui.hint(format!(
                "to complete it: `{b} snapshot create` (the snapshot that was cut short; it works on the stopped service), then `{resume}`"
            )),
            None => ui.hint(format!("to complete it, run: {resume}")),
        }
    } else {
        ui.hint(format!("to complete it, run: {resume}"));
    }
    sig.exit_code()
}

fn describe(s: RunState) -> &'static str {
    match s {
        RunState::Running => "running",
        RunState::Created => "created (not started)",
        RunState::Exited | RunState::Dead => "stopped",
        RunState::Paused => "paused",
        RunState::Restarting => "restarting",
        RunState::Removing => "being removed",
        RunState::Unknown => "in an unknown state",
    }
}

/// The command line as the user typed it, with `nodus` for the program, shell-quoted.
pub fn command_line() -> String {
    let mut args = std::env::args();
    args.next();
    let mut s = String::from("nodus");
    for a in args {
        s.push(' ');
        s.push_str(&crate::commands::shell_word(&a));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
    }
}
