//! Terminal output: stdout for data, stderr for status; `--json`, `-q`, `-v`, NO_COLOR; spinners
//! and progress bars only on a TTY; prompts only on a TTY.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// No TTY to ask on: the user must re-run with the given command.
    #[error("{question} — refusing without a terminal to confirm on; re-run as: {command}")]
    NoTty { question: String, command: String },
    #[error("cancelled")]
    Declined,
    #[error("prompt failed: {0}")]
    Io(String),
}

#[derive(Debug, Clone)]
pub struct Ui {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    pub color: bool,
    /// stderr is a terminal (spinners, progress bars).
    pub stderr_tty: bool,
    /// stdin and stderr are terminals (prompts).
    pub interactive: bool,
    /// `-y/--yes`.
    pub assume_yes: bool,
    /// A JSON document went to stdout (a command prints exactly one; shared by clones).
    json_printed: Arc<AtomicBool>,
}

impl Ui {
    pub fn new(json: bool, quiet: bool, verbose: u8, assume_yes: bool) -> Ui {
        let stderr_tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Ui {
            json,
            quiet,
            verbose,
            color: stderr_tty && !no_color,
            stderr_tty,
            interactive: stderr_tty && std::io::stdin().is_terminal(),
            assume_yes,
            json_printed: Arc::default(),
        }
    }

    /// A Ui for tests: no TTY, no colour.
    pub fn plain() -> Ui {
        Ui {
            json: false,
            quiet: true,
            verbose: 0,
            color: false,
            stderr_tty: false,
            interactive: false,
            assume_yes: false,
            json_printed: Arc::default(),
        }
    }

    /// The same, answering yes to confirmations (for a command run in-process after the user
    /// already agreed to it).
    pub fn assuming_yes(&self) -> Ui {
        Ui {
            assume_yes: true,
            ..self.clone()
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// Progress/status line on stderr (hidden with -q).
    pub fn status(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }
    /// Extra detail, shown with -v.
    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{}", self.paint("2", msg.as_ref()));
        }
    }
    pub fn success(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{} {}", self.paint("32", "✔"), msg.as_ref());
        }
    }
    /// Warnings are shown even with -q.
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("{} {}", self.paint("33;1", "warning:"), msg.as_ref());
    }
    pub fn error(&self, msg: impl AsRef<str>) {
        eprintln!("{} {}", self.paint("31;1", "error:"), msg.as_ref());
    }
    pub fn hint(&self, msg: impl AsRef<str>) {
        eprintln!("{} {}", self.paint("36", "hint:"), msg.as_ref());
    }
    /// A line of data on stdout.
    pub fn data(&self, line: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", line.as_ref());
    }
    /// A JSON document on stdout. A command prints one document: a second one is a bug.
    pub fn json_out<T: Serialize + ?Sized>(&self, value: &T) {
        let s = serde_json::to_string_pretty(value)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
        let before = self.json_printed.swap(true, Ordering::SeqCst);
        debug_assert!(!before, "a second JSON document on stdout");
        self.data(s);
    }
    /// Whether a JSON document went to stdout already.
    pub fn json_printed(&self) -> bool {
        self.json_printed.load(Ordering::SeqCst)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31;1", s)
    }
    /// One compact JSON object as a line on stdout, for commands that stream NDJSON (`watch
    /// --json`); counts as the command's JSON output.
    pub fn json_line<T: Serialize + ?Sized>(&self, value: &T) {
        let s = serde_json::to_string(value)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
        self.json_printed.store(true, Ordering::SeqCst);
        self.data(s);
    }

    /// A spinner on stderr; hidden when stderr is not a TTY, or with -q / --json.
    pub fn spinner(&self, msg: impl Into<String>) -> ProgressBar {
        let pb = if self.stderr_tty && !self.quiet && !self.json {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
        );
        pb.set_message(msg.into());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    /// A byte progress bar (bytes, throughput, ETA); hidden when not a TTY. `total` None = unknown.
    pub fn bytes_progress(&self, msg: impl Into<String>, total: Option<u64>) -> ProgressBar {
        let pb = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        if !(self.stderr_tty && !self.quiet && !self.json) {
            pb.set_draw_target(ProgressDrawTarget::hidden());
        }
        let tpl = if total.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}{eta_known}"
        } else {
            "{spinner} {msg} {bytes} {binary_bytes_per_sec} ({elapsed})"
        };
        pb.set_style(
            ProgressStyle::with_template(tpl)
                .expect("static template")
                .with_key(
                    "eta_known",
                    |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&eta_text(st.pos(), st.len(), st.elapsed()));
                    },
                )
                .progress_chars("=> "),
        );
        pb.set_message(msg.into());
        pb
    }

    /// Asks for confirmation. With `--yes` returns true without asking; without a TTY fails with
    /// the exact command to run instead (never prompts).
    pub fn confirm(&self, question: &str, command_with_yes: &str) -> Result<(), PromptError> {
        if self.assume_yes {
            return Ok(());
        }
        if !self.interactive {
            return Err(PromptError::NoTty {
                question: question.to_string(),
                command: command_with_yes.to_string(),
            });
        }
        let ok = dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact()
            .map_err(|e| PromptError::Io(e.to_string()))?;
        if ok {
            Ok(())
        } else {
            Err(PromptError::Declined)
        }
    }
}

/// ` ETA 12s` once there is a rate to base it on (at least a second and some bytes in), else
/// nothing: a first estimate from a few bytes said "10 minutes" for a 20 s snapshot.
pub fn eta_text(pos: u64, len: Option<u64>, elapsed: Duration) -> String {
    let Some(len) = len else {
        return String::new();
    };
    if pos == 0 || elapsed < Duration::from_secs(1) || pos >= len {
        return String::new();
    }
    let secs = (len - pos) as f64 * elapsed.as_secs_f64() / pos as f64;
    let secs = secs.ceil() as u64;
    if secs >= 3600 {
        format!(" ETA {}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!(" ETA {}m{:02}s", secs / 60, secs % 60)
    } else {
        format!(" ETA {secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_eta_before_there_is_a_rate() {
        let s = Duration::from_secs;
        assert_eq!(eta_text(0, Some(100), s(5)), "");
        assert_eq!(eta_text(10, Some(100), Duration::from_millis(200)), "");
        assert_eq!(eta_text(10, None, s(5)), "");
        assert_eq!(eta_text(50, Some(100), s(10)), " ETA 10s");
        assert_eq!(eta_text(10, Some(100), s(10)), " ETA 1m30s");
        assert_eq!(eta_text(100, Some(100), s(10)), "");
    }
}
