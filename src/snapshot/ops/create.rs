//! `snapshot create`: services at rest are archived as they are; running ones are stopped
//! cleanly (guarded), archived in the stop hook and started again.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use serde_json::json;

use super::{merge_reports, offline_target, safety_info, stack_files, START_TIMEOUT};
use crate::engine::{ContainerInfo, Engine, RunState};
use crate::guard::ledger::{Entry, Ledger, Phase};
use crate::lifecycle::{HookChain, Lifecycle, Report, StopEvidence, UpOptions};
use crate::output::Ui;
use crate::project::Project;
use crate::snapshot::create::report_taken;
use crate::snapshot::manifest::Reason;
use crate::snapshot::restore;
use crate::snapshot::{
    snapshot_container, Manifest, SnapshotError, SnapshotHook, SnapshotRequest, SnapshotStore,
};
use crate::stack::StatefulService;

/// The services to snapshot, split by whether they run.
#[derive(Debug, Default)]
pub struct Targets {
    /// Running: stopped cleanly for the snapshot, then started again.
    pub running: Vec<String>,
    /// Not running (with their container, if any): archived as they are.
    pub offline: Vec<(StatefulService, Option<ContainerInfo>)>,
}

/// Finds out which of `services` run.
pub async fn targets(
    engine: &dyn Engine,
    project: &Project,
    services: &[StatefulService],
) -> anyhow::Result<Targets> {
    let mut t = Targets::default();
    for st in services {
        match restore::service_container(engine, project.name(), &st.service).await? {
            Some(c) if c.state == RunState::Running => t.running.push(st.service.clone()),
            c => t.offline.push((st.clone(), c)),
        }
    }
    Ok(t)
}

/// What `snapshot create` made.
#[derive(Debug, Default)]
pub struct Created {
    pub taken: Vec<Manifest>,
    /// (service, error message)
    pub failed: Vec<(String, String)>,
}

impl Created {
    pub fn extend(&mut self, other: Created) {
        self.taken.extend(other.taken);
        self.failed.extend(other.failed);
    }

