//! `snapshot restore`: choose the snapshots, verify every archive before touching anything,
//! find where each goes; then (after the command's confirmation) stop what runs with a safety
//! snapshot, replace the contents, start again and compare the census with the snapshot's.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::{
    create_volume, merge_reports, offline_target, safety_info, stack_files, stateful_services,
    CensusVerdict, START_TIMEOUT,
};
use crate::engine::{ContainerInfo, Engine, MountSpec, RunState};
use crate::guard::census::{self, Census, CensusOptions};
use crate::lifecycle::{HookChain, Lifecycle, Report, RunningService, UpOptions};
use crate::output::Ui;
use crate::project::Project;
use crate::snapshot::manifest::Reason;
use crate::snapshot::pick::{self, Pick};
use crate::snapshot::restore::{self, ReplaceStats, RestoreTarget};
use crate::snapshot::{mount_for, verify, Manifest, SnapshotEntry, SnapshotHook, SnapshotStore};
use crate::stack::StatefulService;

/// Which snapshots to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// This snapshot (an id or a unique prefix).
    Id(String),
    /// The newest usable snapshot of each service.
    Latest,
}

/// `--latest`: the newest snapshot of a service cannot be used (it failed verification or its
/// archive is gone). Refused rather than restoring an older one silently; the message names the
/// newest good one and how to restore it.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message("nodus"))]
pub struct NewestUnusable {
    pub service: String,
    pub pick: Pick,
}

impl NewestUnusable {
    /// The refusal, with restore commands starting with `nodus_cmd` (`nodus -f … -p …`).
    pub fn message(&self, nodus_cmd: &str) -> String {
        let why = self
            .pick
            .refusal(&format!("snapshot of {}", self.service), |id| {
                format!("{nodus_cmd} snapshot restore {id}")
            })
            .unwrap_or_default();
        format!("refusing `--latest`, nothing was changed: {why}")
    }
}

/// One snapshot and where it goes.
struct Item {
    entry: SnapshotEntry,
    manifest: Manifest,
    stateful: StatefulService,
    target: RestoreTarget,
    container: Option<ContainerInfo>,
    /// The volume does not exist yet: it is created after the confirmation.
    missing_volume: bool,
}

/// Verified snapshots and their targets, ready to be put back once confirmed.
pub struct RestorePlan {
    items: Vec<Item>,
    /// Where the snapshots are (and safety snapshots go).
    store: SnapshotStore,
}

/// What happened to one service.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredService {
    pub service: String,
    pub snapshot: String,
    pub volume: String,
    /// The snapshot of the contents the restore replaced.
    pub safety_snapshot: Option<String>,
    pub census: CensusVerdict,
    pub details: Vec<String>,
    pub raw_bytes: u64,
    pub empty_ms: u64,
    pub upload_ms: u64,
}

/// The outcome of [`RestorePlan::execute`].
#[derive(Debug, Default)]
pub struct Restored {
    /// What the lifecycle did (stop and start).
    pub report: Report,
    pub services: Vec<RestoredService>,
}

impl Restored {
    /// An error naming the services that do not hold what their snapshot recorded.
    pub fn result(&self) -> anyhow::Result<()> {
        let problems: Vec<&str> = self
            .services
            .iter()
            .filter(|s| s.census.is_problem())
            .map(|s| s.service.as_str())
            .collect();
        if !problems.is_empty() {
            bail!(
                "the data after the restore does not match the snapshot for {}",
                problems.join(", ")
            );
        }
        Ok(())
    }
}

/// The snapshots chosen by `selection` for `services` (all stateful ones when empty).
fn choose(
    store: &SnapshotStore,
    project: &Project,
    selection: &Selection,
    services: &[String],
    ui: &Ui,
) -> anyhow::Result<Vec<SnapshotEntry>> {
    let mut chosen = Vec::new();
    match selection {
        Selection::Id(id) => {
            let e = store.get(id)?;
            if let Ok(m) = &e.manifest {
                if !services.is_empty() && !services.contains(&m.service) {
                    bail!(
                        "snapshot {} is of service {}, not {}",
                        e.id,
                        m.service,
                        services.join(", ")
                    );
                }
            }
            chosen.push(e);
        }
        Selection::Latest => {
            for st in &stateful_services(project, services)? {
                let pick =
                    Pick::recorded(pick::candidates(store.dir(), &st.service, None, |_| true));
                if pick.problem.is_some() {
                    return Err(NewestUnusable {
                        service: st.service.clone(),
                        pick,
                    }
                    .into());
                }
                match pick.good {
                    Some(e) => chosen.push(e),
                    None if !services.is_empty() => bail!(
                        "no usable snapshot of {} (safety snapshots are restored by id only; see `nodus snapshot list`)",
                        st.service
                    ),
                    None => ui.status(format!("no snapshot of {}: left as it is", st.service)),
                }
            }
            if chosen.is_empty() {
                bail!("no usable snapshots of this stack (see `nodus snapshot list`)");
            }
        }
    }
    Ok(chosen)
}

