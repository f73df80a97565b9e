//! The record of a lifecycle command in progress (`<state dir>/unfinished.json`), so that the next
//! run can say what an earlier one left half-done.
//!
//! A guarded command (`up`, `down`, `stop`, `start`, `restart`, snapshot create/restore) writes
//! the record once it holds the stack lock, before it touches anything. When it ends:
//! - completed (also with a detected loss: the transition itself finished) → the record is removed;
//! - failed (engine unreachable, a timeout, ...) or interrupted (SIGINT/SIGTERM) → the record is
//!   kept, with how it ended, the step it was in and the error;
//! - killed (SIGKILL, power loss) → the record stays as written at the start.
//!
//! The next guarded command finds the record (it holds the lock, so its writer is gone), says what
//! was left unfinished, does its own work — which converges the stack (`up` creates/starts what
//! is missing, `down` removes what is left) — and, once it completes, says the left-overs are
//! settled and removes the record. `status` shows a record without changing it.
//!
//! Invariant: the record never decides anything; it only informs. What is actually left is always
//! read from the engine.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::{atomic_write, StateDir, StateError};

/// The record's file name in a stack's state dir.
pub const FILE: &str = "unfinished.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The command line as typed (`nodus up --timeout 300s`).
    pub command: String,
    /// The transition: `up`, `down`, `restore`, ...
    pub transition: String,
    pub pid: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// How it ended, when it could say so (absent: killed or the machine stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ended {
    pub at: String,
    /// `failed` or `interrupted by SIGINT`/`SIGTERM`.
    pub how: String,
    /// The step it was in (`starting cache`, `the snapshot of db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The error's first line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    /// One sentence for the user: what did not finish, when, how it ended.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "`{}` (started {}, pid {}) did not finish",
            self.command, self.started_at, self.pid
        );
        match &self.ended {
            Some(e) => {
                s.push_str(&format!(": {}", e.how));
                if let Some(step) = &e.step {
                    s.push_str(&format!(" during {step}"));
                }
                if let Some(err) = &e.error {
                    s.push_str(&format!(" ({err})"));
                }
            }
            None => s.push_str(": it ended without a word (killed, or the machine stopped)"),
        }
        s
    }
}

impl Record {
    /// The process that wrote the record still exists (the command may be running now).
    pub fn writer_alive(&self) -> bool {
        if self.ended.is_some() || self.pid == 0 || self.pid == std::process::id() {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists; no signal is sent.
        let r = unsafe { libc::kill(self.pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// How the command ended, for [`conclude`].
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The transition finished (with or without a detected loss).
    Completed,
    Failed {
        error: String,
    },
    Interrupted {
        signal: String,
    },
}

impl StateDir {
    pub fn journal_path(&self) -> PathBuf {
        self.root().join(FILE)
    }
}

/// Reads the record at `path`: None when there is none. A torn or unreadable record is reported
/// as one of an unknown command (it still means something did not finish).
pub fn read(path: &Path) -> Result<Option<Record>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            Record {
                command: "an earlier nodus command".into(),
                transition: "?".into(),
                pid: 0,
                started_at: "?".into(),
                ended: None,
            }
        }))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io(path, e)),
    }
}

fn write(path: &Path, r: &Record) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(r).expect("a record serializes");
    atomic_write(path, &bytes, 0o600).map_err(|e| StateError::io(path, e))
}

/// The command in progress in this process.
struct Active {
    path: PathBuf,
    record: Record,
    /// What an earlier run left, found by [`begin`].
    previous: Option<Record>,
}

fn active() -> std::sync::MutexGuard<'static, Option<Active>> {
    static A: OnceLock<Mutex<Option<Active>>> = OnceLock::new();
    A.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Starts the record of `transition` (call with the stack lock held); returns what an earlier
/// run left unfinished, if anything. A second call in the same process (a restore run inside
/// `up`) keeps the first record.
pub fn begin(
    state: &StateDir,
    transition: &str,
    command: String,
) -> Result<Option<Record>, StateError> {
    let path = state.journal_path();
    let mut a = active();
    if a.as_ref().is_some_and(|a| a.path == path) {
        return Ok(None);
    }
    let previous = read(&path)?;
    let record = Record {
        command,
        transition: transition.to_string(),
        pid: std::process::id(),
        started_at: now(),
        ended: None,
    };
    write(&path, &record)?;
    *a = Some(Active {
        path,
        record,
        previous: previous.clone(),
    });
    Ok(previous)
}

