//! `nodus import --migrate-data`: copies a service's data from its bind mount or anonymous volume
//! into a new named volume through the Engine API, proven by a census before and after.
//!
//! 1. census of the running service (started first when it was stopped, stopped again after);
//! 2. the service is stopped with its grace period (a clean shutdown: checkpoint first);
//! 3. the new volume is created (it must not exist) and the data directory's tar stream goes from
//!    the stopped container into a helper container holding the new volume;
//! 4. a verification container runs the service's image on the new volume; its census must equal
//!    the one before, table for table and row for row.
//!
//! On any failure the new volume is removed (it is ours, created in step 3) and the original
//! service is left as it was: started again if it was running. The original data is only read.

use std::time::Duration;

use indexmap::IndexMap;

use super::Migration;
use crate::engine::{ContainerInfo, ContainerSpec, Engine, MountKind, MountSpec, RunState};
use crate::guard::census::{self, CensusOptions, ServiceCensus};
use crate::guard::diff::compare;
use crate::labels;
use crate::lifecycle::RunningService;
use crate::output::Ui;
use crate::stack::StatefulService;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{service}: no container of project {project} for it; start the original stack (docker compose up -d) so its data can be read")]
    NoContainer { service: String, project: String },
    #[error("{service}: volume {volume} already exists; nodus does not overwrite a volume (remove it or rename the key in the stack file)")]
    VolumeExists { service: String, volume: String },
    #[error("{service}: no census possible ({reason})")]
    NoCensus { service: String, reason: String },
    #[error("{service}: the copy in {volume} differs from the original ({diff}); the new volume was removed and the original left as it was")]
    Mismatch {
        service: String,
        volume: String,
        diff: String,
    },
    #[error("{service}: {message}")]
    Other { service: String, message: String },
}

/// What one migration did (for the report).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migrated {
    pub service: String,
    /// The original container and whether it ran before (to undo a later failure).
    pub container: String,
    pub was_running: bool,
    pub volume: String,
    pub tables: usize,
    pub rows: i64,
}

const GRACE_SECS: i64 = 60;

/// The census options of a migration: exact counts, a generous connect retry (the server may
/// just be starting).
fn opts() -> CensusOptions {
    CensusOptions {
        fast: false,
        connect_retry: Duration::from_secs(60),
    }
}

