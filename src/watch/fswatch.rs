//! File system events: notify (inotify, or polling with `--poll`) through notify-debouncer-full,
//! which stitches renames and collapses an editor's write dance into one event per path; the
//! quiet period of `--debounce` is applied afterwards by [`super::batch::Batcher`].

use std::path::PathBuf;
use std::time::Duration;

use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    new_debouncer_opt, DebounceEventResult, Debouncer, NoCache, RecommendedCache,
};
use tokio::sync::mpsc::UnboundedSender;

/// How long notify-debouncer-full holds events to stitch them (small: the user's quiet period
/// comes after it).
const STITCH: Duration = Duration::from_millis(20);
const TICK: Duration = Duration::from_millis(5);
/// How late an event reaches the batcher after it happened (at least): the quiet period is
/// shortened by it, so `--debounce` counts from the last change itself.
pub const DELAY: Duration = STITCH;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "the inotify watch limit is reached while watching {path} (fs.inotify.max_user_watches)"
    )]
    TooManyWatches { path: String },
    #[error("too many inotify instances are open (fs.inotify.max_user_instances)")]
    TooManyInstances,
    #[error("cannot watch {path}: {reason}")]
    Other { path: String, reason: String },
}

impl WatchError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            WatchError::TooManyWatches { .. } => Some(
                "raise the limit with `sudo sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/), or run `nodus watch --poll`".into(),
            ),
            WatchError::TooManyInstances => Some(
                "raise the limit with `sudo sysctl fs.inotify.max_user_instances=1024` (persist it in /etc/sysctl.d/), or run `nodus watch --poll`".into(),
            ),
            WatchError::Other { .. } => None,
        }
    }
}

fn classify(e: notify::Error, path: &str) -> WatchError {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => WatchError::TooManyWatches { path: path.into() },
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc_enospc()) => {
            WatchError::TooManyWatches { path: path.into() }
        }
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc_emfile()) => {
            WatchError::TooManyInstances
        }
        _ => WatchError::Other {
            path: path.into(),
            reason: e.to_string(),
        },
    }
}

const fn libc_enospc() -> i32 {
    28
}
const fn libc_emfile() -> i32 {
    24
}

enum Inner {
    Native(Debouncer<RecommendedWatcher, RecommendedCache>),
    Poll(Debouncer<PollWatcher, NoCache>),
}

/// A running file watcher; stops when dropped.
pub struct FsWatcher {
    inner: Inner,
    watched: Vec<(PathBuf, bool)>,
}

impl FsWatcher {
    /// Changed paths go to `paths`, watcher errors (as text) to `errors`. `poll`: poll every
    /// interval instead of using inotify.
    pub fn new(
        poll: Option<Duration>,
        paths: UnboundedSender<Vec<PathBuf>>,
        errors: UnboundedSender<WatchError>,
    ) -> Result<FsWatcher, WatchError> {
        let handler = move |r: DebounceEventResult| match r {
            Ok(events) => {
                let mut out = Vec::new();
                for e in events {
                    if matches!(e.event.kind, EventKind::Access(_)) {
                        continue;
                    }
                    for p in &e.event.paths {
                        if !out.contains(p) {
                            out.push(p.clone());
                        }
                    }
                }
                if !out.is_empty() {
                    let _ = paths.send(out);
                }
            }
            Err(errs) => {
                for e in errs {
                    let path = e
                        .paths
                        .first()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    let _ = errors.send(classify(e, &path));
                }
            }
        };
        let inner = match poll {
            None => Inner::Native(
                new_debouncer_opt::<_, RecommendedWatcher, RecommendedCache>(
                    STITCH,
                    Some(TICK),
                    handler,
                    RecommendedCache::new(),
                    notify::Config::default(),
                )
                .map_err(|e| classify(e, "."))?,
            ),
            Some(interval) => Inner::Poll(
                new_debouncer_opt::<_, PollWatcher, NoCache>(
                    STITCH,
                    Some(TICK),
                    handler,
                    NoCache,
                    notify::Config::default().with_poll_interval(interval),
                )
                .map_err(|e| classify(e, "."))?,
            ),
        };
        Ok(FsWatcher {
            inner,
            watched: Vec::new(),
        })
    }

    /// Watches exactly `roots` (path, recursive), adding and removing watches as needed.
    pub fn set_roots(&mut self, roots: &[(PathBuf, bool)]) -> Result<(), WatchError> {
        let old = std::mem::take(&mut self.watched);
        for r in &old {
            if !roots.contains(r) {
                let _ = match &mut self.inner {
                    Inner::Native(d) => d.unwatch(&r.0),
                    Inner::Poll(d) => d.unwatch(&r.0),
                };
            }
        }
        for r in roots {
            if old.contains(r) {
                self.watched.push(r.clone());
                continue;
            }
            let mode = if r.1 {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            let res = match &mut self.inner {
                Inner::Native(d) => d.watch(&r.0, mode),
                Inner::Poll(d) => d.watch(&r.0, mode),
            };
            res.map_err(|e| classify(e, &r.0.display().to_string()))?;
            self.watched.push(r.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inotify_limits_name_the_sysctl_and_suggest_poll() {
        let e = classify(notify::Error::new(notify::ErrorKind::MaxFilesWatch), "/s");
        assert!(matches!(e, WatchError::TooManyWatches { .. }));
        let h = e.hint().unwrap();
        assert!(
            h.contains("fs.inotify.max_user_watches") && h.contains("--poll"),
            "{h}"
        );
        let e = classify(
            notify::Error::io(std::io::Error::from_raw_os_error(24)),
            "/s",
        );
        assert!(matches!(e, WatchError::TooManyInstances));
        let h = e.hint().unwrap();
        assert!(
            h.contains("fs.inotify.max_user_instances") && h.contains("--poll"),
            "{h}"
        );
        let e = classify(
            notify::Error::io(std::io::Error::from_raw_os_error(28)),
            "/s",
        );
        assert!(matches!(e, WatchError::TooManyWatches { .. }));
    }
}
