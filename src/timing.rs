//! Where a command's time goes: wall time per phase of a transition (stop, snapshot, remove,
//! create, start, ready, census, settle), for `-v` and `--json` and `scripts/bench-restart.sh`.
//!
//! Phases are timed at the outermost place they run (a parallel stop of three services counts
//! once, as the wall time of the whole stop); a phase that runs several times (a census per
//! service as each becomes ready) adds up. Process-wide: one command runs one transition.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static PHASES: Mutex<Vec<(&'static str, Duration)>> = Mutex::new(Vec::new());

/// Adds `d` to `phase`.
pub fn add(phase: &'static str, d: Duration) {
    let mut p = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    match p.iter_mut().find(|(n, _)| *n == phase) {
        Some((_, t)) => *t += d,
        None => p.push((phase, d)),
    }
}

/// Times `phase` until dropped.
pub struct Span {
    phase: &'static str,
    start: Instant,
}

pub fn span(phase: &'static str) -> Span {
    Span {
        phase,
        start: Instant::now(),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        add(self.phase, self.start.elapsed());
    }
}

/// Seconds per phase so far (milliseconds precision).
pub fn snapshot() -> BTreeMap<String, f64> {
    PHASES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(n, d)| (n.to_string(), (d.as_secs_f64() * 1000.0).round() / 1000.0))
        .collect()
}

/// `stop 0.31s, snapshot 0.12s, ...` in the order the phases first ran.
pub fn summary() -> String {
    PHASES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}
