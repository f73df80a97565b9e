//! Putting a snapshot back into its volume, through the Engine API only.
//!
//! The Engine API cannot delete files, and a stopped container cannot be exec'd into, so the
//! volume is emptied by a short-lived container created from the service's own image (already
//! present locally: nothing is pulled), labelled `io.nodus.helper=true` plus the project labels,
//! with the same mount at the same path and `sh -c 'rm -rf …'` as its entrypoint. Once it has
//! exited, the archive is uploaded into that (stopped) helper at the data dir's parent with
//! `PUT /containers/{id}/archive`: the tar carries uid/gid/mode of every entry (the data dir's
//! 0700 and the postgres owner included), and the engine applies them as root. The top entry's
//! owner and mode are read back from the engine afterwards and compared with the snapshot's.

use std::io::Read;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::create::{normalize_dir, snapshot_container, SnapshotRequest};
use super::manifest::{short_random_hex, Manifest, Reason};
use super::pipeline::zstd_file_stream;
use super::store::{SnapshotEntry, SnapshotStore};
use super::{human_bytes, Result, SnapshotError};
use crate::engine::{
    ContainerInfo, ContainerSpec, Engine, EngineError, MountKind, MountSpec, RunState,
};
use crate::guard::census::ServiceCensus;
use crate::guard::diff::{self, ServiceDiff};
use crate::labels;
use crate::output::Ui;

