//! Taking snapshots: the archive of a stopped container's data dir, streamed through zstd into
//! the store, and the lifecycle hook that does it after every clean stop.
//!
//! Failure policy on `down`/`stop`/`restart`: a failed snapshot is reported loudly (warning with
//! the cause, e.g. "no space left on the device holding <path>") but does not stop the
//! transition. Removing containers loses nothing — volumes are kept — while refusing would leave
//! the user with a half-finished `down`. The partial snapshot is removed and the volume is never
//! touched. `snapshot create` and `snapshot restore` (safety snapshot) check the outcome and fail.

use std::time::Instant;

use super::manifest::{self, ArchiveInfo, Manifest, Reason, VolumeIdentity, FORMAT};
use super::store::SnapshotStore;
use super::{human_bytes, mount_for, Result, SnapshotError};
use crate::engine::{ContainerInfo, Engine, MountKind};
use crate::lifecycle::StopEvidence;
use crate::output::Ui;
use crate::stack::ServiceKind;

/// Everything needed to snapshot one stopped container.
#[derive(Debug, Clone)]
pub struct SnapshotRequest<'a> {
    pub project: &'a str,
    pub service: &'a str,
    pub kind: ServiceKind,
    /// The (stopped) container to read the data dir from; may be a helper container with the
    /// volume mounted at `data_dir`.
    pub container: &'a ContainerInfo,
    pub data_dir: &'a str,
    /// The engine volume the stack declares for the data dir (used when the container's mounts
    /// do not say).
    pub volume_name: Option<&'a str>,
    pub stack_files: &'a [String],
    pub census: Option<serde_json::Value>,
    pub evidence: Option<StopEvidence>,
    pub reason: Reason,
}

/// Snapshots `req.data_dir` of a stopped container into `store`. Atomic: on any error nothing is
/// listed and the partial directory is gone. The progress shows bytes, throughput and elapsed
/// time (no total: the data's size is not known until the archive ends).
pub async fn snapshot_container(
    engine: &dyn Engine,
    store: &SnapshotStore,
    req: SnapshotRequest<'_>,
    ui: &Ui,
) -> Result<Manifest> {
    let data_dir = normalize_dir(req.data_dir);
    let now = chrono::Utc::now();
    let id = manifest::new_id(now, req.service);
    let volume = volume_identity(engine, req.container, &data_dir, req.volume_name).await?;

    // The store's shared lock is held until the snapshot is committed (a GC waits for it).
    // (Waiting for the lock while another process collects garbage blocks: not on the runtime.)
    let for_lock = store.clone();
    let (cas, _cas_lock) =
        tokio::task::spawn_blocking(move || super::cas::write::open_for_write(&for_lock))
            .await
            .map_err(|e| SnapshotError::Other(format!("snapshot store thread failed: {e}")))??;
    let prev = if store.trust_mtime() {
        previous_of(store, &cas, &req, &data_dir, &volume)
    } else {
        None
    };
    let partial = store.begin(&id)?;
    crate::interrupt::set_step(format!("the snapshot of {}", req.service));
    // No total: the size of the previous snapshot is not the size of the data now (it showed
    // 378 MiB/70 MiB), and the live size is not known before the archive ends. Bytes, rate and
    // elapsed time instead.
    let pb = ui.bytes_progress(format!("snapshot {}", req.service), None);
    let started = Instant::now();
    let stream = engine
        .download_archive(&req.container.id, &data_dir)
        .await?;
    let written = super::cas::write::write_from_stream(
        stream,
        cas.clone(),
        partial.dir().join(manifest::CHUNKS_FILE),
        super::cas::write::chunk_level(),
        prev,
        &pb,
    )
    .await;
    pb.finish_and_clear();
    let written = written?;
    let duration_ms = started.elapsed().as_millis() as u64;
    let top = tar_top(&written.head).ok_or_else(|| {
        SnapshotError::Other(format!(
            "the engine returned an empty or unreadable archive for {}:{}",
            req.container.name, data_dir
        ))
    })?;

    let unclean = manifest::unclean_reason(req.kind, req.evidence.as_ref());
    let mut manifest = Manifest {
        format: FORMAT,
        id: id.clone(),
        project: req.project.to_string(),
        service: req.service.to_string(),
        kind: req.kind,
        stack_files: req.stack_files.to_vec(),
        volume,
        container: req.container.name.clone(),
        image: req.container.image.clone(),
        data_dir,
        archive: ArchiveInfo {
            file: String::new(),
            compression: String::new(),
            level: 0,
            min_level: None,
            raw_bytes: 0,
            compressed_bytes: 0,
            sha256: String::new(),
            top,
        },
        census: req.census,
        stop: req.evidence,
        clean: unclean.is_none(),
        unclean_reason: unclean,
        reason: req.reason,
        nodus_version: env!("CARGO_PKG_VERSION").into(),
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms,
        store: None,
    };
    super::cas::write::fill_manifest(&mut manifest, &cas, &written)?;
    if let Some(s) = manifest.store.as_mut() {
        s.mtime_cutoff = mtime_cutoff(req.container);
    }
    super::cas::crash_point("before-manifest");
    partial.commit(&manifest)?;
    Ok(manifest)
}

