//! `logs`: the output of several containers, interleaved line by line as it arrives, each line
//! prefixed with its container's service (coloured like compose); following until Ctrl-C.

use std::collections::HashMap;
use std::io::Write;

use futures_util::stream::{self, StreamExt};

use super::ServiceContainer;
use futures_util::stream::BoxStream;

use crate::engine::{Engine, EngineError, LogOptions, OutputChunk, OutputKind, OutputStream};

type LogItem = Result<OutputChunk, EngineError>;

/// compose's prefix colours, in order.
const COLOURS: &[&str] = &["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

/// How lines are shown.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Prefix lines with the container's name (`service-1  | `).
    pub prefix: bool,
    /// Colour the prefix.
    pub colour: bool,
}

/// The prefix shown for a container: compose's `<service>-<number>`, from its name when it has
/// the project prefix, else the service.
pub fn short_name(project: &str, c: &ServiceContainer) -> String {
    c.container
        .name
        .strip_prefix(&format!("{project}-"))
        .or_else(|| c.container.name.strip_prefix(&format!("{project}_")))
        .map(str::to_string)
        .unwrap_or_else(|| c.service.clone())
}

/// Splits output into lines per (container, stream), keeping a partial last line until its end
/// arrives.
#[derive(Default)]
pub struct LineSplitter {
    partial: HashMap<(usize, bool), Vec<u8>>,
}

impl LineSplitter {
    /// Complete lines (without their newline) of `bytes` for source `key`.
    pub fn push(&mut self, key: (usize, bool), bytes: &[u8]) -> Vec<String> {
        let buf = self.partial.entry(key).or_default();
        buf.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            lines.push(line.trim_end_matches('\r').to_string());
        }
        lines
    }
    /// What is left at the end (lines without a final newline).
    pub fn finish(&mut self) -> Vec<((usize, bool), String)> {
        let mut out: Vec<_> = self
            .partial
            .drain()
            .filter(|(_, b)| !b.is_empty())
            .map(|(k, b)| (k, String::from_utf8_lossy(&b).into_owned()))
            .collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }
}

/// Formats one line with its container prefix.
pub fn format_line(view: View, names: &[String], width: usize, idx: usize, line: &str) -> String {
    if !view.prefix {
        return line.to_string();
    }
    let name = &names[idx];
    let prefix = format!("{name:<width$} | ");
    if view.colour {
        format!(
            "\x1b[{}m{prefix}\x1b[0m{line}",
            COLOURS[idx % COLOURS.len()]
        )
    } else {
        format!("{prefix}{line}")
    }
}

/// Which containers `logs -f` follows beyond those it started with: containers of `services`
/// (all when empty) that appear or start again later — a service recreated by `up` or `watch`,
/// a container restarted — are picked up, as compose does.
pub struct Follow {
    pub services: Vec<String>,
    /// How often the engine is asked for new or restarted containers.
    pub every: std::time::Duration,
}

/// One log source: its container and whether its stream is open.
struct Source {
    id: String,
    /// Unix seconds when its stream ended (the container stopped); None while open.
    ended_at: Option<i64>,
}

