//! The lifecycle hook that snapshots every stateful service after a clean stop (`down`, `stop`,
//! `restart`, the safety snapshot of a restore), and the retention policy it applies after.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::create::{report_taken, snapshot_container, SnapshotRequest};
use super::manifest::{Manifest, Reason};
use super::store::SnapshotStore;
use super::{Result, SnapshotError};
use crate::engine::{Engine, MountKind};
use crate::lifecycle::{Hooks, Release, StoppedService, Transition};
use crate::output::Ui;
use crate::project::Project;
use crate::stack::xnodus::Retention;

/// What the hook did, readable by the command that installed it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOutcome {
    pub taken: Vec<Manifest>,
    /// (service, error message)
    pub failed: Vec<(String, String)>,
    /// Snapshots removed by the automatic prune.
    pub pruned: Vec<String>,
}

/// What the automatic prune removed, and the garbage collections it ran.
type PruneResult = Result<(Vec<String>, Vec<super::Collected>)>;

/// The retention policy applied to `groups` after new snapshots were taken (blocking). The
/// stores' garbage is collected only when a snapshot was deleted: with nothing deleted a
/// collection would read every manifest and chunk list for nothing the retention freed (what an
/// interrupted writer left is reclaimed by the next collection or `snapshot prune`).
pub(crate) fn auto_prune(
    store: &SnapshotStore,
    keep: &Retention,
    groups: &[String],
) -> PruneResult {
    let removed: Vec<String> = super::prune_plan(store, keep, Some(groups))?
        .into_iter()
        .filter(|d| !d.keep)
        .map(|d| d.id)
        .collect();
    if removed.is_empty() {
        return Ok((removed, Vec::new()));
    }
    let collected = super::delete_snapshots(store, &removed)?;
    Ok((removed, collected))
}

/// Snapshots every stateful service after a clean stop, before its container is removed.
///
/// The retention policy runs on its own thread once the snapshots are committed. In a restart
/// it runs while the services start (nothing of the start reads the snapshot store) and is
/// waited for in `all_ready`; otherwise, and whenever the hook is dropped first (a failed
/// start), it is waited for before the hook goes, so it never outlives the command's lock.
pub struct SnapshotHook {
    engine: Arc<dyn Engine>,
    ui: Ui,
    project: String,
    snapshots_dir: PathBuf,
    cas_dir: PathBuf,
    trust_mtime: bool,
    stack_files: Vec<String>,
    keep: Retention,
    reason: Option<Reason>,
    only: Option<Vec<String>>,
    prune: bool,
    outcome: Arc<Mutex<SnapshotOutcome>>,
    /// The automatic prune running on its own thread.
    pending: Option<std::thread::JoinHandle<PruneResult>>,
    /// Test hook: runs on the prune thread before it prunes.
    #[cfg(test)]
    before_prune: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Drop for SnapshotHook {
    fn drop(&mut self) {
        // A transition that failed before `all_ready`: the prune ends before the command does.
        if let Some(h) = self.pending.take() {
            let _ = h.join();
        }
    }
}

impl SnapshotHook {
    pub fn new(project: &Project, engine: Arc<dyn Engine>, ui: &Ui) -> SnapshotHook {
        SnapshotHook {
            engine,
            ui: ui.clone(),
            project: project.name().to_string(),
            snapshots_dir: project.state.snapshots_dir(project.name()),
            cas_dir: super::cas::store_dir_for(project),
            trust_mtime: project.stack.nodus.snapshots.trust_mtime,
            stack_files: project
                .stack
                .files
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            keep: project.stack.nodus.snapshots.keep.clone(),
            reason: None,
            only: None,
            prune: true,
            outcome: Arc::default(),
            pending: None,
            #[cfg(test)]
            before_prune: Mutex::new(None),
        }
    }

