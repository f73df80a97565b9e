//! Debounce: a quiet period batches a burst of changes into one batch, and a batch becomes a
//! [`Plan`] — one set of actions per service.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::rules::{Action, ExecHook, Match, Paths, RuleSet};

/// Collects changed paths until nothing changed for the quiet period (or, under a change that
/// never stops, until `max_wait` after the first one).
pub struct Batcher {
    quiet: Duration,
    max_wait: Duration,
    pending: BTreeSet<PathBuf>,
    first: Option<Instant>,
    deadline: Option<Instant>,
}

impl Batcher {
    pub fn new(quiet: Duration) -> Batcher {
        Batcher {
            quiet,
            max_wait: (quiet * 10).max(Duration::from_secs(5)),
            pending: BTreeSet::new(),
            first: None,
            deadline: None,
        }
    }

    pub fn add(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        let now = Instant::now();
        // Every change (the same file written again too) restarts the quiet period.
        self.pending.extend(paths);
        if self.pending.is_empty() {
            return;
        }
        let first = *self.first.get_or_insert(now);
        self.deadline = Some((now + self.quiet).min(first + self.max_wait));
    }

    fn take(&mut self) -> Option<Vec<PathBuf>> {
        self.first = None;
        self.deadline = None;
        let out: Vec<PathBuf> = std::mem::take(&mut self.pending).into_iter().collect();
        (!out.is_empty()).then_some(out)
    }

    /// The next batch. Cancel-safe (the pending paths live in `self`): use it in `select!`.
    /// None when the sender is gone and nothing is pending.
    pub async fn next_batch(
        &mut self,
        rx: &mut UnboundedReceiver<Vec<PathBuf>>,
    ) -> Option<Vec<PathBuf>> {
        loop {
            match self.deadline {
                None => {
                    let paths = rx.recv().await?;
                    self.add(paths);
                }
                Some(d) => tokio::select! {
                    r = rx.recv() => match r {
                        Some(paths) => self.add(paths),
                        None => return self.take(),
                    },
                    _ = tokio::time::sleep_until(d) => {
                        if let Some(b) = self.take() {
                            return Some(b);
                        }
                    }
                },
            }
        }
    }
}

/// One file to copy into (or delete from) a container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SyncItem {
    pub host: PathBuf,
    pub container: String,
}

/// What one service gets from a batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServicePlan {
    pub sync: BTreeSet<SyncItem>,
    pub restart: bool,
    pub recreate: bool,
    #[serde(skip)]
    pub exec: Vec<ExecHook>,
    /// The changed paths that led here.
    pub paths: BTreeSet<PathBuf>,
}

impl ServicePlan {
    /// The action name for output: the strongest one.
    pub fn action(&self) -> &'static str {
        if self.recreate {
            "recreate"
        } else if self.restart && !self.sync.is_empty() {
            "sync+restart"
        } else if self.restart {
            "restart"
        } else if !self.exec.is_empty() {
            "sync+exec"
        } else {
            "sync"
        }
    }
}

/// What a batch of changes asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// A stack file or `.env` changed.
    pub reload: bool,
    pub stack_paths: Vec<PathBuf>,
    pub services: BTreeMap<String, ServicePlan>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        !self.reload && self.services.is_empty()
    }
}

fn container_path(target: &str, rel: &std::path::Path, whole: bool) -> String {
    if whole {
        return target.to_string();
    }
    let t = target.trim_end_matches('/');
    format!("{t}/{}", rel.to_string_lossy())
}