impl RestorePlan {
    /// Chooses the snapshots, verifies every archive and finds (and checks) each target.
    /// Nothing is changed.
    pub async fn prepare(
        engine: &dyn Engine,
        project: &Project,
        store: &SnapshotStore,
        selection: &Selection,
        services: &[String],
        ui: &Ui,
    ) -> anyhow::Result<RestorePlan> {
        // 1. Which snapshots.
        let mut chosen = Vec::new();
        for e in choose(store, project, selection, services, ui)? {
            let m = e.manifest_checked()?;
            if m.project != project.name() {
                ui.warn(format!(
                    "snapshot {} was taken in project {}; restoring into {}",
                    m.id,
                    m.project,
                    project.name()
                ));
            }
            let st = stateful_services(project, std::slice::from_ref(&m.service))?.remove(0);
            if chosen
                .iter()
                .any(|(_, _, s): &(SnapshotEntry, Manifest, StatefulService)| {
                    s.service == st.service
                })
            {
                bail!("two snapshots of {} chosen", st.service);
            }
            chosen.push((e, m, st));
        }

        // 2. Verify every archive before touching anything.
        for (e, m, _) in &chosen {
            let total = if m.store.is_some() {
                m.archive.raw_bytes
            } else {
                m.archive.compressed_bytes
            };
            let pb = ui.bytes_progress(format!("verify {}", e.id), Some(total));
            let r = match verify::verify_entry(store, e, pb).await {
                Ok(r) => r,
                Err(err) if *selection == Selection::Latest => {
                    // The newest failed now: find the newest good one to name (the failure is
                    // recorded, so it is listed as unusable).
                    let candidates = pick::candidates(store.dir(), &m.service, None, |_| true);
                    let mut pick = Pick::verified(store, candidates, ui).await;
                    if pick.newest.as_ref().is_none_or(|n| n.id != e.id) || pick.problem.is_none() {
                        pick.newest = Some(e.clone());
                        pick.problem = Some(format!("failed verification ({err})"));
                    }
                    return Err(NewestUnusable {
                        service: m.service.clone(),
                        pick,
                    }
                    .into());
                }
                Err(err) => {
                    return Err(anyhow::Error::new(err).context(format!(
                        "snapshot {} failed verification; nothing was changed",
                        e.id
                    )))
                }
            };
            ui.success(format!(
                "verified {} ({} entries, sha256 ok)",
                e.id, r.entries
            ));
        }

        // 3. Where each goes; refuse incompatible ones before asking.
        let mut items = Vec::new();
        for (entry, manifest, stateful) in chosen {
            let container =
                restore::service_container(engine, project.name(), &stateful.service).await?;
            let mut missing_volume = false;
            let target = match &container {
                Some(c) => {
                    let mount = mount_for(&c.mounts, &stateful.data_dir).with_context(|| {
                        format!(
                            "{} keeps {} inside its container, not on a volume; nothing to restore into",
                            stateful.service, stateful.data_dir
                        )
                    })?;
                    RestoreTarget {
                        project: project.name().to_string(),
                        service: stateful.service.clone(),
                        image: c.image.clone(),
                        data_dir: stateful.data_dir.clone(),
                        mount: MountSpec {
                            kind: mount.kind.clone(),
                            source: mount.name_or_source.clone(),
                            target: mount.target.clone(),
                            read_only: false,
                        },
                    }
                }
                None => {
                    let (t, exists) =
                        offline_target(engine, project, &stateful, Some(&manifest)).await?;
                    if !exists {
                        ui.status(format!(
                            "volume {} does not exist; it will be created for the restore",
                            t.mount.source
                        ));
                        missing_volume = true;
                    }
                    t
                }
            };
            restore::check_compatible(&manifest, &target)?;
            if manifest.volume.name.as_deref() != Some(target.mount.source.as_str()) {
                ui.warn(format!(
                    "snapshot {} was taken from {}, it goes into {} now",
                    manifest.id,
                    manifest.volume.name.as_deref().unwrap_or("(no volume)"),
                    target.mount.source
                ));
            }
            if !manifest.clean {
                ui.warn(format!(
                    "snapshot {} is not clean ({}); postgres will run crash recovery on it",
                    manifest.id,
                    manifest.unclean_reason.as_deref().unwrap_or("unknown")
                ));
            }
            items.push(Item {
                entry,
                manifest,
                stateful,
                target,
                container,
                missing_volume,
            });
        }
        Ok(RestorePlan {
            items,
            store: store.clone(),
        })
    }