    /// The hook for a lifecycle transition, or None when snapshots are off for it: `--no-snapshot`,
    /// `x-nodus.snapshots.on_down: false`, a transition that does not stop anything, or a
    /// `restart` that `x-nodus.snapshots.on_restart` leaves out
    /// ([`super::policy::restart_snapshots`]).
    pub fn for_transition(
        project: &Project,
        engine: Arc<dyn Engine>,
        ui: &Ui,
        transition: Transition,
        choice: &super::policy::SnapshotChoice,
    ) -> Option<SnapshotHook> {
        let stops = matches!(
            transition,
            Transition::Down | Transition::Stop | Transition::Restart
        );
        if !stops || choice.no_snapshot {
            return None;
        }
        if !choice.force {
            if !project.stack.nodus.snapshots.on_down {
                return None;
            }
            if transition == Transition::Restart {
                if let Some(why) = super::policy::restart_snapshots(project, &choice.services) {
                    ui.status(format!("no snapshot on this restart: {why}"));
                    return None;
                }
            }
        }
        Some(SnapshotHook::new(project, engine, ui))
    }

    /// A hook writing to `snapshots_dir` and the store at `cas_dir`, without a project.
    #[cfg(test)]
    pub(crate) fn for_test(
        engine: Arc<dyn Engine>,
        project: &str,
        snapshots_dir: PathBuf,
        cas_dir: PathBuf,
        keep: Retention,
    ) -> SnapshotHook {
        SnapshotHook {
            engine,
            ui: Ui::plain(),
            project: project.to_string(),
            snapshots_dir,
            cas_dir,
            trust_mtime: true,
            stack_files: Vec::new(),
            keep,
            reason: None,
            only: None,
            prune: true,
            outcome: Arc::default(),
            pending: None,
            before_prune: Mutex::new(None),
        }
    }

    /// Test hook: `f` runs on the prune thread before the prune.
    #[cfg(test)]
    pub(crate) fn before_prune(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.before_prune = Mutex::new(Some(Box::new(f)));
        self
    }

    /// Records this reason instead of the transition's.
    pub fn with_reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }
    /// Only these services.
    pub fn only(mut self, services: Vec<String>) -> Self {
        self.only = Some(services);
        self
    }
    /// Do not apply the retention policy afterwards.
    pub fn without_prune(mut self) -> Self {
        self.prune = false;
        self
    }
    /// Shared view of what the hook did (read it after the lifecycle call).
    pub fn outcome(&self) -> Arc<Mutex<SnapshotOutcome>> {
        self.outcome.clone()
    }

    fn record<F: FnOnce(&mut SnapshotOutcome)>(&self, f: F) {
        let mut o = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut o);
    }

    /// Starts the automatic prune of `groups` on its own thread (after the one still running,
    /// if any).
    async fn start_prune(&mut self, store: &SnapshotStore, groups: Vec<String>) {
        self.finish_prune().await;
        let store = store.clone();
        let keep = self.keep.clone();
        #[cfg(test)]
        let before = self
            .before_prune
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let work = move || {
            #[cfg(test)]
            if let Some(f) = before {
                f();
            }
            auto_prune(&store, &keep, &groups)
        };
        self.pending = match std::thread::Builder::new()
            .name("nodus-prune".into())
            .spawn(work)
        {
            Ok(h) => Some(h),
            Err(e) => {
                self.ui.warn(format!(
                    "pruning old snapshots failed: no thread for it: {e}"
                ));
                None
            }
        };
    }

    /// Waits for the automatic prune (without blocking the runtime) and reports it.
    async fn finish_prune(&mut self) {
        let Some(h) = self.pending.take() else {
            return;
        };
        let joined = tokio::task::spawn_blocking(move || h.join()).await;
        let result = match joined {
            Ok(Ok(r)) => r,
            _ => Err(SnapshotError::Other("the prune thread failed".into())),
        };
        match result {
            Ok((removed, collected)) => {
                for c in &collected {
                    match &c.result {
                        Ok(r) if r.busy || r.packs_deleted + r.packs_repacked > 0 => {
                            self.ui.detail(c.describe())
                        }
                        Ok(_) => {}
                        Err(_) => self.ui.warn(c.describe()),
                    }
                }
                if !removed.is_empty() {
                    self.ui.detail(format!(
                        "pruned {} old {}: {}",
                        removed.len(),
                        crate::guard::census::plural(removed.len(), "snapshot", "snapshots"),
                        removed.join(", ")
                    ));
                }
                self.record(|o| o.pruned.extend(removed));
            }
            Err(e) => self.ui.warn(format!("pruning old snapshots failed: {e}")),
        }
    }
}

