//! What the `snapshot` and `backup` commands do, as operations the thin command files call:
//! choosing services and snapshots, the create and restore flows (stop, snapshot or replace,
//! start again, compare censuses), verification loops, retention and the listings' data.
//!
//! Status lines go to stderr through [`Ui`]; data for stdout (tables, JSON values) is returned
//! to the command, which prints it. Confirmations and the commands shown to the user stay in
//! the command files.

pub mod backup;
pub mod create;
pub mod restore;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::json;

use super::cas::gc::Stats;
use super::cas::verify::StoreCheck;
use super::cas::Cas;
use super::restore::{CensusCheck, RestoreTarget, SafetyInfo};
use super::retention::Decision;
use super::verify;
use super::{human_bytes, Manifest, SnapshotEntry, SnapshotStore};
use crate::engine::{Engine, MountKind, MountSpec};
use crate::lifecycle::Report;
use crate::output::Ui;
use crate::project::Project;
use crate::stack::StatefulService;

/// How long restarted services may take to become healthy.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Opens the project's store, saying which interrupted snapshots were removed.
pub fn open_store(project: &Project, ui: &Ui) -> anyhow::Result<SnapshotStore> {
    let (store, cleaned) = SnapshotStore::open(project.state.snapshots_dir(project.name()))?;
    let store = store.for_stack(project);
    for c in cleaned {
        ui.status(format!(
            "removed interrupted snapshot {c} (its writer did not finish)"
        ));
    }
    Ok(store)
}

/// The stack files as recorded in manifests.
pub fn stack_files(project: &Project) -> Vec<String> {
    project
        .stack
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// The stateful services named (all when empty); an error for a named one that is not stateful.
pub fn stateful_services(
    project: &Project,
    names: &[String],
) -> anyhow::Result<Vec<StatefulService>> {
    project.stack.check_services(names)?;
    let all = &project.hardened.stateful;
    if names.is_empty() {
        if all.is_empty() {
            bail!(
                "this stack has no stateful services (databases with a data directory) to snapshot"
            );
        }
        return Ok(all.clone());
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|s| &s.service == n).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "service {n} is not stateful (no data directory nodus knows of); set x-nodus.services.{n}.stateful: true and data_dir"
                )
            })
        })
        .collect()
}

pub(crate) fn merge_reports(a: &mut Report, b: Report) {
    a.created.extend(b.created);
    a.recreated.extend(b.recreated);
    a.started.extend(b.started);
    a.unchanged.extend(b.unchanged);
    a.stopped.extend(b.stopped);
    a.removed.extend(b.removed);
    a.volumes_created.extend(b.volumes_created);
    a.volumes_removed.extend(b.volumes_removed);
    a.evidence.extend(b.evidence);
}

pub(crate) fn safety_info<'a>(st: &'a StatefulService, files: &'a [String]) -> SafetyInfo<'a> {
    SafetyInfo {
        kind: st.kind,
        volume_name: st.volume_name.as_deref(),
        stack_files: files,
    }
}

/// Where a service's data lives when it has no container: the snapshot's recorded mount, or
/// the volume the stack declares. Also says whether that volume exists (it must carry the
/// project's labels when it does).
pub(crate) async fn offline_target(
    engine: &dyn Engine,
    project: &Project,
    st: &StatefulService,
    recorded: Option<&Manifest>,
) -> anyhow::Result<(RestoreTarget, bool)> {
    let image = project
        .hardened
        .compose
        .services
        .get(&st.service)
        .and_then(|s| s.image.clone())
        .or_else(|| recorded.map(|m| m.image.clone()))
        .with_context(|| {
            format!(
                "service {} has no image to run a helper container from",
                st.service
            )
        })?;
    let volume = st.volume_name.clone().with_context(|| {
        format!(
            "{} keeps {} outside a named volume and has no container; start it with `nodus up {}` first",
            st.service, st.data_dir, st.service
        )
    })?;
    let mount_target = recorded
        .filter(|m| m.volume.name.as_deref() == Some(volume.as_str()))
        .and_then(|m| m.volume.mount_target.clone())
        .unwrap_or_else(|| st.data_dir.clone());
    let exists = match engine.inspect_volume(&volume).await? {
        Some(v) if !crate::labels::owned_by(&v.labels, project.name()) => bail!(
            "volume {volume} does not carry the labels of project {}; nodus will not touch it",
            project.name()
        ),
        Some(_) => true,
        None => false,
    };
    let target = RestoreTarget {
        project: project.name().to_string(),
        service: st.service.clone(),
        image,
        data_dir: st.data_dir.clone(),
        mount: MountSpec {
            kind: MountKind::Volume,
            source: volume,
            target: mount_target,
            read_only: false,
        },
    };
    Ok((target, exists))
}