    /// The snapshot ids, in order.
    pub fn ids(&self) -> Vec<&str> {
        self.items.iter().map(|i| i.entry.id.as_str()).collect()
    }

    /// The services restored, in order.
    pub fn services(&self) -> Vec<&str> {
        self.items
            .iter()
            .map(|i| i.stateful.service.as_str())
            .collect()
    }

    /// "<volume> ← <id> (taken <time>)" per snapshot, for the confirmation.
    pub fn summary(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|i| {
                format!(
                    "{} ← {} (taken {})",
                    i.target.mount.source, i.manifest.id, i.manifest.created_at
                )
            })
            .collect()
    }

    /// What the snapshots recorded, for the guard to compare the settled census with (None
    /// when none of them recorded a usable census).
    fn expected_census(&self) -> Option<Census> {
        let mut expected = Census {
            taken_at: self
                .items
                .iter()
                .map(|i| i.manifest.created_at.clone())
                .max()
                .unwrap_or_default(),
            services: Default::default(),
        };
        for i in &self.items {
            if let Ok(c) = restore::recorded_census(i.manifest.census.as_ref()) {
                expected.services.insert(i.stateful.service.clone(), c);
            }
        }
        (!expected.services.is_empty()).then_some(expected)
    }

    /// Puts the snapshots back: stops what runs through `chain` (guarded; a safety snapshot is
    /// taken in the stop hook unless `no_safety`), replaces the contents, calls `expect` with the
    /// census the snapshots recorded (the guard compares with it instead of its ledger), starts
    /// the services again through `chain` and compares each one's census with its snapshot's.
    pub async fn execute(
        self,
        engine: Arc<dyn Engine>,
        project: &Project,
        chain: &mut HookChain,
        no_safety: bool,
        expect: impl FnOnce(Census),
        ui: &Ui,
    ) -> anyhow::Result<Restored> {
        let files = stack_files(project);
        let lc = Lifecycle::for_project(&*engine, project, ui);
        let svc_names: Vec<String> = self
            .items
            .iter()
            .map(|i| i.stateful.service.clone())
            .collect();
        let running: Vec<String> = self
            .items
            .iter()
            .filter(|i| {
                i.container
                    .as_ref()
                    .is_some_and(|c| c.state == RunState::Running)
            })
            .map(|i| i.target.service.clone())
            .collect();

        // Stop what runs (guarded; the safety snapshot is taken in the stop hook).
        let outcome = if !no_safety && !running.is_empty() {
            let hook = SnapshotHook::new(project, engine.clone(), ui)
                .with_reason(Reason::Safety)
                .only(running.clone())
                .without_prune();
            let o = hook.outcome();
            chain.0.push(Box::new(hook));
            Some(o)
        } else {
            None
        };
        let mut report = Report::default();
        if !running.is_empty() {
            report = lc.stop(&running, None, chain).await?;
        }
        let mut safety_ids: BTreeMap<String, String> = Default::default();
        if let Some(o) = &outcome {
            let o = o.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for m in &o.taken {
                crate::interrupt::note_safety_copy(format!("snapshot {}", m.id));
                safety_ids.insert(m.service.clone(), m.id.clone());
            }
            let missing: Vec<&String> = running
                .iter()
                .filter(|s| !safety_ids.contains_key(*s))
                .collect();
            if !missing.is_empty() {
                let why: Vec<String> = o.failed.iter().map(|(s, e)| format!("{s}: {e}")).collect();
                restart_after_abort(&lc, &running, chain, ui).await;
                bail!(
                    "safety snapshot of {} failed ({}); the restore was abandoned and nothing was changed",
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    why.join("; ")
                );
            }
        }

        // Replace contents.
        let mut stats: Vec<ReplaceStats> = Vec::new();
        for i in &self.items {
            let target = &i.target;
            if i.missing_volume {
                create_volume(&*engine, project, &i.stateful, &target.mount.source).await?;
            }
            // Nothing to keep from a volume that did not exist.
            let helper_safety =
                (!no_safety && !i.missing_volume && !running.contains(&target.service))
                    .then(|| (&self.store, safety_info(&i.stateful, &files)));
            ui.status(format!(
                "restoring {} into {}...",
                i.entry.id, target.mount.source
            ));
            let s = restore::replace_contents(
                &*engine,
                target,
                &i.entry,
                &i.manifest,
                helper_safety,
                ui,
            )
            .await
            .with_context(|| match safety_ids.get(&target.service) {
                Some(s) => format!(
                    "restore of {} failed; {} is left stopped; its previous contents are in safety snapshot {s}",
                    target.service, target.service
                ),
                None => format!(
                    "restore of {} failed; {} is left stopped",
                    target.service, target.service
                ),
            })?;
            if let Some(s) = &s.safety {
                safety_ids.insert(target.service.clone(), s.clone());
            }
            stats.push(s);
        }

        // Start again (guarded) and compare the census with the snapshot's. The guard compares
        // with what the snapshots recorded instead of its ledger, and records the result.
        if let Some(expected) = self.expected_census() {
            expect(expected);
        }
        let mut all_exist = true;
        for s in &svc_names {
            all_exist &= restore::service_container(&*engine, project.name(), s)
                .await?
                .is_some();
        }
        let up = UpOptions {
            services: svc_names.clone(),
            timeout: START_TIMEOUT,
            ..UpOptions::default()
        };
        let started = if all_exist {
            lc.start(&up, chain).await
        } else {
            lc.up(&up, chain).await
        }
        .with_context(|| format!("starting {} after the restore", svc_names.join(", ")))?;
        merge_reports(&mut report, started);

        let mut services = Vec::new();
        for (i, stats) in self.items.iter().zip(stats) {
            let target = &i.target;
            let c = restore::service_container(&*engine, project.name(), &target.service)
                .await?
                .filter(|c| c.state == RunState::Running)
                .with_context(|| format!("{} is not running after the restore", target.service))?;
            let svc = RunningService {
                service: target.service.clone(),
                container: c,
                stateful: Some(i.stateful.clone()),
            };
            let (verdict, details) =
                match census::take_service(&*engine, &svc, &CensusOptions::default()).await {
                    Err(e) => (
                        CensusVerdict::Unverified,
                        vec![format!("census after the restore failed: {e}")],
                    ),
                    Ok(now) => CensusVerdict::from_check(restore::check_census(
                        i.manifest.census.as_ref(),
                        &now,
                        false,
                    )),
                };
            let safety = safety_ids.get(&target.service).cloned();
            let (svc_name, id) = (&target.service, &i.entry.id);
            match verdict {
                CensusVerdict::Match => ui.success(format!(
                    "restored {svc_name} from {id}: the census matches the one taken with the snapshot"
                )),
                CensusVerdict::Superset => ui.success(format!(
                    "restored {svc_name} from {id}: everything recorded at snapshot time is there, plus: {}",
                    details.join("; ")
                )),
                CensusVerdict::NoBaseline => ui.success(format!(
                    "restored {svc_name} from {id} (not compared: {})",
                    details.join("; ")
                )),
                CensusVerdict::Mismatch | CensusVerdict::Unverified => ui.error(format!(
                    "{svc_name} was restored from {id} but does not hold what the snapshot recorded:\n  {}",
                    details.join("\n  ")
                )),
            }
            if let Some(s) = &safety {
                ui.detail(format!(
                    "previous contents of {svc_name}: safety snapshot {s}"
                ));
            }
            services.push(RestoredService {
                service: target.service.clone(),
                snapshot: i.entry.id.clone(),
                volume: target.mount.source.clone(),
                safety_snapshot: safety,
                census: verdict,
                details,
                raw_bytes: stats.raw_bytes,
                empty_ms: stats.empty_ms,
                upload_ms: stats.upload_ms,
            });
        }
        Ok(Restored { report, services })
    }
}