/// The second the (stopped) container stopped in, on the engine's clock: the files of its data
/// dir were read after it began ([`super::cas::reuse`]). None for a container that never ran or
/// runs now.
fn mtime_cutoff(c: &ContainerInfo) -> Option<i64> {
    if !matches!(
        c.state,
        crate::engine::RunState::Exited | crate::engine::RunState::Dead
    ) {
        return None;
    }
    let t = chrono::DateTime::parse_from_rfc3339(c.finished_at.as_deref()?).ok()?;
    let secs = t.timestamp();
    // The engine says 0001-01-01 for a container that never stopped.
    (secs > 0).then_some(secs)
}

/// The latest snapshot of the same volume (same service, data dir and volume name, in the same
/// store) whose unchanged files a new snapshot may take ([`super::cas::reuse`]). Data kept in
/// a container's own layer has no identity to check: never. (The engine's `CreatedAt` of a
/// local volume is not its creation time — it moves with the directory's mtime — so it cannot
/// tell a recreated volume; a recreated volume's files have new times anyway, and one filled
/// by a restore has the times of the snapshot restored, whose files were read before any later
/// change of theirs. The safety snapshot a restore takes first records no stop time, so the
/// snapshot after a restore reads every byte.)
fn previous_of(
    store: &SnapshotStore,
    cas: &super::cas::Cas,
    req: &SnapshotRequest<'_>,
    data_dir: &str,
    volume: &VolumeIdentity,
) -> Option<super::cas::reuse::Previous> {
    if volume.kind == "container" || volume.name.is_none() {
        return None;
    }
    let list = store.list().ok()?;
    let (e, m) = list.iter().rev().find_map(|e| {
        let m = e.manifest.as_ref().ok()?;
        let same = m.service == req.service
            && m.data_dir == data_dir
            && m.volume.kind == volume.kind
            && m.volume.name == volume.name
            && m.store.as_ref().is_some_and(|s| s.store_id == cas.id())
            && !e.verified_bad();
        same.then_some((e, m))
    })?;
    let prev = super::cas::reuse::Previous::load(&e.dir, m);
    tracing::debug!(
        "snapshot of {}: previous snapshot {} {}",
        req.service,
        e.id,
        if prev.is_some() {
            "offers its unchanged files"
        } else {
            "recorded no files (or no stop time): every byte is read"
        }
    );
    prev
}