/// Creates a service's missing volume with the labels `up` would give it.
pub(crate) async fn create_volume(
    engine: &dyn Engine,
    project: &Project,
    st: &StatefulService,
    name: &str,
) -> anyhow::Result<()> {
    let mut l = crate::labels::base(project.name());
    if let Some(k) = &st.volume_key {
        l.insert(crate::labels::VOLUME.to_string(), k.clone());
    }
    engine.create_volume(name, &l).await?;
    Ok(())
}

/// How the census after a restore or a backup load compares with the recorded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CensusVerdict {
    /// Identical.
    Match,
    /// Everything recorded is there, plus more.
    Superset,
    /// Something recorded is missing.
    Mismatch,
    /// Nothing recorded to compare with.
    NoBaseline,
    /// The census afterwards could not be taken.
    Unverified,
}

impl CensusVerdict {
    /// The verdict and its detail lines for a census comparison.
    pub fn from_check(check: CensusCheck) -> (CensusVerdict, Vec<String>) {
        use super::restore::describe_diff;
        match check {
            CensusCheck::Exact => (CensusVerdict::Match, vec![]),
            CensusCheck::Superset(d) => (CensusVerdict::Superset, describe_diff(&d)),
            CensusCheck::Mismatch(d) => (CensusVerdict::Mismatch, describe_diff(&d)),
            CensusCheck::NoBaseline(why) => (CensusVerdict::NoBaseline, vec![why]),
        }
    }

    /// True when the data does not (or could not be shown to) hold what was recorded.
    pub fn is_problem(self) -> bool {
        matches!(self, CensusVerdict::Mismatch | CensusVerdict::Unverified)
    }
}

// ---------------------------------------------------------------------------------------------
// list / show

/// One snapshot as `snapshot list --json` shows it.
pub fn entry_json(e: &SnapshotEntry) -> serde_json::Value {
    let v = e.verification.as_ref();
    match &e.manifest {
        Ok(m) => json!({
            "id": e.id,
            "service": m.service,
            "kind": m.kind,
            "volume": m.volume.name,
            "created_at": m.created_at,
            "reason": m.reason,
            "raw_bytes": m.archive.raw_bytes,
            "compressed_bytes": m.archive.compressed_bytes,
            "format": if m.store.is_some() { "store" } else { "file" },
            "added_bytes": m.store.as_ref().map(|s| s.added_bytes),
            "reused_bytes": m.store.as_ref().map(|s| s.reused_bytes),
            "store": m.store.as_ref().map(|s| s.path.clone()),
            "clean": m.clean,
            "holds": holds(m),
            "verified": v.map(|v| v.ok && v.sha256 == m.archive.sha256),
            "verified_at": v.map(|v| v.verified_at.clone()),
            "verify_error": v.and_then(|v| v.error.clone()),
            "path": e.dir,
        }),
        Err(err) => json!({ "id": e.id, "error": err, "path": e.dir }),
    }
}