    /// `{"snapshots": [...], "failed": [{"service", "error"}]}`.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "snapshots": self.taken,
            "failed": self
                .failed
                .iter()
                .map(|(s, e)| json!({"service": s, "error": e}))
                .collect::<Vec<_>>(),
        })
    }

    /// An error naming the services whose snapshot failed, if any did.
    pub fn result(&self) -> anyhow::Result<()> {
        if !self.failed.is_empty() {
            bail!(
                "snapshot failed for {}",
                self.failed
                    .iter()
                    .map(|(s, e)| format!("{s} ({e})"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        Ok(())
    }
}

/// Snapshots services that are not running: from their stopped container, or through a helper
/// container on their volume when they have none. A failure is recorded, not returned.
pub async fn snapshot_offline(
    engine: &dyn Engine,
    project: &Project,
    store: &SnapshotStore,
    offline: &[(StatefulService, Option<ContainerInfo>)],
    ui: &Ui,
) -> Created {
    let files = stack_files(project);
    let mut out = Created::default();
    for (st, container) in offline {
        let result = match container {
            Some(c) => {
                let (census, evidence) = match at_rest_since_clean_stop(project, &st.service, c) {
                    Some((census, evidence)) => (Some(census), Some(evidence)),
                    None => (None, None),
                };
                let req = SnapshotRequest {
                    project: project.name(),
                    service: &st.service,
                    kind: st.kind,
                    container: c,
                    data_dir: &st.data_dir,
                    volume_name: st.volume_name.as_deref(),
                    stack_files: &files,
                    census,
                    evidence,
                    reason: Reason::Manual,
                };
                snapshot_container(engine, store, req, ui).await
            }
            None => match offline_target(engine, project, st, None).await {
                Ok((target, false)) => Err(SnapshotError::Other(format!(
                    "{} has no container and its volume {} does not exist: nothing to snapshot",
                    st.service, target.mount.source
                ))),
                Ok((target, true)) => {
                    restore::snapshot_via_helper(
                        engine,
                        &target,
                        store,
                        safety_info(st, &files),
                        Reason::Manual,
                        ui,
                    )
                    .await
                }
                Err(e) => Err(SnapshotError::Other(format!("{e:#}"))),
            },
        };
        match result {
            Ok(m) => {
                report_taken(ui, &m);
                out.taken.push(m);
            }
            Err(e) => {
                ui.warn(format!("snapshot of {} failed: {e}", st.service));
                out.failed.push((st.service.clone(), e.to_string()));
            }
        }
    }
    out
}

/// The census and stop evidence the guard recorded when nodus last stopped `service`, if that
/// stop is provably the container's last: the ledger's latest census of the service was taken
/// right before a stop (not after a start), by this very container (same ID), and the container
/// has not been started since (the engine's start time is unchanged). Then the data at rest is
/// what that census counted, and the snapshot can record it for restores to check against.
fn at_rest_since_clean_stop(
    project: &Project,
    service: &str,
    container: &ContainerInfo,
) -> Option<(serde_json::Value, StopEvidence)> {
    if container.state == RunState::Running {
        return None;
    }
    let ledger = Ledger::peek(&project.state.ledger_path(project.name()))?;
    carried_census(ledger.latest_for(service, None)?, service, container)
}

fn carried_census(
    entry: &Entry,
    service: &str,
    container: &ContainerInfo,
) -> Option<(serde_json::Value, StopEvidence)> {
    if entry.phase != Phase::Pre {
        return None;
    }
    let id = entry.services.get(service)?;
    let same_container = id.container_id.as_deref() == Some(container.id.as_str())
        && id.started_at.is_some()
        && id.started_at == container.started_at;
    if !same_container {
        return None;
    }
    let evidence = id.stop_evidence.clone()?;
    let census = serde_json::to_value(entry.census_of(service)?).ok()?;
    Some((census, evidence))
}

/// Snapshots running services: a guarded clean stop through `chain` (the snapshot hook is added
/// to it), then the services are started again whatever happened to the snapshots.
pub async fn snapshot_running(
    engine: Arc<dyn Engine>,
    project: &Project,
    running: &[String],
    chain: &mut HookChain,
    ui: &Ui,
) -> anyhow::Result<(Report, Created)> {
    let hook = SnapshotHook::new(project, engine.clone(), ui)
        .with_reason(Reason::Manual)
        .only(running.to_vec())
        // Retention runs after automatic snapshots (and `snapshot prune`), not manual ones.
        .without_prune();
    let outcome = hook.outcome();
    chain.0.push(Box::new(hook));
    let lc = Lifecycle::for_project(&*engine, project, ui);
    ui.status(format!(
        "stopping {} cleanly to snapshot...",
        running.join(", ")
    ));
    let mut report = lc.stop(running, None, chain).await?;
    // Whatever happened to the snapshots, the services go back up.
    let started = lc
        .start(
            &UpOptions {
                services: running.to_vec(),
                timeout: START_TIMEOUT,
                ..UpOptions::default()
            },
            chain,
        )
        .await
        .with_context(|| format!("starting {} again after the snapshot", running.join(", ")))?;
    merge_reports(&mut report, started);
    let o = outcome.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = Created {
        taken: o.taken,
        failed: o.failed,
    };
    for s in running {
        if !out.taken.iter().any(|m| &m.service == s) && !out.failed.iter().any(|(f, _)| f == s) {
            out.failed.push((
                s.clone(),
                "the service was not stopped, so no snapshot was taken".into(),
            ));
        }
    }
    Ok((report, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::census::{Census, RedisCensus, ServiceCensus};
    use crate::guard::ledger::ServiceIdentity;
    use crate::stack::ServiceKind;

    fn stopped_container(id: &str, started_at: &str) -> ContainerInfo {
        let mut c = crate::guard::testutil::container(&[], &[]);
        c.id = id.into();
        c.state = RunState::Exited;
        c.started_at = Some(started_at.into());
        c
    }

    fn pre_stop_entry(phase: Phase, container_id: &str, started_at: &str) -> Entry {
        let census = Census {
            taken_at: "2026-01-01T00:00:00Z".into(),
            services: [(
                "cache".to_string(),
                ServiceCensus::Redis(RedisCensus {
                    keys: [(0, 42)].into(),
                    expires: Default::default(),
                }),
            )]
            .into(),
        };
        let identity = ServiceIdentity {
            kind: ServiceKind::Redis,
            container: Some("p-cache-1".into()),
            container_id: Some(container_id.into()),
            started_at: Some(started_at.into()),
            data_dir: "/data".into(),
            volume_key: Some("cache_data".into()),
            mount: None,
            volume: None,
            system_identifier: None,
            stop_evidence: Some(StopEvidence {
                exit_code: Some(0),
                ..Default::default()
            }),
        };
        Entry {
            session: "s1".into(),
            transition: "stop".into(),
            phase,
            time: "2026-01-01T00:00:00Z".into(),
            project: "p".into(),
            nodus_version: "0".into(),
            engine_id: None,
            volumes_removed: false,
            census,
            services: [("cache".to_string(), identity)].into(),
        }
    }

    #[test]
    fn census_is_carried_only_from_the_containers_own_last_stop() {
        let t0 = "2026-01-01T00:00:00.1Z";
        let c = stopped_container("c1", t0);
        let (census, evidence) =
            carried_census(&pre_stop_entry(Phase::Pre, "c1", t0), "cache", &c).unwrap();
        assert_eq!(census["keys"]["0"], 42, "{census}");
        assert_eq!(evidence.exit_code, Some(0));

        // Started again since (outside nodus, e.g. `docker start`): the data may have changed.
        let restarted = stopped_container("c1", "2026-01-02T00:00:00Z");
        let e = pre_stop_entry(Phase::Pre, "c1", t0);
        assert!(carried_census(&e, "cache", &restarted).is_none());
        // Another container (recreated): not the same data path history.
        let other = stopped_container("c2", t0);
        assert!(carried_census(&e, "cache", &other).is_none());
        // The latest census was taken after a start, not before a stop.
        let post = pre_stop_entry(Phase::PostSettled, "c1", t0);
        assert!(carried_census(&post, "cache", &c).is_none());
        // No stop evidence: nodus did not see it stop.
        let mut unseen = pre_stop_entry(Phase::Pre, "c1", t0);
        unseen.services.get_mut("cache").unwrap().stop_evidence = None;
        assert!(carried_census(&unseen, "cache", &c).is_none());
        // Another service.
        assert!(carried_census(&e, "db", &c).is_none());
    }

    #[test]
    fn created_json_and_result() {
        let mut c = Created::default();
        assert!(c.result().is_ok());
        assert_eq!(c.json()["failed"], json!([]));
        c.extend(Created {
            taken: vec![],
            failed: vec![("db".into(), "boom".into())],
        });
        assert_eq!(
            c.json()["failed"],
            json!([{"service": "db", "error": "boom"}])
        );
        let e = c.result().unwrap_err().to_string();
        assert_eq!(e, "snapshot failed for db (boom)");
    }
}