async fn census_of(
    engine: &dyn Engine,
    m: &Migration,
    c: &ContainerInfo,
) -> Result<ServiceCensus, MigrateError> {
    let rs = RunningService {
        service: m.service.clone(),
        container: c.clone(),
        stateful: Some(StatefulService {
            service: m.service.clone(),
            kind: m.kind,
            data_dir: m.path.clone(),
            volume_key: None,
            volume_name: None,
        }),
    };
    // Wait for the server: census retries connecting, but a container that is still starting
    // may also refuse exec; retry the whole census a few times.
    let mut last = String::new();
    for _ in 0..20 {
        match census::take_service(engine, &rs, &opts()).await {
            Ok(c @ ServiceCensus::Postgres(_))
            | Ok(c @ ServiceCensus::Redis(_))
            | Ok(c @ ServiceCensus::Qdrant(_)) => return Ok(c),
            Ok(ServiceCensus::Unavailable { reason }) => last = reason,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(MigrateError::NoCensus {
        service: m.service.clone(),
        reason: last,
    })
}

async fn wait_running(engine: &dyn Engine, id: &str) -> Result<ContainerInfo, String> {
    for _ in 0..120 {
        let c = engine
            .inspect_container(id)
            .await
            .map_err(|e| e.to_string())?;
        match c.state {
            RunState::Running => return Ok(c),
            RunState::Exited | RunState::Dead => {
                let logs = engine.logs(id, 20).await.unwrap_or_default();
                return Err(format!("container exited: {}", logs.trim()));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    Err("container did not start".into())
}

/// Runs one migration. `project` is the compose project of the running original.
pub async fn migrate(
    engine: &dyn Engine,
    project: &str,
    m: &Migration,
    ui: &Ui,
) -> Result<Migrated, MigrateError> {
    let other = |message: String| MigrateError::Other {
        service: m.service.clone(),
        message,
    };
    let containers = crate::doctor::live::project_containers(engine, project)
        .await
        .map_err(|e| other(e.to_string()))?;
    let c = containers
        .get(&m.service)
        .cloned()
        .ok_or_else(|| MigrateError::NoContainer {
            service: m.service.clone(),
            project: project.to_string(),
        })?;
    if engine
        .inspect_volume(&m.volume_name)
        .await
        .map_err(|e| other(e.to_string()))?
        .is_some()
    {
        return Err(MigrateError::VolumeExists {
            service: m.service.clone(),
            volume: m.volume_name.clone(),
        });
    }
    let was_running = c.state == RunState::Running;
    if !was_running {
        ui.status(format!("{}: starting {} for the census", m.service, c.name));
        engine
            .start_container(&c.id)
            .await
            .map_err(|e| other(e.to_string()))?;
    }
    let c = wait_running(engine, &c.id).await.map_err(other)?;
    let before = match census_of(engine, m, &c).await {
        Ok(b) => b,
        Err(e) => {
            if !was_running {
                let _ = engine.stop_container(&c.id, Some(GRACE_SECS)).await;
            }
            return Err(e);
        }
    };
    ui.status(format!(
        "{}: census before: {}",
        m.service,
        describe(&before)
    ));
    ui.status(format!(
        "{}: stopping {} (clean shutdown)",
        m.service, c.name
    ));
    engine
        .stop_container(&c.id, Some(GRACE_SECS))
        .await
        .map_err(|e| other(e.to_string()))?;

    let result = copy_and_verify(engine, project, m, &c, &before, ui).await;
    match result {
        Ok(mut done) => {
            done.was_running = was_running;
            if was_running {
                ui.status(format!(
                    "{}: {} stays stopped: its data now lives in {}; start the stack with the new stack file",
                    m.service, c.name, m.volume_name
                ));
            }
            Ok(done)
        }
        Err(e) => {
            let _ = engine.remove_volume(&m.volume_name).await;
            if was_running {
                let _ = engine.start_container(&c.id).await;
            }
            Err(e)
        }
    }
}

fn describe(c: &ServiceCensus) -> String {
    let mut t = census::Totals::default();
    t.add_service("", c);
    t.summary()
}

async fn copy_and_verify(
    engine: &dyn Engine,
    project: &str,
    m: &Migration,
    c: &ContainerInfo,
    before: &ServiceCensus,
    ui: &Ui,
) -> Result<Migrated, MigrateError> {
    let other = |message: String| MigrateError::Other {
        service: m.service.clone(),
        message,
    };
    let mut labels =
        crate::lifecycle::spec::volume_labels(project, &m.volume_key, &IndexMap::new());
    let target = m.path.trim_end_matches('/');
    if let Some(src) = c
        .mounts
        .iter()
        .find(|mt| mt.target.trim_end_matches('/') == target)
    {
        labels.insert(
            crate::labels::MIGRATED_FROM.to_string(),
            src.name_or_source.clone(),
        );
    }
    engine
        .create_volume(&m.volume_name, &labels)
        .await
        .map_err(|e| other(e.to_string()))?;
    let path = m.path.trim_end_matches('/').to_string();
    let parent = match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((p, _)) => p.to_string(),
    };
    let mount = MountSpec {
        kind: MountKind::Volume,
        source: m.volume_name.clone(),
        target: path.clone(),
        read_only: false,
    };
    let mut hl = labels::base(project);
    hl.insert(labels::HELPER.into(), "true".into());
    hl.insert("io.nodus.helper.purpose".into(), "import".into());
    let suffix = crate::snapshot::manifest::short_random_hex();
    // 1. copy: the data dir's tar stream into a (never started) helper holding the new volume
    ui.status(format!(
        "{}: copying {} into volume {}",
        m.service, path, m.volume_name
    ));
    let copier = ContainerSpec {
        name: format!("{project}-nodus-import-copy-{}-{suffix}", m.service),
        image: c.image.clone(),
        entrypoint: Some(vec!["true".into()]),
        cmd: Some(vec![]),
        user: Some("0:0".into()),
        labels: hl.clone(),
        mounts: vec![mount.clone()],
        restart: Some("no".into()),
        ..Default::default()
    };
    let copier_id = engine
        .create_container(&copier)
        .await
        .map_err(|e| other(e.to_string()))?;
    let copied = async {
        let tar = engine.download_archive(&c.id, &path).await?;
        engine.upload_archive(&copier_id, &parent, tar).await
    }
    .await;
    let _ = engine.remove_container(&copier_id, true).await;
    copied.map_err(|e| other(format!("copying the data: {e}")))?;

    // 2. verify: the service's image on the new volume, same environment, census must match
    ui.status(format!("{}: verifying the copy", m.service));
    let verifier = ContainerSpec {
        name: format!("{project}-nodus-import-verify-{}-{suffix}", m.service),
        image: c.image.clone(),
        env: c.env.clone(),
        labels: hl,
        mounts: vec![mount],
        stop_signal: c.stop_signal.clone().or(Some("SIGINT".into())),
        restart: Some("no".into()),
        ..Default::default()
    };
    let vid = engine
        .create_container(&verifier)
        .await
        .map_err(|e| other(e.to_string()))?;
    let verified = async {
        engine
            .start_container(&vid)
            .await
            .map_err(|e| other(e.to_string()))?;
        let vc = wait_running(engine, &vid).await.map_err(other)?;
        census_of(engine, m, &vc).await
    }
    .await;
    let _ = engine.stop_container(&vid, Some(GRACE_SECS)).await;
    let _ = engine.remove_container(&vid, true).await;
    let after = verified?;
    let d = compare(before, &after);
    let extra = d.new_databases.len() + d.new_tables.values().map(Vec::len).sum::<usize>();
    if d.is_loss() || extra > 0 || d.not_verified.is_some() {
        let mut diff = d.summary();
        if let Some(n) = &d.not_verified {
            diff = format!("{diff} {n}");
        }
        if extra > 0 {
            diff = format!("{diff} {extra} new table(s)/database(s)");
        }
        return Err(MigrateError::Mismatch {
            service: m.service.clone(),
            volume: m.volume_name.clone(),
            diff: diff.trim().to_string(),
        });
    }
    let mut t = census::Totals::default();
    t.add_service(&m.service, &after);
    ui.status(format!(
        "{}: copy verified: {}",
        m.service,
        describe(&after)
    ));
    Ok(Migrated {
        service: m.service.clone(),
        container: c.id.clone(),
        was_running: false,
        volume: m.volume_name.clone(),
        tables: t.tables,
        rows: t.rows,
    })
}

/// Undoes a finished migration (a later one failed): removes the new volume, starts the original
/// again when it was running.
pub async fn undo(engine: &dyn Engine, done: &Migrated) {
    let _ = engine.remove_volume(&done.volume).await;
    if done.was_running {
        let _ = engine.start_container(&done.container).await;
    }
}