/// The `snapshot list` table: header and one row per snapshot, aligned.
pub fn list_table(entries: &[SnapshotEntry]) -> Vec<String> {
    let mut rows = vec![[
        "ID",
        "SERVICE",
        "VOLUME",
        "TAKEN (UTC)",
        "SIZE",
        "STORED",
        "REASON",
        "CLEAN",
        "VERIFIED",
        "HOLDS",
    ]
    .map(String::from)
    .to_vec()];
    for e in entries {
        rows.push(match &e.manifest {
            Ok(m) => vec![
                e.id.clone(),
                m.service.clone(),
                m.volume.name.clone().unwrap_or_else(|| "-".into()),
                e.created()
                    .map(|c| c.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                human_bytes(m.archive.raw_bytes),
                match &m.store {
                    // What this snapshot added to the deduplicating store.
                    Some(s) => format!("+{}", human_bytes(s.added_bytes)),
                    None => human_bytes(m.archive.compressed_bytes),
                },
                m.reason.as_str().into(),
                if m.clean { "yes".into() } else { "NO".into() },
                if e.verified_ok() {
                    "yes".into()
                } else if e.verified_bad() {
                    "CORRUPT".into()
                } else {
                    "-".into()
                },
                holds(m),
            ],
            Err(err) => vec![e.id.clone(), format!("unreadable manifest: {err}")],
        });
    }
    align(&rows)
}

/// What a snapshot holds, from the census taken before its stop: "2 databases, 5 tables, 120
/// rows" (or "-" when it has none, "?" when it cannot be read).
pub fn holds(m: &Manifest) -> String {
    let Some(c) = &m.census else {
        return "-".into();
    };
    match serde_json::from_value::<crate::guard::census::ServiceCensus>(c.clone()) {
        Ok(census) if census.is_available() => {
            let mut t = crate::guard::census::Totals::default();
            t.add_service(&m.service, &census);
            t.summary()
        }
        Ok(_) => "-".into(),
        Err(_) => "?".into(),
    }
}

/// Aligns the columns of full rows; a shorter row (an error) is printed as it is.
fn align(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter(|r| r.len() == cols)
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i + 1 == r.len() {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect();
            line.join("  ").trim_end().to_string()
        })
        .collect()
}

/// `snapshot show`: the manifest with its verification and path.
pub fn show_json(store: &SnapshotStore, id: &str) -> anyhow::Result<serde_json::Value> {
    let e = store.get(id)?;
    let m = e.manifest_checked()?;
    let mut v = serde_json::to_value(&m)?;
    v["verification"] = serde_json::to_value(&e.verification)?;
    v["path"] = json!(e.dir);
    Ok(v)
}