/// Turns a batch into a plan.
pub fn plan(rules: &RuleSet, batch: &[PathBuf]) -> Plan {
    let mut p = Plan::default();
    for path in batch {
        match rules.classify(path) {
            Match::Ignored => {}
            Match::Stack => {
                p.reload = true;
                p.stack_paths.push(path.clone());
            }
            Match::Rules(hits) => {
                for h in hits {
                    let r = &rules.rules[h.rule];
                    for s in &r.services {
                        let sp = p.services.entry(s.clone()).or_default();
                        sp.paths.insert(path.clone());
                        if r.action.syncs() {
                            let whole = matches!(&r.paths, Paths::Path(rp) if rp == path);
                            if let Some(t) = &r.target {
                                sp.sync.insert(SyncItem {
                                    host: path.clone(),
                                    container: container_path(t, &h.rel, whole),
                                });
                            }
                        }
                        match r.action {
                            Action::Restart | Action::SyncRestart => sp.restart = true,
                            Action::Recreate | Action::Rebuild => sp.recreate = true,
                            Action::SyncExec => {
                                if let Some(e) = &r.exec {
                                    if !sp.exec.contains(e) {
                                        sp.exec.push(e.clone());
                                    }
                                }
                            }
                            Action::Sync => {}
                        }
                    }
                }
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::ComposeFile;
    use crate::watch::rules::Inputs;
    use tokio::sync::mpsc::unbounded_channel;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_twenty_writes_in_200ms_is_one_batch() {
        let (tx, mut rx) = unbounded_channel();
        let mut b = Batcher::new(Duration::from_millis(500));
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            for i in 0..20 {
                tx.send(vec![PathBuf::from(format!("/s/src/f{}.py", i % 7))])
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Keep the channel open: the batch must end by the quiet period, not by hang-up.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        let batch = b.next_batch(&mut rx).await.unwrap();
        let at = start.elapsed();
        assert_eq!(batch.len(), 7, "{batch:?}");
        // The last write came at 190 ms; the batch closes a quiet period after it.
        assert!(
            at >= Duration::from_millis(690) && at < Duration::from_millis(800),
            "{at:?}"
        );
        // Nothing else comes until the sender goes away.
        assert!(b.next_batch(&mut rx).await.is_none());
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn changes_after_a_quiet_period_are_a_second_batch() {
        let (tx, mut rx) = unbounded_channel();
        let mut b = Batcher::new(Duration::from_millis(100));
        tokio::spawn(async move {
            tx.send(vec![PathBuf::from("/a")]).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send(vec![PathBuf::from("/b")]).unwrap();
            tx.send(vec![PathBuf::from("/b")]).unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        assert_eq!(
            b.next_batch(&mut rx).await.unwrap(),
            vec![PathBuf::from("/a")]
        );
        assert_eq!(
            b.next_batch(&mut rx).await.unwrap(),
            vec![PathBuf::from("/b")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_that_never_stops_is_still_acted_on() {
        let (tx, mut rx) = unbounded_channel();
        let mut b = Batcher::new(Duration::from_millis(500));
        let start = Instant::now();
        tokio::spawn(async move {
            loop {
                if tx.send(vec![PathBuf::from("/log")]).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        b.next_batch(&mut rx).await.unwrap();
        let at = start.elapsed();
        assert!(
            at >= Duration::from_secs(5) && at < Duration::from_millis(5200),
            "{at:?}"
        );
    }

    #[test]
    fn plan_groups_actions_per_service() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::create_dir_all(dir.join("static")).unwrap();
        std::fs::write(dir.join("settings.ini"), "x").unwrap();
        let c: ComposeFile = serde_yaml::from_str(
            "services:\n  api:\n    image: a\n    develop:\n      watch:\n        - path: src\n          action: sync+restart\n          target: /app\n        - path: static\n          action: sync\n          target: /srv\n        - path: settings.ini\n          action: sync+exec\n          target: /etc/app.ini\n          exec:\n            command: kill -HUP 1\n  web:\n    image: w\n",
        )
        .unwrap();
        let x = vec![crate::stack::WatchRule {
            paths: vec!["src/**/*.py".into()],
            services: vec!["api".into(), "web".into()],
            action: crate::stack::WatchAction::Recreate,
            target: None,
        }];
        let rules = RuleSet::build(&Inputs {
            stack_dir: dir,
            stack_files: &[dir.join("compose.yaml")],
            state_dir: &dir.join(".nodus"),
            compose: &c,
            nodus_rules: &x,
            only: &[],
        })
        .unwrap();
        let p = plan(
            &rules,
            &[
                dir.join("static/a/b.css"),
                dir.join("static/x.swp"),
                dir.join("settings.ini"),
                dir.join("unrelated.txt"),
            ],
        );
        assert!(!p.reload);
        assert_eq!(p.services.keys().collect::<Vec<_>>(), vec!["api"]);
        let api = &p.services["api"];
        assert!(!api.restart && !api.recreate);
        assert_eq!(api.exec.len(), 1);
        assert_eq!(api.exec[0].command, vec!["sh", "-c", "kill -HUP 1"]);
        let targets: Vec<&str> = api.sync.iter().map(|s| s.container.as_str()).collect();
        // Ordered by host path.
        assert_eq!(targets, vec!["/etc/app.ini", "/srv/a/b.css"]);

        let p = plan(&rules, &[dir.join("src/m.py"), dir.join("compose.yaml")]);
        assert!(p.reload);
        assert!(p.services["api"].recreate && p.services["api"].restart);
        assert_eq!(p.services["api"].action(), "recreate");
        assert!(p.services["web"].recreate);
        assert_eq!(
            p.services["api"].sync.iter().next().unwrap().container,
            "/app/m.py"
        );
        assert!(plan(&rules, &[dir.join("src/.m.py.swx")]).is_empty());
    }
}
