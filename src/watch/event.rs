//! Watch events: one line per event on stderr, and with `--json` one JSON object per event on
//! stdout (NDJSON).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::output::Ui;

/// One event. The JSON form is documented in the README ("nodus watch → Events").
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// RFC 3339, milliseconds.
    pub time: String,
    /// `watching`, `change`, `reload`, `invalid`, `loss`, `census`, `stack-down`, `stack-up`,
    /// `resumed`, `error`, `exit`.
    pub event: &'static str,
    /// Changed paths, relative to the stack directory when below it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// `restart`, `recreate`, `sync`, `sync+restart`, `sync+exec`, `up`, `down`, `census`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `ok`, `failed`, `loss`, `skipped`, `invalid`, `info`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Event-specific data: the lifecycle report and guard verdict of a transition, the lost
    /// tables of a live loss, row counts of a census, files synced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl Event {
    pub fn new(event: &'static str, result: &'static str) -> Event {
        Event {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event,
            paths: Vec::new(),
            services: Vec::new(),
            action: None,
            result,
            duration_ms: None,
            message: None,
            detail: None,
        }
    }
    pub fn services(mut self, s: impl IntoIterator<Item = String>) -> Event {
        self.services = s.into_iter().collect();
        self
    }
    pub fn action(mut self, a: impl Into<String>) -> Event {
        self.action = Some(a.into());
        self
    }
    pub fn took(mut self, d: Duration) -> Event {
        self.duration_ms = Some(d.as_millis() as u64);
        self
    }
    pub fn message(mut self, m: impl Into<String>) -> Event {
        self.message = Some(m.into());
        self
    }
    pub fn detail(mut self, d: serde_json::Value) -> Event {
        self.detail = Some(d);
        self
    }

    /// The stderr line: time, what changed, services, action, result, time taken.
    pub fn line(&self) -> String {
        let time = chrono::DateTime::parse_from_rfc3339(&self.time)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        let mut s = format!("{time} ");
        match self.paths.len() {
            0 => {}
            1 => s.push_str(&format!("{} ", self.paths[0])),
            n => s.push_str(&format!("{} and {} more ", self.paths[0], n - 1)),
        }
        if !self.services.is_empty() {
            s.push_str(&format!("→ {} ", self.services.join(", ")));
        }
        match &self.action {
            Some(a) => s.push_str(&format!("{a}: {}", self.result)),
            None => s.push_str(&format!("{}: {}", self.event, self.result)),
        }
        if let Some(ms) = self.duration_ms {
            s.push_str(&format!(" ({:.1}s)", ms as f64 / 1000.0));
        }
        if let Some(m) = &self.message {
            s.push_str(&format!(" — {m}"));
        }
        s
    }
}

/// Where events go.
#[derive(Clone)]
pub struct Out {
    pub ui: Ui,
    pub base: PathBuf,
}

impl Out {
    pub fn rel(&self, p: &Path) -> String {
        let r = p
            .strip_prefix(&self.base)
            .unwrap_or(p)
            .display()
            .to_string();
        if r.is_empty() {
            ".".into()
        } else {
            r
        }
    }

    pub fn paths<'a>(&self, e: Event, paths: impl IntoIterator<Item = &'a PathBuf>) -> Event {
        Event {
            paths: paths.into_iter().map(|p| self.rel(p)).collect(),
            ..e
        }
    }

    /// Prints the event: a line on stderr (alerts in red, and even with -q), NDJSON on stdout
    /// with --json.
    pub fn emit(&self, e: &Event) {
        let loud = matches!(e.result, "loss" | "failed" | "invalid");
        if loud {
            eprintln!("{}", self.ui.red(&e.line()));
        } else if e.event != "census" || self.ui.verbose > 0 {
            self.ui.status(e.line());
        }
        if self.ui.json {
            self.ui.json_line(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_names_first_path_and_count_services_action_result_and_time() {
        let mut e = Event::new("change", "ok")
            .services(["api".to_string()])
            .action("restart")
            .took(Duration::from_millis(1234));
        e.paths = vec!["src/a.py".into(), "src/b.py".into(), "src/c.py".into()];
        let l = e.line();
        assert!(
            l.contains("src/a.py and 2 more → api restart: ok (1.2s)"),
            "{l}"
        );
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["event"], "change");
        assert_eq!(j["duration_ms"], 1234);
        assert!(j.get("message").is_none());
    }
}