/// `/a/b/` → `/a/b`.
pub(crate) fn normalize_dir(d: &str) -> String {
    let t = d.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

/// Name of the first tar entry (the data dir's base name as the archive endpoint writes it).
pub(crate) fn tar_top(head: &[u8]) -> Option<String> {
    if head.len() < 512 {
        return None;
    }
    let h = tar::Header::from_byte_slice(&head[..512]);
    let p = h.path().ok()?;
    let s = p.to_string_lossy();
    let top = s.trim_end_matches('/').split('/').next()?.to_string();
    (!top.is_empty()).then_some(top)
}

async fn volume_identity(
    engine: &dyn Engine,
    c: &ContainerInfo,
    data_dir: &str,
    declared: Option<&str>,
) -> Result<VolumeIdentity> {
    let mount = mount_for(&c.mounts, data_dir);
    let (kind, name, mount_target) = match mount {
        Some(m) => (
            match m.kind {
                MountKind::Volume => "volume",
                MountKind::Bind => "bind",
                MountKind::Tmpfs => "tmpfs",
            },
            Some(m.name_or_source.clone()).filter(|s| !s.is_empty()),
            Some(m.target.clone()),
        ),
        None => match declared {
            Some(v) => ("volume", Some(v.to_string()), None),
            None => ("container", None, None),
        },
    };
    let mut id = VolumeIdentity {
        kind: kind.to_string(),
        name: name.clone(),
        mount_target,
        created_at: None,
        labels: Default::default(),
        driver: None,
    };
    if kind == "volume" {
        if let Some(n) = &name {
            if let Some(v) = engine.inspect_volume(n).await? {
                id.created_at = v.created_at;
                id.labels = v.labels;
                id.driver = Some(v.driver);
            }
        }
    }
    Ok(id)
}

/// The one-line summary of a new snapshot (and the unclean warning).
pub fn report_taken(ui: &Ui, m: &Manifest) {
    let secs = (m.duration_ms as f64 / 1000.0).max(0.001);
    ui.success(format!(
        "snapshot {} of {}: {} → {} in {:.1}s ({}/s)",
        m.id,
        m.service,
        human_bytes(m.archive.raw_bytes),
        human_bytes(m.archive.compressed_bytes),
        secs,
        human_bytes((m.archive.raw_bytes as f64 / secs) as u64),
    ));
    if let Some(why) = &m.unclean_reason {
        ui.warn(format!(
            "snapshot {} of {} is NOT clean: {why}. It is kept and marked unclean; postgres would run crash recovery if it were restored",
            m.id, m.service
        ));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapshot::hook::auto_prune;
    use crate::stack::xnodus::Retention;

    #[test]
    fn tar_top_reads_the_first_entry() {
        let raw = crate::snapshot::cas::tests::tar_of(&[]);
        assert_eq!(tar_top(&raw[..512]).as_deref(), Some("data"));
        assert_eq!(tar_top(&[0u8; 10]), None);
    }

    /// A tiny data dir archive (top entry `data`).
    pub(crate) fn data_tar(content: &[u8]) -> Vec<u8> {
        crate::snapshot::cas::tests::tar_of(&[("PG_VERSION", content, 0)])
    }

    /// A store-backed snapshot of volume `volume` created at `at`.
    pub(crate) fn stored(store: &SnapshotStore, id: &str, at: &str, volume: &str) -> Manifest {
        let mut m = manifest::tests::sample(id);
        m.archive.top = String::new();
        m.created_at = at.into();
        m.volume.name = Some(volume.into());
        crate::snapshot::import_tar(store, m, &mut &data_tar(id.as_bytes())[..]).unwrap()
    }

    /// The prune after new snapshots collects the store's garbage only when it deleted one: a
    /// pack nothing indexes (what a writer killed mid-way leaves) stays until then.
    #[test]
    fn the_automatic_prune_collects_garbage_only_after_deleting() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path().join("snapshots/demo")).unwrap();
        let a = stored(
            &store,
            "20250101T000000Z-db-aaaaaa",
            "2025-01-01T00:00:00Z",
            "v",
        );
        stored(
            &store,
            "20250102T000000Z-db-bbbbbb",
            "2025-01-02T00:00:00Z",
            "v",
        );
        let cas = crate::snapshot::cas::Cas::open(store.cas_dir()).unwrap();
        let orphan = cas.pack_path(&[7; 32]);
        std::fs::write(&orphan, b"orphan pack").unwrap();
        let groups = [a.retention_key()];

        let keep = |n| Retention {
            last: Some(n),
            ..Default::default()
        };
        let (removed, collected) = auto_prune(&store, &keep(2), &groups).unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(
            collected.is_empty(),
            "no collection when nothing was deleted"
        );
        assert!(orphan.exists());

        let (removed, collected) = auto_prune(&store, &keep(1), &groups).unwrap();
        assert_eq!(removed, std::slice::from_ref(&a.id));
        assert_eq!(collected.len(), 1);
        assert!(collected[0].result.is_ok(), "{:?}", collected[0].result);
        assert!(!orphan.exists(), "collected once a snapshot was deleted");
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn the_mtime_cutoff_is_the_stop_on_the_engines_clock() {
        let mut c = crate::guard::testutil::container(&[], &[]);
        c.state = crate::engine::RunState::Exited;
        c.finished_at = Some("2026-12-05T10:00:07.912345678Z".into());
        assert_eq!(mtime_cutoff(&c), Some(1796464807));
        c.finished_at = Some("0001-01-01T00:00:00Z".into());
        assert_eq!(mtime_cutoff(&c), None, "never stopped");
        c.finished_at = Some("2026-12-05T10:00:07Z".into());
        c.state = crate::engine::RunState::Running;
        assert_eq!(
            mtime_cutoff(&c),
            None,
            "running: its files may change while read"
        );
        c.state = crate::engine::RunState::Exited;
        c.finished_at = None;
        assert_eq!(mtime_cutoff(&c), None);
    }

    #[test]
    fn dirs_are_normalized() {
        assert_eq!(
            normalize_dir("/var/lib/postgresql/data/"),
            "/var/lib/postgresql/data"
        );
        assert_eq!(normalize_dir("/"), "/");
    }
}