/// `snapshot show` as text: one "key: value" line per fact, the census per database.
pub fn show_lines(store: &SnapshotStore, id: &str) -> anyhow::Result<Vec<String>> {
    let e = store.get(id)?;
    let m = e.manifest_checked()?;
    let mut out = vec![
        format!("snapshot:   {}", m.id),
        format!("project:    {}", m.project),
        format!("service:    {} ({:?})", m.service, m.kind).to_lowercase(),
        format!(
            "volume:     {} {}",
            m.volume.kind,
            m.volume.name.as_deref().unwrap_or("-")
        ),
        format!("data dir:   {}", m.data_dir),
        format!("image:      {}", m.image),
        format!(
            "taken:      {} ({}, {} ms)",
            m.created_at,
            m.reason.as_str(),
            m.duration_ms
        ),
        format!(
            "size:       {} ({} stored, {} level {})",
            human_bytes(m.archive.raw_bytes),
            human_bytes(m.archive.compressed_bytes),
            m.archive.compression,
            m.archive.level
        ),
        match &m.store {
            Some(st) => format!(
                "store:      {} ({} chunks, {} new, {} added{})",
                st.path,
                st.chunks,
                st.new_chunks,
                human_bytes(st.added_bytes),
                match &st.reused_from {
                    Some(from) if st.reused_bytes > 0 => format!(
                        "; {} of unchanged files taken from {from} unread",
                        human_bytes(st.reused_bytes)
                    ),
                    _ => String::new(),
                }
            ),
            None => format!("sha256:     {}", m.archive.sha256),
        },
        format!(
            "clean:      {}",
            if m.clean {
                "yes".to_string()
            } else {
                format!("NO ({})", m.unclean_reason.as_deref().unwrap_or("unknown"))
            }
        ),
        format!(
            "verified:   {}",
            match &e.verification {
                Some(v) if v.ok && v.sha256 == m.archive.sha256 =>
                    format!("yes, {} ({} entries)", v.verified_at, v.entries),
                Some(v) => format!(
                    "FAILED {}: {}",
                    v.verified_at,
                    v.error.as_deref().unwrap_or("checksum mismatch")
                ),
                None => "not yet (`nodus snapshot verify`)".to_string(),
            }
        ),
        format!("holds:      {}", holds(&m)),
    ];
    if let Some(crate::guard::census::ServiceCensus::Postgres(pg)) = m
        .census
        .as_ref()
        .and_then(|c| serde_json::from_value::<crate::guard::census::ServiceCensus>(c.clone()).ok())
    {
        for (db, d) in &pg.databases {
            out.push(format!(
                "  database {db}:{}",
                if d.tables.is_empty() {
                    " no tables"
                } else {
                    ""
                }
            ));
            for (table, rows) in &d.tables {
                out.push(format!("    {table}  {} rows", rows.rows));
            }
        }
    }
    out.push(format!("path:       {}", e.dir.display()));
    Ok(out)
}

/// "snapshot <id> of <service> (<size>, taken <time>)", for confirmations.
pub fn describe_entry(e: &SnapshotEntry) -> String {
    match &e.manifest {
        Ok(m) => format!(
            "snapshot {} of {} ({}, taken {})",
            e.id,
            m.service,
            human_bytes(m.archive.compressed_bytes),
            m.created_at
        ),
        Err(_) => format!("snapshot {} (unreadable manifest)", e.id),
    }
}

// ---------------------------------------------------------------------------------------------
// verify / prune

/// The outcome of verifying several snapshots.
#[derive(Debug, Default)]
pub struct Verified {
    /// One JSON object per snapshot (`id`, `ok`, `entries` or `error`).
    pub results: Vec<serde_json::Value>,
    /// Damaged or missing chunks of the snapshot stores, with the snapshots using each.
    pub damage: Vec<crate::snapshot::cas::verify::Damage>,
    /// The ids that failed.
    pub bad: Vec<String>,
}

impl Verified {
    /// An error naming the snapshots that failed, if any did.
    pub fn result(&self) -> anyhow::Result<()> {
        if !self.bad.is_empty() {
            bail!(
                "{} of {} {} failed verification: {}",
                self.bad.len(),
                self.results.len(),
                crate::guard::census::plural(self.results.len(), "snapshot", "snapshots"),
                self.bad.join(", ")
            );
        }
        Ok(())
    }
}