/// Starts services again after an abandoned restore (a warning when that fails).
async fn restart_after_abort(
    lc: &Lifecycle<'_>,
    services: &[String],
    chain: &mut HookChain,
    ui: &Ui,
) {
    let up = UpOptions {
        services: services.to_vec(),
        timeout: START_TIMEOUT,
        ..UpOptions::default()
    };
    if let Err(e) = lc.start(&up, chain).await {
        ui.warn(format!(
            "starting {} again failed: {e}",
            services.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, census: CensusVerdict) -> RestoredService {
        RestoredService {
            service: name.into(),
            snapshot: "s".into(),
            volume: "v".into(),
            safety_snapshot: None,
            census,
            details: vec![],
            raw_bytes: 0,
            empty_ms: 0,
            upload_ms: 0,
        }
    }

    #[test]
    fn mismatched_and_unverified_services_fail_the_restore() {
        let mut r = Restored::default();
        r.services.push(svc("db", CensusVerdict::Match));
        r.services.push(svc("cache", CensusVerdict::NoBaseline));
        assert!(r.result().is_ok());
        r.services.push(svc("q", CensusVerdict::Unverified));
        r.services.push(svc("pg", CensusVerdict::Mismatch));
        assert_eq!(
            r.result().unwrap_err().to_string(),
            "the data after the restore does not match the snapshot for q, pg"
        );
        let j = serde_json::to_value(&r.services[1]).unwrap();
        assert_eq!(j["census"], "no-baseline");
        assert_eq!(j["safety_snapshot"], serde_json::Value::Null);
    }
}