/// Removes the contents of `$1` (hidden files included) and fails unless it is then empty.
const EMPTY_SCRIPT: &str = r#"set -eu
mkdir -p "$1"
cd "$1"
rm -rf -- ./* ./.[!.]* ./..?*
test -z "$(ls -A)"
"#;
/// How long emptying a volume may take.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a service's data lives.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    pub project: String,
    pub service: String,
    /// Image for the helper container: the service's own.
    pub image: String,
    pub data_dir: String,
    /// The mount holding the data dir (a named volume or a bind mount).
    pub mount: MountSpec,
}

/// Timings of a restore, for output and the benchmark.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplaceStats {
    pub raw_bytes: u64,
    pub empty_ms: u64,
    pub upload_ms: u64,
    /// Set when a safety snapshot was taken through the helper (service not running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety: Option<String>,
}

/// A helper container; remove it with [`Helper::remove`] on every path.
struct Helper<'a> {
    engine: &'a dyn Engine,
    info: ContainerInfo,
}

impl<'a> Helper<'a> {
    async fn create(
        engine: &'a dyn Engine,
        target: &RestoreTarget,
        purpose: &str,
    ) -> Result<Helper<'a>> {
        let mut labels = labels::base(&target.project);
        labels.insert(labels::HELPER.to_string(), "true".to_string());
        labels.insert("io.nodus.helper.purpose".to_string(), purpose.to_string());
        labels.insert(
            "io.nodus.helper.service".to_string(),
            target.service.clone(),
        );
        let spec = ContainerSpec {
            name: format!(
                "{}-nodus-{purpose}-{}-{}",
                target.project,
                target.service,
                short_random_hex()
            ),
            image: target.image.clone(),
            entrypoint: Some(vec![
                "sh".into(),
                "-c".into(),
                EMPTY_SCRIPT.into(),
                "nodus-empty".into(),
                target.data_dir.clone(),
            ]),
            user: Some("0:0".into()),
            labels,
            mounts: vec![target.mount.clone()],
            restart: Some("no".into()),
            ..Default::default()
        };
        let id = engine.create_container(&spec).await?;
        let info = match engine.inspect_container(&id).await {
            Ok(i) => i,
            Err(e) => {
                let _ = engine.remove_container(&id, true).await;
                return Err(e.into());
            }
        };
        Ok(Helper { engine, info })
    }

    /// Runs the entrypoint (emptying the data dir) and waits for it to exit 0.
    async fn run_empty(&self) -> Result<()> {
        self.engine.start_container(&self.info.id).await?;
        let started = Instant::now();
        loop {
            let c = self.engine.inspect_container(&self.info.id).await?;
            match c.state {
                RunState::Exited | RunState::Dead => {
                    if c.exit_code == Some(0) {
                        return Ok(());
                    }
                    let logs = self
                        .engine
                        .logs(&self.info.id, 20)
                        .await
                        .unwrap_or_default();
                    return Err(SnapshotError::Other(format!(
                        "emptying the volume with helper container {} failed (exit code {}): {}",
                        self.info.name,
                        c.exit_code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "unknown".into()),
                        logs.trim()
                    )));
                }
                _ if started.elapsed() > EMPTY_TIMEOUT => {
                    return Err(SnapshotError::Other(format!(
                        "helper container {} did not finish emptying the volume within {}s",
                        self.info.name,
                        EMPTY_TIMEOUT.as_secs()
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn remove(self) -> Result<()> {
        self.engine.remove_container(&self.info.id, true).await?;
        Ok(())
    }
}

fn parent_and_base(data_dir: &str) -> Result<(String, String)> {
    let d = normalize_dir(data_dir);
    let (parent, base) = d.rsplit_once('/').unwrap_or(("", &d));
    if base.is_empty() {
        return Err(SnapshotError::Other(format!(
            "cannot restore into {data_dir}: the data directory must not be /"
        )));
    }
    Ok((
        if parent.is_empty() {
            "/".into()
        } else {
            parent.into()
        },
        base.into(),
    ))
}

/// Checks that `manifest` can be put back at `target` (same data dir name).
pub fn check_compatible(manifest: &Manifest, target: &RestoreTarget) -> Result<()> {
    let (_, base) = parent_and_base(&target.data_dir)?;
    if manifest.archive.top != base {
        return Err(SnapshotError::Other(format!(
            "snapshot {} holds a directory named {:?} (data dir {}), but {} keeps its data in {} now; restore it by hand with `docker cp`",
            manifest.id, manifest.archive.top, manifest.data_dir, target.service, target.data_dir
        )));
    }
    if !matches!(target.mount.kind, MountKind::Volume | MountKind::Bind) {
        return Err(SnapshotError::Other(format!(
            "{} keeps {} on a {:?} mount; only volumes and bind mounts can be restored",
            target.service, target.data_dir, target.mount.kind
        )));
    }
    Ok(())
}

/// Replaces the data dir's contents with the snapshot. `safety`, when given, is the store to take
/// a safety snapshot into first (from the helper, before anything is deleted): used when the
/// service was not running, so no stop hook could take it. The caller has verified the archive.
pub async fn replace_contents(
    engine: &dyn Engine,
    target: &RestoreTarget,
    entry: &SnapshotEntry,
    manifest: &Manifest,
    safety: Option<(&SnapshotStore, SafetyInfo<'_>)>,
    ui: &Ui,
) -> Result<ReplaceStats> {
    check_compatible(manifest, target)?;
    let helper = Helper::create(engine, target, "restore").await?;
    let result = replace_with(&helper, target, entry, manifest, safety, ui).await;
    let removed = helper.remove().await;
    let stats = result?;
    removed?;
    Ok(stats)
}

/// Snapshots a data dir whose service has no usable container (removed by `down`) through a
/// helper container that is created with the mount but never started.
pub async fn snapshot_via_helper(
    engine: &dyn Engine,
    target: &RestoreTarget,
    store: &SnapshotStore,
    info: SafetyInfo<'_>,
    reason: Reason,
    ui: &Ui,
) -> Result<Manifest> {
    let helper = Helper::create(engine, target, "snapshot").await?;
    let req = SnapshotRequest {
        project: &target.project,
        service: &target.service,
        kind: info.kind,
        container: &helper.info,
        data_dir: &target.data_dir,
        volume_name: info.volume_name,
        stack_files: info.stack_files,
        census: None,
        evidence: None,
        reason,
    };
    let result = snapshot_container(engine, store, req, ui).await;
    let removed = helper.remove().await;
    let m = result?;
    removed?;
    Ok(m)
}

/// What a safety snapshot taken through the helper records.
#[derive(Debug, Clone)]
pub struct SafetyInfo<'a> {
    pub kind: crate::stack::ServiceKind,
    pub volume_name: Option<&'a str>,
    pub stack_files: &'a [String],
}

async fn replace_with(
    helper: &Helper<'_>,
    target: &RestoreTarget,
    entry: &SnapshotEntry,
    manifest: &Manifest,
    safety: Option<(&SnapshotStore, SafetyInfo<'_>)>,
    ui: &Ui,
) -> Result<ReplaceStats> {
    let engine = helper.engine;
    let mut stats = ReplaceStats::default();
    if let Some((store, info)) = safety {
        let req = SnapshotRequest {
            project: &target.project,
            service: &target.service,
            kind: info.kind,
            container: &helper.info,
            data_dir: &target.data_dir,
            volume_name: info.volume_name,
            stack_files: info.stack_files,
            census: None,
            evidence: None,
            reason: Reason::Safety,
        };
        let m = snapshot_container(engine, store, req, ui)
            .await
            .map_err(|e| {
                SnapshotError::Other(format!(
                    "safety snapshot of {} failed, nothing was changed: {e}",
                    target.service
                ))
            })?;
        super::create::report_taken(ui, &m);
        crate::interrupt::note_safety_copy(format!("snapshot {}", m.id));
        stats.safety = Some(m.id);
    }

    // A restore writes files with the times they had when the restored snapshot was taken: the
    // files recorded by this service's snapshots must not vouch for them any more.
    if let Some(dir) = entry.dir.parent() {
        super::cas::reuse::forget_files(dir, &target.service)?;
    }

    // From here on the volume is half-replaced until the upload ends: a signal waits for it.
    let _critical =
        crate::interrupt::critical(format!("the restore of {} into its volume", target.service));
    crate::interrupt::set_step(format!("the restore of {}", target.service));
    let t = Instant::now();
    helper.run_empty().await?;
    stats.empty_ms = t.elapsed().as_millis() as u64;

    let (parent, _) = parent_and_base(&target.data_dir)?;
    let pb = ui.bytes_progress(
        format!("restore {}", target.service),
        Some(manifest.archive.raw_bytes),
    );
    let t = Instant::now();
    let (stream, producer) = if manifest.store.is_some() {
        // Every chunk was checked against its id before the volume was touched; while
        // uploading, each is checked again by its zstd frame checksum (re-hashed when it has
        // none): damage since the verification ends the stream with an error, not a clean end.
        let e = entry.clone();
        let m = manifest.clone();
        super::pipeline::stream_from_blocking(Some(pb.clone()), move |w| {
            let mut r = super::cas::read::ChunkReader::open(&e, &m)?.after_verification();
            r.copy_to(w).map_err(|err| SnapshotError::Corrupt {
                id: e.id.clone(),
                path: e.data_path(),
                reason: err.to_string(),
            })?;
            Ok(())
        })
    } else {
        zstd_file_stream(
            entry.data_path(),
            manifest.archive.sha256.clone(),
            manifest.id.clone(),
            Some(pb.clone()),
        )
    };
    let uploaded = engine
        .upload_archive(&helper.info.id, &parent, stream)
        .await;
    let produced = producer
        .await
        .map_err(|e| SnapshotError::Other(format!("archive reader thread failed: {e}")))?;
    pb.finish_and_clear();
    let partial_note = |e: &dyn std::fmt::Display| {
        SnapshotError::Other(format!(
            "restoring {} into {} broke off: {e}. The data dir may now hold a partial copy; do not start {} on it — re-run the restore (or restore the safety snapshot)",
            manifest.id, target.data_dir, target.service
        ))
    };
    if let Err(e) = produced {
        return Err(partial_note(&e));
    }
    if let Err(e) = uploaded {
        return Err(partial_note(&e));
    }
    stats.upload_ms = t.elapsed().as_millis() as u64;
    stats.raw_bytes = manifest.archive.raw_bytes;

    check_top_entry(engine, &helper.info.id, &target.data_dir, entry).await?;
    ui.detail(format!(
        "restored {} of tar into {} in {:.1}s",
        human_bytes(stats.raw_bytes),
        target.data_dir,
        stats.upload_ms as f64 / 1000.0
    ));
    Ok(stats)
}

/// Reads the first tar header of the restored data dir back from the engine and compares owner
/// and mode with the snapshot's: ownership and 0700 on PGDATA must survive.
async fn check_top_entry(
    engine: &dyn Engine,
    container: &str,
    data_dir: &str,
    entry: &SnapshotEntry,
) -> Result<()> {
    let expected = first_header_of_snapshot(entry)?;
    let mut stream = engine.download_archive(container, data_dir).await?;
    let mut head = Vec::with_capacity(512);
    while head.len() < 512 {
        match stream.next().await {
            Some(Ok(c)) => head.extend_from_slice(&c),
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    drop(stream);
    if head.len() < 512 {
        return Err(SnapshotError::Other(format!(
            "{data_dir} reads back empty after the restore"
        )));
    }
    let got = header_facts(&head[..512]);
    if got != expected {
        return Err(SnapshotError::Other(format!(
            "{data_dir} after the restore has owner {}:{} mode {:o}, the snapshot has {}:{} mode {:o}",
            got.0, got.1, got.2, expected.0, expected.1, expected.2
        )));
    }
    Ok(())
}

fn header_facts(block: &[u8]) -> (u64, u64, u32) {
    let h = tar::Header::from_byte_slice(block);
    (
        h.uid().unwrap_or(u64::MAX),
        h.gid().unwrap_or(u64::MAX),
        h.mode().unwrap_or(0) & 0o7777,
    )
}

fn first_header_of_snapshot(entry: &SnapshotEntry) -> Result<(u64, u64, u32)> {
    let path = entry.data_path();
    let mut dec = super::tar_io::open_tar_reader(entry)?;
    let mut block = [0u8; 512];
    dec.read_exact(&mut block)
        .map_err(|e| SnapshotError::Corrupt {
            id: entry.id.clone(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(header_facts(&block))
}

/// How the census after a restore compares with the one recorded in the snapshot.
#[derive(Debug, Clone)]
pub enum CensusCheck {
    /// Identical.
    Exact,
    /// Nothing missing, but more than recorded (writes between the census and the stop).
    Superset(ServiceDiff),
    /// Data recorded at snapshot time is missing, or another cluster came up.
    Mismatch(ServiceDiff),
    /// The snapshot has no usable census to compare with.
    NoBaseline(String),
}

/// The census recorded in a manifest (the guard's `pre_stop` value: a `ServiceCensus`, possibly
/// wrapped in an object under `census`).
pub fn recorded_census(
    value: Option<&serde_json::Value>,
) -> std::result::Result<ServiceCensus, String> {
    let v = value.ok_or("no census was recorded when the snapshot was taken")?;
    let parsed = serde_json::from_value::<ServiceCensus>(v.clone())
        .or_else(|e| match v.get("census") {
            Some(inner) => serde_json::from_value::<ServiceCensus>(inner.clone()),
            None => Err(e),
        })
        .map_err(|e| format!("the recorded census is unreadable: {e}"))?;
    if let ServiceCensus::Unavailable { reason } = &parsed {
        return Err(format!(
            "the database could not be counted when the snapshot was taken: {reason}"
        ));
    }
    Ok(parsed)
}

/// Compares the census now with the recorded one. `logical` (a pg_dumpall load): the data was
/// re-created, not copied, so a different postgres system identifier is expected.
pub fn check_census(
    recorded: Option<&serde_json::Value>,
    now: &ServiceCensus,
    logical: bool,
) -> CensusCheck {
    let before = match recorded_census(recorded) {
        Ok(c) => c,
        Err(why) => return CensusCheck::NoBaseline(why),
    };
    let (before, now) = if logical {
        (without_identity(before), without_identity(now.clone()))
    } else {
        (before, now.clone())
    };
    if before == now {
        return CensusCheck::Exact;
    }
    let d = diff::compare(&before, &now);
    if d.is_loss() || d.system_identifier_changed.is_some() {
        CensusCheck::Mismatch(d)
    } else {
        CensusCheck::Superset(d)
    }
}

fn without_identity(c: ServiceCensus) -> ServiceCensus {
    match c {
        ServiceCensus::Postgres(mut pg) => {
            pg.system_identifier = String::new();
            ServiceCensus::Postgres(pg)
        }
        other => other,
    }
}

/// Human-readable lines for a diff (never empty: row increases are not itemised by the diff).
pub fn describe_diff(d: &ServiceDiff) -> Vec<String> {
    let mut out = describe_items(d);
    if out.is_empty() {
        out.push("more rows than recorded (written after the census was taken)".into());
    }
    out
}

fn describe_items(d: &ServiceDiff) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((a, b)) = &d.system_identifier_changed {
        out.push(format!(
            "a different postgres cluster is running (system identifier {a} → {b})"
        ));
    }
    for db in &d.missing_databases {
        out.push(format!("database {db} is missing"));
    }
    for (db, tables) in &d.missing_tables {
        for t in tables {
            out.push(format!("table {db}.{t} is missing"));
        }
    }
    for (db, drops) in &d.row_drops {
        for (t, before, after) in drops {
            out.push(format!("{db}.{t}: {before} rows recorded, {after} now"));
        }
    }
    for (name, before, after) in &d.other_drops {
        out.push(format!("{name}: {before} recorded, {after} now"));
    }
    for db in &d.new_databases {
        out.push(format!("database {db} was not in the snapshot's census"));
    }
    for (db, tables) in &d.new_tables {
        for t in tables {
            out.push(format!("table {db}.{t} was not in the snapshot's census"));
        }
    }
    out
}

/// Finds the container of a service (running or not), ignoring helpers and one-off containers.
pub async fn service_container(
    engine: &dyn Engine,
    project: &str,
    service: &str,
) -> std::result::Result<Option<ContainerInfo>, EngineError> {
    let mut filter = labels::project_filter(project);
    filter.insert(labels::SERVICE.to_string(), service.to_string());
    let mut found: Vec<ContainerInfo> = engine
        .list_containers(&filter)
        .await?
        .into_iter()
        .filter(|c| !c.labels.contains_key(labels::HELPER))
        .filter(|c| c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True"))
        .collect();
    // Prefer a running one; inspect it for complete information (a listing may lack env/mounts).
    found.sort_by_key(|c| c.state != RunState::Running);
    match found.into_iter().next() {
        Some(c) => match engine.inspect_container(&c.id).await {
            Ok(full) => Ok(Some(full)),
            Err(EngineError::ContainerNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        },
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_and_base_of_data_dirs() {
        assert_eq!(
            parent_and_base("/var/lib/postgresql/data/").unwrap(),
            ("/var/lib/postgresql".to_string(), "data".to_string())
        );
        assert_eq!(
            parent_and_base("/data").unwrap(),
            ("/".to_string(), "data".to_string())
        );
        assert!(parent_and_base("/").is_err());
    }

    fn pg(rows: i64) -> ServiceCensus {
        serde_json::from_value(serde_json::json!({
            "kind": "postgres",
            "system_identifier": "42",
            "databases": { "app": { "tables": {
                "public.t": { "persistence": "permanent", "rows": rows }
            } } }
        }))
        .unwrap()
    }

    #[test]
    fn recorded_census_accepts_plain_and_wrapped_values() {
        let plain = serde_json::to_value(pg(3)).unwrap();
        assert_eq!(recorded_census(Some(&plain)).unwrap(), pg(3));
        let wrapped = serde_json::json!({ "census": plain, "taken_at": "x" });
        assert_eq!(recorded_census(Some(&wrapped)).unwrap(), pg(3));
        assert!(recorded_census(None).is_err());
        assert!(recorded_census(Some(&serde_json::json!({"x": 1}))).is_err());
        let unavailable = serde_json::to_value(ServiceCensus::Unavailable {
            reason: "down".into(),
        })
        .unwrap();
        assert!(recorded_census(Some(&unavailable))
            .unwrap_err()
            .contains("down"));
    }

    #[test]
    fn fewer_rows_or_another_cluster_is_a_mismatch_more_is_a_superset() {
        let rec = serde_json::to_value(pg(10)).unwrap();
        assert!(matches!(
            check_census(Some(&rec), &pg(9), false),
            CensusCheck::Mismatch(_)
        ));
        match check_census(Some(&rec), &pg(11), false) {
            CensusCheck::Superset(d) => assert!(!d.is_loss()),
            other => panic!("{other:?}"),
        }
        let mut other = serde_json::to_value(pg(10)).unwrap();
        other["system_identifier"] = "43".into();
        let other: ServiceCensus = serde_json::from_value(other).unwrap();
        assert!(matches!(
            check_census(Some(&rec), &other, false),
            CensusCheck::Mismatch(_)
        ));
        // A logical load re-creates the data in another cluster: that is expected.
        assert!(matches!(
            check_census(Some(&rec), &other, true),
            CensusCheck::Exact
        ));
        let lines = match check_census(Some(&rec), &pg(9), false) {
            CensusCheck::Mismatch(d) => describe_diff(&d),
            _ => unreachable!(),
        };
        assert!(
            lines.iter().any(|l| l.contains("10") && l.contains("9")),
            "{lines:?}"
        );
    }

    #[test]
    fn identical_census_is_exact() {
        let rec = serde_json::to_value(pg(3)).unwrap();
        assert!(matches!(
            check_census(Some(&rec), &pg(3), false),
            CensusCheck::Exact
        ));
        assert!(matches!(
            check_census(None, &pg(3), false),
            CensusCheck::NoBaseline(_)
        ));
    }
}