/// Checks the chunks of the store-backed snapshots among `entries`, one pass per store.
async fn store_checks(
    entries: &[SnapshotEntry],
    read_data: bool,
) -> BTreeMap<String, Result<Arc<StoreCheck>, String>> {
    let mut by_store: BTreeMap<String, (PathBuf, String, Vec<String>)> = BTreeMap::new();
    for e in entries {
        if let Ok(Manifest { store: Some(s), .. }) = &e.manifest {
            by_store
                .entry(s.store_id.clone())
                .or_insert_with(|| (PathBuf::from(&s.path), s.store_id.clone(), Vec::new()))
                .2
                .push(e.id.clone());
        }
    }
    let mut out = BTreeMap::new();
    for (key, (path, id, ids)) in by_store {
        let r = tokio::task::spawn_blocking(move || {
            Cas::open_existing(&path, &id)
                .and_then(|c| crate::snapshot::cas::verify::check(&c, Some(&ids), read_data))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map(Arc::new);
        out.insert(key, r);
    }
    out
}

/// Verifies every snapshot (recording the outcome beside it), saying how each went: single-file
/// archives are read to the end against their checksum; store-backed snapshots have their chunks
/// and packs checked, and with `read_data` every chunk decompressed and re-hashed and the tar
/// read to the end. A damaged chunk is named with every snapshot that uses it.
pub async fn verify_entries(
    store: &SnapshotStore,
    entries: &[SnapshotEntry],
    read_data: bool,
    ui: &Ui,
) -> Verified {
    let mut out = Verified::default();
    let checks = store_checks(entries, read_data).await;
    for c in checks.values() {
        match c {
            Ok(c) => {
                for d in &c.damage {
                    let what = match (&d.chunk, &d.pack) {
                        (Some(c), Some(p)) => format!("chunk {} (pack {})", &c[..16], &p[..16]),
                        (Some(c), None) => format!("chunk {}", &c[..16]),
                        (None, Some(p)) => format!("pack {}", &p[..16]),
                        (None, None) => "?".into(),
                    };
                    ui.error(format!(
                        "store: {what}: {} — used by {}",
                        d.reason,
                        if d.snapshots.is_empty() {
                            "no snapshot".to_string()
                        } else {
                            d.snapshots.join(", ")
                        }
                    ));
                }
                out.damage.extend(c.damage.iter().cloned());
            }
            Err(e) => ui.error(format!("store check failed: {e}")),
        }
    }
    for e in entries {
        let (total, check) = match &e.manifest {
            Ok(m) => match &m.store {
                Some(s) => (
                    Some(m.archive.raw_bytes),
                    match checks.get(&s.store_id) {
                        Some(Ok(c)) => Some(c.clone()),
                        _ => None,
                    },
                ),
                None => (Some(m.archive.compressed_bytes), None),
            },
            Err(_) => (None, None),
        };
        let chunked = e.manifest.as_ref().is_ok_and(|m| m.store.is_some());
        let pb = ui.bytes_progress(format!("verify {}", e.id), total);
        match verify::verify_entry_with(store, e, check, read_data, pb).await {
            Ok(r) => {
                if chunked && !read_data {
                    ui.success(format!(
                        "{}: {} chunks present, packs intact (--read-data also re-hashes every chunk)",
                        e.id, r.compressed_bytes
                    ));
                } else {
                    ui.success(format!(
                        "{}: {} ok, {} entries, {} of tar read to the end",
                        e.id,
                        if chunked { "every chunk" } else { "sha256" },
                        r.entries,
                        human_bytes(r.raw_bytes)
                    ));
                }
                out.results
                    .push(json!({ "id": e.id, "ok": true, "entries": r.entries }));
            }
            Err(err) => {
                ui.error(format!("{}: {err}", e.id));
                out.results
                    .push(json!({ "id": e.id, "ok": false, "error": err.to_string() }));
                out.bad.push(e.id.clone());
            }
        }
    }
    out
}

/// `snapshot stats`: the stores this project's snapshots use (and the one new snapshots go to).
pub fn store_stats(store: &SnapshotStore) -> anyhow::Result<Vec<Stats>> {
    let mut dirs: Vec<(PathBuf, Option<String>)> = vec![(store.cas_dir().to_path_buf(), None)];
    for e in store.list()? {
        if let Ok(Manifest { store: Some(s), .. }) = &e.manifest {
            let p = PathBuf::from(&s.path);
            if !dirs.iter().any(|(d, _)| d == &p) {
                dirs.push((p, Some(s.store_id.clone())));
            }
        }
    }
    let mut out = Vec::new();
    for (dir, id) in dirs {
        let cas = match id {
            Some(id) => Cas::open_existing(&dir, &id)?,
            None if dir.join("config").is_file() => Cas::open(&dir)?,
            None => continue,
        };
        out.push(crate::snapshot::cas::gc::stats(&cas)?);
    }
    Ok(out)
}

/// `snapshot stats` as text.
pub fn stats_lines(stats: &[Stats]) -> Vec<String> {
    if stats.is_empty() {
        return vec!["no snapshot store yet (the first snapshot creates it)".into()];
    }
    let mut out = Vec::new();
    for s in stats {
        out.push(format!("store:        {}", s.path));
        out.push(format!(
            "snapshots:    {} ({} of tar together)",
            s.snapshots,
            human_bytes(s.logical_bytes)
        ));
        out.push(format!(
            "stored:       {} in {} packs, {} unique chunks",
            human_bytes(s.store_bytes),
            s.packs,
            s.unique_chunks
        ));
        out.push(format!("dedup ratio:  {:.1}x", s.dedup_ratio));
        out.push(format!(
            "reclaimable:  {} (`nodus snapshot prune` collects it)",
            human_bytes(s.reclaimable_bytes)
        ));
    }
    out
}

/// The `snapshot prune` listing (stdout lines, grouped) and its closing summary (stderr).
pub fn prune_listing(decisions: &[Decision], dry_run: bool) -> (Vec<String>, String) {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut lines = Vec::new();
    // Each volume once, with all its snapshots (decisions come in snapshot order, which
    // interleaves volumes).
    let mut groups: Vec<&str> = Vec::new();
    for d in decisions {
        if !groups.contains(&d.group.as_str()) {
            groups.push(&d.group);
        }
    }
    for group in groups {
        lines.push(format!("{}:", group.replacen(':', " ", 1)));
        for d in decisions.iter().filter(|d| d.group == group) {
            if d.keep {
                lines.push(format!("  keep    {}  ({})", d.id, d.reasons.join(", ")));
            } else {
                lines.push(format!("  {verb}  {}", d.id));
            }
        }
    }
    let removed = decisions.iter().filter(|d| !d.keep).count();
    let summary = format!(
        "{verb} {removed} {}, kept {}",
        crate::guard::census::plural(removed, "snapshot", "snapshots"),
        decisions.len() - removed
    );
    (lines, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_pads_full_rows_and_leaves_short_ones() {
        let rows = vec![
            vec!["ID".into(), "SERVICE".into(), "X".into()],
            vec!["abcdef".into(), "db".into(), "1".into()],
            vec!["bad".into(), "unreadable manifest: x".into()],
        ];
        assert_eq!(
            align(&rows),
            vec![
                "ID      SERVICE  X",
                "abcdef  db       1",
                "bad     unreadable manifest: x"
            ]
        );
    }

    #[test]
    fn prune_listing_groups_and_counts() {
        let d = |id: &str, group: &str, keep: bool| Decision {
            id: id.into(),
            group: group.into(),
            keep,
            reasons: if keep { vec!["last 1".into()] } else { vec![] },
        };
        let (lines, summary) = prune_listing(
            &[
                d("a", "volume:x", false),
                d("c", "volume:y", true),
                d("b", "volume:x", true),
            ],
            true,
        );
        assert_eq!(
            lines,
            vec![
                "volume x:",
                "  would remove  a",
                "  keep    b  (last 1)",
                "volume y:",
                "  keep    c  (last 1)"
            ]
        );
        assert_eq!(summary, "would remove 1 snapshot, kept 2");
    }

    #[test]
    fn census_verdicts_serialize_as_before() {
        assert_eq!(
            serde_json::to_value(CensusVerdict::NoBaseline).unwrap(),
            "no-baseline"
        );
        assert_eq!(serde_json::to_value(CensusVerdict::Match).unwrap(), "match");
        assert!(CensusVerdict::Unverified.is_problem());
        assert!(!CensusVerdict::Superset.is_problem());
    }
}