/// Streams the logs of `containers` to stdout until they end (or, following, until Ctrl-C).
/// With `follow`, containers that appear or start again are added as they do.
pub async fn stream(
    engine: &dyn Engine,
    project: &str,
    containers: &[ServiceContainer],
    opts: &LogOptions,
    view: View,
    follow: Option<Follow>,
) -> anyhow::Result<()> {
    let mut names: Vec<String> = containers.iter().map(|c| short_name(project, c)).collect();
    let mut width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut sources: Vec<Source> = Vec::new();
    let mut merged = stream::SelectAll::new();
    for (idx, c) in containers.iter().enumerate() {
        let s = engine.log_stream(&c.container.id, opts).await?;
        merged.push(tagged(idx, s));
        sources.push(Source {
            id: c.container.id.clone(),
            ended_at: None,
        });
    }
    let mut splitter = LineSplitter::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = follow
        .as_ref()
        .map(|f| tokio::time::interval_at(tokio::time::Instant::now() + f.every, f.every));
    let mut stdout = std::io::stdout();
    let write = |stdout: &mut std::io::Stdout, s: String| -> std::io::Result<()> {
        let mut o = stdout.lock();
        writeln!(o, "{s}")?;
        o.flush()
    };
    loop {
        if follow.is_none() && merged.is_empty() {
            break;
        }
        let next = tokio::select! {
            next = merged.next(), if !merged.is_empty() => next,
            _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {
                let f = follow.as_ref().expect("follow when ticking");
                let found = super::containers(engine, project, &f.services, false).await?;
                for c in found.iter().filter(|c| c.container.state == crate::engine::RunState::Running) {
                    let known = sources.iter().position(|s| s.id == c.container.id);
                    let since = match known {
                        // still streaming
                        Some(i) if sources[i].ended_at.is_none() => continue,
                        // restarted: only what it wrote since its stream ended
                        Some(i) => sources[i].ended_at,
                        // new: all of it
                        None => None,
                    };
                    let o = LogOptions { follow: true, tail: None, since, until: opts.until, timestamps: opts.timestamps };
                    let Ok(s) = engine.log_stream(&c.container.id, &o).await else { continue };
                    let idx = match known {
                        Some(i) => {
                            sources[i].ended_at = None;
                            i
                        }
                        None => {
                            names.push(short_name(project, c));
                            width = width.max(names.last().map(|n| n.chars().count()).unwrap_or(0));
                            sources.push(Source { id: c.container.id.clone(), ended_at: None });
                            sources.len() - 1
                        }
                    };
                    merged.push(tagged(idx, s));
                }
                continue;
            }
            _ = &mut ctrl_c => break,
        };
        let Some((idx, item)) = next else {
            if follow.is_some() {
                continue;
            }
            break;
        };
        let Some(item) = item else {
            sources[idx].ended_at = Some(chrono::Utc::now().timestamp());
            continue;
        };
        let chunk = item?;
        let key = (idx, chunk.kind == OutputKind::Stderr);
        for line in splitter.push(key, &chunk.bytes) {
            if let Err(e) = write(&mut stdout, format_line(view, &names, width, idx, &line)) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
    }
    for ((idx, _), line) in splitter.finish() {
        let _ = write(&mut stdout, format_line(view, &names, width, idx, &line));
    }
    Ok(())
}

/// A container's log stream tagged with its index, ending with a `None` item when it closes.
fn tagged(idx: usize, s: OutputStream) -> BoxStream<'static, (usize, Option<LogItem>)> {
    s.map(Some)
        .chain(stream::once(async { None }))
        .map(move |item| (idx, item))
        .boxed()
}

/// A `--since`/`--until` value as unix seconds: a duration ago (`10m`), an RFC 3339 timestamp,
/// a date (`2024-01-02`), or unix seconds.
pub fn parse_time(value: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64, String> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp());
    }
    match crate::stack::duration::parse_duration(v) {
        Ok(d) => Ok(now.timestamp() - d.as_secs() as i64),
        Err(_) => Err(format!(
            "`{value}` is neither a duration (10m, 2h), an RFC 3339 timestamp, a date nor unix seconds"
        )),
    }
}

/// `--tail`: a number of lines or `all`.
pub fn parse_tail(value: &str) -> Result<Option<u64>, String> {
    match value.trim() {
        "all" | "" => Ok(None),
        v => v
            .parse::<i64>()
            .map(|n| if n < 0 { None } else { Some(n as u64) })
            .map_err(|_| format!("`{value}` is not a number of lines or `all`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_per_source_and_partials_kept() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push((0, false), b"a\nb"), vec!["a"]);
        assert_eq!(s.push((1, false), b"x\r\n"), vec!["x"]);
        assert_eq!(s.push((0, false), b"c\nd"), vec!["bc"]);
        assert_eq!(s.finish(), vec![((0, false), "d".to_string())]);
    }

    #[test]
    fn prefixes_are_padded_and_coloured() {
        let names = vec!["db-1".to_string(), "cache-1".to_string()];
        let plain = View {
            prefix: true,
            colour: false,
        };
        assert_eq!(format_line(plain, &names, 7, 0, "hi"), "db-1    | hi");
        let colour = View {
            prefix: true,
            colour: true,
        };
        assert_eq!(
            format_line(colour, &names, 7, 1, "hi"),
            "\x1b[33mcache-1 | \x1b[0mhi"
        );
        let bare = View {
            prefix: false,
            colour: true,
        };
        assert_eq!(format_line(bare, &names, 7, 1, "hi"), "hi");
    }

    #[test]
    fn times_and_tails_parse() {
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(parse_time("10m", now), Ok(1_700_000_000 - 600));
        assert_eq!(parse_time("1699999999", now), Ok(1_699_999_999));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", now), Ok(1_700_000_000));
        assert!(parse_time("yesterday", now).is_err());
        assert_eq!(parse_tail("all"), Ok(None));
        assert_eq!(parse_tail("5"), Ok(Some(5)));
        assert!(parse_tail("five").is_err());
    }
}