/// Ends the record of this process' command (no-op when none was begun). Returns the earlier
/// run's record when this command completed and so settled what it left.
pub fn conclude(outcome: Outcome, step: Option<String>) -> Option<Record> {
    let mut a = active();
    let act = a.take()?;
    // The stack lock is released before this runs: another command may have begun its own
    // record meanwhile, which is not ours to touch.
    if read(&act.path)
        .ok()
        .flatten()
        .is_some_and(|r| r.pid != act.record.pid || r.started_at != act.record.started_at)
    {
        return None;
    }
    match outcome {
        Outcome::Completed => {
            // A record that cannot be removed is reported again next time: harmless.
            let _ = std::fs::remove_file(&act.path);
            act.previous
        }
        // Failed or interrupted before its first step (a missing image, a usage error, the
        // census before a stop): nothing was changed, so nothing is left unfinished.
        // An earlier run's record stays: what it left is still unsettled.
        Outcome::Failed { .. } | Outcome::Interrupted { .. } if step.is_none() => {
            match &act.previous {
                Some(prev) => {
                    let _ = write(&act.path, prev);
                }
                None => {
                    let _ = std::fs::remove_file(&act.path);
                }
            }
            None
        }
        Outcome::Failed { error } => {
            let mut r = act.record;
            r.ended = Some(Ended {
                at: now(),
                how: "failed".into(),
                step,
                error: error.lines().next().map(str::to_string),
            });
            let _ = write(&act.path, &r);
            None
        }
        Outcome::Interrupted { signal } => {
            let mut r = act.record;
            r.ended = Some(Ended {
                at: now(),
                how: format!("interrupted by {signal}"),
                step,
                error: None,
            });
            let _ = write(&act.path, &r);
            None
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the active record is process-global.
    #[test]
    fn a_failed_run_is_reported_by_the_next_and_settled_when_that_completes() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path().join("s")).unwrap();
        let path = state.journal_path();

        assert_eq!(
            begin(&state, "up", "nodus up --timeout 300s".into()).unwrap(),
            None
        );
        let written = read(&path).unwrap().unwrap();
        assert_eq!(written.transition, "up");
        assert_eq!(written.ended, None);
        // nested begin (restore inside up) keeps the first record
        assert_eq!(begin(&state, "restore", "x".into()).unwrap(), None);
        assert_eq!(
            read(&path).unwrap().unwrap().command,
            "nodus up --timeout 300s"
        );
        assert_eq!(
            conclude(
                Outcome::Failed {
                    error: "the engine at unix:///x is unreachable\nmore".into()
                },
                Some("starting cache".into())
            ),
            None
        );
        let left = read(&path).unwrap().unwrap();
        let e = left.ended.clone().unwrap();
        assert_eq!(e.how, "failed");
        assert_eq!(e.step.as_deref(), Some("starting cache"));
        assert_eq!(
            e.error.as_deref(),
            Some("the engine at unix:///x is unreachable")
        );
        let text = left.describe();
        assert!(text.contains("`nodus up --timeout 300s`"), "{text}");
        assert!(text.contains("failed during starting cache"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // the next run finds it; interrupted, it keeps the old one's place
        let prev = begin(&state, "up", "nodus up".into()).unwrap().unwrap();
        assert_eq!(prev, left);
        assert_eq!(
            conclude(
                Outcome::Interrupted {
                    signal: "SIGINT".into()
                },
                Some("stopping db".into())
            ),
            None
        );
        let left = read(&path).unwrap().unwrap();
        assert_eq!(left.ended.as_ref().unwrap().how, "interrupted by SIGINT");
        assert!(left.describe().contains("interrupted by SIGINT"));

        // a completed run settles it and removes the record
        let prev = begin(&state, "down", "nodus down".into()).unwrap().unwrap();
        assert_eq!(prev.command, "nodus up");
        assert_eq!(conclude(Outcome::Completed, None), Some(prev));
        assert_eq!(read(&path).unwrap(), None);
        // nothing begun: nothing to conclude
        assert_eq!(conclude(Outcome::Completed, None), None);

        // failed before its first step (nothing changed): no record is left
        assert_eq!(begin(&state, "up", "nodus up".into()).unwrap(), None);
        assert_eq!(
            conclude(
                Outcome::Failed {
                    error: "image x is not present locally".into()
                },
                None
            ),
            None
        );
        assert_eq!(read(&path).unwrap(), None);
        // ... but an earlier run's record is kept when such a run fails
        assert_eq!(begin(&state, "up", "nodus up -d".into()).unwrap(), None);
        conclude(
            Outcome::Failed {
                error: "engine gone".into(),
            },
            Some("starting db".into()),
        );
        let earlier = read(&path).unwrap().unwrap();
        assert_eq!(
            begin(&state, "up", "nodus up".into()).unwrap(),
            Some(earlier.clone())
        );
        conclude(
            Outcome::Failed {
                error: "image x is not present locally".into(),
            },
            None,
        );
        assert_eq!(read(&path).unwrap(), Some(earlier));

        // another command's record (begun after our lock was released) is left alone
        std::fs::remove_file(&path).unwrap();
        assert_eq!(begin(&state, "up", "nodus up".into()).unwrap(), None);
        let other = Record {
            command: "nodus down".into(),
            transition: "down".into(),
            pid: std::process::id() + 1,
            started_at: "2026-01-01T00:00:00Z".into(),
            ended: None,
        };
        write(&path, &other).unwrap();
        assert_eq!(conclude(Outcome::Completed, None), None);
        assert_eq!(read(&path).unwrap(), Some(other));

        // killed without a word; a torn record still says something did not finish
        std::fs::write(&path, b"{\"command\": \"nodus do").unwrap();
        let torn = read(&path).unwrap().unwrap();
        assert!(
            torn.describe().contains("without a word"),
            "{}",
            torn.describe()
        );
    }
}