impl SnapshotHook {
    /// Snapshots the stateful services of `stopped` (those in scope); `release` learns of each
    /// service as soon as no snapshot still being taken reads a volume or bind mount it mounts.
    async fn snapshot_stopped(
        &mut self,
        transition: Transition,
        stopped: &[StoppedService],
        release: &Release,
    ) -> anyhow::Result<()> {
        let targets: Vec<&StoppedService> = stopped
            .iter()
            .filter(|s| s.stateful.is_some())
            .filter(|s| self.only.as_ref().is_none_or(|o| o.contains(&s.service)))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let holds = Holds::new(stopped, &targets);
        holds.release_free(release);
        let reason = self
            .reason
            .unwrap_or_else(|| Reason::for_transition(transition));
        let consequence = match transition {
            Transition::Down => {
                "`down` continues: containers are removed, volumes are kept, nothing is lost"
            }
            Transition::Restore => "the restore is abandoned before touching the volume",
            _ => "the containers and volumes are left as they are",
        };
        let store = match SnapshotStore::open(&self.snapshots_dir) {
            Ok((store, cleaned)) => {
                let store = store
                    .with_cas(&self.cas_dir)
                    .with_trust_mtime(self.trust_mtime);
                for c in cleaned {
                    self.ui.status(format!(
                        "removed interrupted snapshot {c} (its writer did not finish)"
                    ));
                }
                store
            }
            Err(e) => {
                self.ui.warn(format!("cannot snapshot: {e}; {consequence}"));
                self.record(|o| {
                    o.failed
                        .extend(targets.iter().map(|s| (s.service.clone(), e.to_string())))
                });
                return Ok(());
            }
        };
        // Snapshots of different volumes run together (compression is on blocking threads).
        let this = &*self;
        let store = &store;
        let holds = &holds;
        futures_util::future::join_all(targets.into_iter().map(|s| async move {
            let st = s.stateful.as_ref().expect("filtered");
            let req = SnapshotRequest {
                project: &this.project,
                service: &s.service,
                kind: st.kind,
                container: &s.container,
                data_dir: &st.data_dir,
                volume_name: st.volume_name.as_deref(),
                stack_files: &this.stack_files,
                census: s.pre_stop.clone(),
                evidence: Some(s.evidence.clone()),
                reason,
            };
            match snapshot_container(&*this.engine, store, req, &this.ui).await {
                Ok(m) => {
                    report_taken(&this.ui, &m);
                    this.record(|o| o.taken.push(m));
                }
                Err(e) => {
                    let volume = st.volume_name.as_deref().unwrap_or(&st.data_dir);
                    this.ui.warn(format!(
                        "snapshot of {} FAILED: {e}\n  {volume} was not modified and no partial snapshot was kept; {consequence}",
                        s.service
                    ));
                    this.record(|o| o.failed.push((s.service.clone(), e.to_string())));
                }
            }
            holds.done(&s.service, release);
        }))
        .await;
        let taken_groups: Vec<String> = {
            let o = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
            o.taken.iter().map(|m| m.retention_key()).collect()
        };
        if self.prune && !taken_groups.is_empty() {
            self.start_prune(store, taken_groups).await;
            // In a restart the services start while it runs (joined in `all_ready`).
            if transition != Transition::Restart {
                self.finish_prune().await;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Hooks for SnapshotHook {
    /// Every service it may snapshot stays stopped until its snapshot is taken (whether it is
    /// stateful is known only from the stopped service: any name in scope is held).
    fn holds_stopped(&self, _t: Transition, service: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == service))
    }
    async fn after_stop(
        &mut self,
        transition: Transition,
        stopped: &[StoppedService],
    ) -> anyhow::Result<()> {
        self.snapshot_stopped(transition, stopped, &Release::none())
            .await
    }

    async fn after_stop_releasing(
        &mut self,
        transition: Transition,
        stopped: &[StoppedService],
        release: &Release,
    ) -> anyhow::Result<()> {
        self.snapshot_stopped(transition, stopped, release).await
    }

    async fn all_ready(
        &mut self,
        _transition: Transition,
        _started: &[crate::lifecycle::RunningService],
    ) -> anyhow::Result<()> {
        self.finish_prune().await;
        Ok(())
    }
}

/// Which stopped services the snapshots still being taken keep stopped: those mounting a
/// volume or bind mount (the same source) that one of them reads, and the snapshotted services
/// themselves.
struct Holds {
    mounts: BTreeMap<String, BTreeSet<String>>,
    state: Mutex<(BTreeSet<String>, BTreeSet<String>)>,
}

impl Holds {
    fn new(stopped: &[StoppedService], targets: &[&StoppedService]) -> Holds {
        let mounts = stopped
            .iter()
            .map(|s| {
                let m = s
                    .container
                    .mounts
                    .iter()
                    .filter(|m| matches!(m.kind, MountKind::Volume | MountKind::Bind))
                    .map(|m| format!("{:?}:{}", m.kind, m.name_or_source))
                    .collect();
                (s.service.clone(), m)
            })
            .collect();
        let pending = targets.iter().map(|t| t.service.clone()).collect();
        Holds {
            mounts,
            state: Mutex::new((pending, BTreeSet::new())),
        }
    }

    /// The snapshot of `service` ended (taken or failed).
    fn done(&self, service: &str, release: &Release) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .remove(service);
        self.release_free(release);
    }

    /// Releases every service no pending snapshot holds (once).
    fn release_free(&self, release: &Release) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (pending, released) = &mut *st;
        let none = BTreeSet::new();
        let held: BTreeSet<&String> = pending
            .iter()
            .flat_map(|p| self.mounts.get(p).unwrap_or(&none))
            .collect();
        for (service, mounts) in &self.mounts {
            if pending.contains(service)
                || released.contains(service)
                || mounts.iter().any(|m| held.contains(m))
            {
                continue;
            }
            released.insert(service.clone());
            release.release(service);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MountInfo;
    use crate::lifecycle::StopEvidence;

    fn stopped(service: &str, mounts: &[(MountKind, &str)]) -> StoppedService {
        let mut container = crate::guard::testutil::container(&[], &[]);
        container.mounts = mounts
            .iter()
            .map(|(kind, src)| MountInfo {
                kind: kind.clone(),
                name_or_source: src.to_string(),
                target: "/data".into(),
            })
            .collect();
        StoppedService {
            service: service.into(),
            container,
            stateful: None,
            evidence: StopEvidence::default(),
            pre_stop: None,
        }
    }

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(s) = rx.try_recv() {
            out.push(s);
        }
        out
    }

    /// A service is released once no snapshot still being taken reads a volume or bind mount
    /// it mounts (a sidecar on the database's volume waits for the database's snapshot).
    #[test]
    fn a_service_is_released_when_no_pending_snapshot_shares_its_mounts() {
        let all = vec![
            stopped("db", &[(MountKind::Volume, "p_pgdata")]),
            stopped("cache", &[(MountKind::Volume, "p_redis")]),
            stopped("sidecar", &[(MountKind::Volume, "p_pgdata")]),
            stopped("files", &[(MountKind::Bind, "/srv/x")]),
            stopped("app", &[(MountKind::Tmpfs, "")]),
        ];
        let targets: Vec<&StoppedService> = all.iter().take(2).collect();
        let holds = Holds::new(&all, &targets);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let release = Release::new(tx);
        holds.release_free(&release);
        assert_eq!(drain(&mut rx), ["app", "files"]);
        holds.done("cache", &release);
        assert_eq!(drain(&mut rx), ["cache"]);
        holds.done("db", &release);
        assert_eq!(drain(&mut rx), ["db", "sidecar"]);
        holds.done("db", &release);
        assert!(drain(&mut rx).is_empty(), "released once");
    }
}
