//! `nodus snapshot create|list|show|verify|delete|prune|restore`.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::json;

use super::hooks::{Session, SessionOptions};
use super::Ctx;
use crate::cli::SnapshotCommand;
use crate::engine::{Engine, MountKind, MountSpec, RunState};
use crate::error::UsageError;
use crate::guard::census::{self, CensusOptions};
use crate::lifecycle::{Lifecycle, Report, RunningService, Transition, UpOptions};
use crate::project::Project;
use crate::snapshot::manifest::Reason;
use crate::snapshot::restore::{self, CensusCheck, RestoreTarget, SafetyInfo};
use crate::snapshot::{
    human_bytes, mount_for, verify, Manifest, SnapshotEntry, SnapshotHook, SnapshotStore,
};
use crate::stack::StatefulService;

/// How long restarted services may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(ctx: &Ctx, cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Create { services } => create(ctx, services).await,
        SnapshotCommand::List => list(ctx),
        SnapshotCommand::Show { id } => show(ctx, &id),
        SnapshotCommand::Verify { id, all } => verify_cmd(ctx, id, all).await,
        SnapshotCommand::Delete { id } => delete(ctx, &id),
        SnapshotCommand::Prune { dry_run } => prune(ctx, dry_run),
        SnapshotCommand::Restore {
            id,
            latest,
            services,
            no_safety,
        } => restore_cmd(ctx, id, latest, services, no_safety).await,
    }
}

/// Opens the project's store, saying which interrupted snapshots were removed.
pub fn open_store(ctx: &Ctx, project: &Project) -> anyhow::Result<SnapshotStore> {
    let (store, cleaned) = SnapshotStore::open(project.state.snapshots_dir(project.name()))?;
    for c in cleaned {
        ctx.ui.status(format!(
            "removed interrupted snapshot {c} (its writer did not finish)"
        ));
    }
    Ok(store)
}

fn lifecycle<'a>(ctx: &'a Ctx, project: &'a Project, engine: &'a dyn Engine) -> Lifecycle<'a> {
    Lifecycle {
        engine,
        project: project.name(),
        hardened: &project.hardened,
        ui: &ctx.ui,
        working_dir: &project.dir,
        config_files: stack_files(project),
    }
}

/// `nodus` plus the global flags needed to address this stack again (`-f`, `-p`, `--state-dir`),
/// for commands printed to the user.
pub(crate) fn nodus_cmd(ctx: &Ctx, project: &Project) -> String {
    let mut s = String::from("nodus");
    for f in &ctx.global.stack {
        s.push_str(&format!(" -f {}", shell_word(&f.display().to_string())));
    }
    if project.stack.project_source == crate::stack::ProjectSource::Flag {
        s.push_str(&format!(" -p {}", project.name()));
    }
    if let Some(d) = &ctx.global.state_dir {
        s.push_str(&format!(
            " --state-dir {}",
            shell_word(&d.display().to_string())
        ));
    }
    s
}

/// Quotes a word for a POSIX shell when it needs it.
pub(crate) fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

fn stack_files(project: &Project) -> Vec<String> {
    project
        .stack
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// The stateful services named (all when empty); an error for a named one that is not stateful.
fn stateful_services(project: &Project, names: &[String]) -> anyhow::Result<Vec<StatefulService>> {
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

fn merge_reports(a: &mut Report, b: Report) {
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

fn safety_info<'a>(st: &'a StatefulService, files: &'a [String]) -> SafetyInfo<'a> {
    SafetyInfo {
        kind: st.kind,
        volume_name: st.volume_name.as_deref(),
        stack_files: files,
    }
}

// ---------------------------------------------------------------------------------------------
// create

async fn create(ctx: &Ctx, services: Vec<String>) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let targets = stateful_services(&project, &services)?;
    let engine = ctx.engine().await?;
    let _lock = ctx.lock(&project)?;
    let store = open_store(ctx, &project)?;
    let files = stack_files(&project);
    let lc = lifecycle(ctx, &project, &*engine);

    let mut running = Vec::new();
    let mut offline = Vec::new();
    for st in &targets {
        match restore::service_container(&*engine, project.name(), &st.service).await? {
            Some(c) if c.state == RunState::Running => running.push(st.service.clone()),
            c => offline.push((st.clone(), c)),
        }
    }

    let mut taken: Vec<Manifest> = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();

    // Services that are not running: their data is at rest, snapshot it as it is.
    for (st, container) in &offline {
        let result = match container {
            Some(c) => {
                let req = crate::snapshot::SnapshotRequest {
                    project: project.name(),
                    service: &st.service,
                    kind: st.kind,
                    container: c,
                    data_dir: &st.data_dir,
                    volume_name: st.volume_name.as_deref(),
                    stack_files: &files,
                    census: None,
                    evidence: None,
                    reason: Reason::Manual,
                };
                crate::snapshot::snapshot_container(&*engine, &store, req, &ctx.ui).await
            }
            None => match offline_target(&*engine, &project, st, None).await {
                Ok((target, false)) => Err(crate::snapshot::SnapshotError::Other(format!(
                    "{} has no container and its volume {} does not exist: nothing to snapshot",
                    st.service, target.mount.source
                ))),
                Ok((target, true)) => {
                    restore::snapshot_via_helper(
                        &*engine,
                        &target,
                        &store,
                        safety_info(st, &files),
                        Reason::Manual,
                        &ctx.ui,
                    )
                    .await
                }
                Err(e) => Err(crate::snapshot::SnapshotError::Other(format!("{e:#}"))),
            },
        };
        match result {
            Ok(m) => {
                crate::snapshot::create::report_taken(&ctx.ui, &m);
                taken.push(m);
            }
            Err(e) => {
                ctx.ui
                    .warn(format!("snapshot of {} failed: {e}", st.service));
                failed.push((st.service.clone(), e.to_string()));
            }
        }
    }

    // Running services: guarded clean stop, snapshot (in the hook), start again.
    if !running.is_empty() {
        let mut session = Session::new(
            ctx,
            &project,
            engine.clone(),
            Transition::Restart,
            SessionOptions { no_snapshot: true },
        )?;
        let hook = SnapshotHook::new(&project, engine.clone(), &ctx.ui)
            .with_reason(Reason::Manual)
            .only(running.clone())
            // Retention runs after automatic snapshots (and `snapshot prune`), not manual ones.
            .without_prune();
        let outcome = hook.outcome();
        session.chain.0.push(Box::new(hook));
        ctx.ui.status(format!(
            "stopping {} cleanly to snapshot...",
            running.join(", ")
        ));
        let mut report = lc.stop(&running, None, &mut session.chain).await?;
        // Whatever happened to the snapshots, the services go back up.
        let started = lc
            .start(
                &UpOptions {
                    services: running.clone(),
                    timeout: START_TIMEOUT,
                },
                &mut session.chain,
            )
            .await
            .with_context(|| format!("starting {} again after the snapshot", running.join(", ")))?;
        merge_reports(&mut report, started);
        let o = outcome.lock().unwrap_or_else(|p| p.into_inner()).clone();
        taken.extend(o.taken);
        failed.extend(o.failed);
        for s in &running {
            if !taken.iter().any(|m| &m.service == s) && !failed.iter().any(|(f, _)| f == s) {
                failed.push((
                    s.clone(),
                    "the service was not stopped, so no snapshot was taken".into(),
                ));
            }
        }
        session.finish(ctx, &report)?;
    }

    if ctx.ui.json {
        ctx.ui.json_out(&json!({ "snapshots": taken, "failed": failed.iter().map(|(s, e)| json!({"service": s, "error": e})).collect::<Vec<_>>() }));
    }
    if !failed.is_empty() {
        bail!(
            "snapshot failed for {}",
            failed
                .iter()
                .map(|(s, e)| format!("{s} ({e})"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

/// Where a service's data lives when it has no container: the snapshot's recorded mount, or
/// the volume the stack declares. Also says whether that volume exists (it must carry the
/// project's labels when it does).
async fn offline_target(
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
async fn create_volume(
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

// ---------------------------------------------------------------------------------------------
// list / show

fn entry_json(e: &SnapshotEntry) -> serde_json::Value {
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
            "clean": m.clean,
            "verified": v.map(|v| v.ok && v.sha256 == m.archive.sha256),
            "verified_at": v.map(|v| v.verified_at.clone()),
            "verify_error": v.and_then(|v| v.error.clone()),
            "path": e.dir,
        }),
        Err(err) => json!({ "id": e.id, "error": err, "path": e.dir }),
    }
}

fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let store = open_store(ctx, &project)?;
    let entries = store.list()?;
    if ctx.ui.json {
        ctx.ui
            .json_out(&entries.iter().map(entry_json).collect::<Vec<_>>());
        return Ok(());
    }
    if entries.is_empty() {
        ctx.ui
            .status(format!("no snapshots of project {} yet", project.name()));
        return Ok(());
    }
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
    ]
    .map(String::from)
    .to_vec()];
    for e in &entries {
        rows.push(match &e.manifest {
            Ok(m) => vec![
                e.id.clone(),
                m.service.clone(),
                m.volume.name.clone().unwrap_or_else(|| "-".into()),
                e.created()
                    .map(|c| c.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                human_bytes(m.archive.raw_bytes),
                human_bytes(m.archive.compressed_bytes),
                m.reason.as_str().into(),
                if m.clean { "yes".into() } else { "NO".into() },
                if e.verified_ok() {
                    "yes".into()
                } else if e.verified_bad() {
                    "CORRUPT".into()
                } else {
                    "-".into()
                },
            ],
            Err(err) => vec![e.id.clone(), format!("unreadable manifest: {err}")],
        });
    }
    print_table(ctx, &rows);
    Ok(())
}

fn print_table(ctx: &Ctx, rows: &[Vec<String>]) {
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
    for r in rows {
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
        ctx.ui.data(line.join("  ").trim_end());
    }
}

fn show(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let store = SnapshotStore::at(project.state.snapshots_dir(project.name()));
    let e = store.get(id)?;
    let m = e
        .manifest
        .clone()
        .map_err(|reason| crate::snapshot::SnapshotError::BadManifest {
            id: e.id.clone(),
            path: e.dir.join(crate::snapshot::manifest::MANIFEST_FILE),
            reason,
        })?;
    let mut v = serde_json::to_value(&m)?;
    v["verification"] = serde_json::to_value(&e.verification)?;
    v["path"] = json!(e.dir);
    ctx.ui.json_out(&v);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// verify / delete / prune

async fn verify_cmd(ctx: &Ctx, id: Option<String>, all: bool) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let store = open_store(ctx, &project)?;
    let entries = match (id, all) {
        (Some(id), _) => vec![store.get(&id)?],
        (None, true) => store.list()?,
        (None, false) => return Err(UsageError("give a snapshot ID or --all".into()).into()),
    };
    let mut results = Vec::new();
    let mut bad = Vec::new();
    for e in &entries {
        let total = e.manifest.as_ref().ok().map(|m| m.archive.compressed_bytes);
        let pb = ctx.ui.bytes_progress(format!("verify {}", e.id), total);
        match verify::verify_entry(&store, e, pb).await {
            Ok(r) => {
                ctx.ui.success(format!(
                    "{}: sha256 ok, {} entries, {} of tar read to the end",
                    e.id,
                    r.entries,
                    human_bytes(r.raw_bytes)
                ));
                results.push(json!({ "id": e.id, "ok": true, "entries": r.entries }));
            }
            Err(err) => {
                ctx.ui.error(format!("{}: {err}", e.id));
                results.push(json!({ "id": e.id, "ok": false, "error": err.to_string() }));
                bad.push(e.id.clone());
            }
        }
    }
    if ctx.ui.json {
        ctx.ui.json_out(&results);
    }
    if !bad.is_empty() {
        bail!(
            "{} of {} snapshot(s) failed verification: {}",
            bad.len(),
            entries.len(),
            bad.join(", ")
        );
    }
    if entries.is_empty() {
        ctx.ui.status("no snapshots to verify");
    }
    Ok(())
}

fn delete(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let _lock = ctx.lock(&project)?;
    let store = open_store(ctx, &project)?;
    let e = store.get(id)?;
    let what = match &e.manifest {
        Ok(m) => format!(
            "snapshot {} of {} ({}, taken {})",
            e.id,
            m.service,
            human_bytes(m.archive.compressed_bytes),
            m.created_at
        ),
        Err(_) => format!("snapshot {} (unreadable manifest)", e.id),
    };
    ctx.ui.confirm(
        &format!("Delete {what}?"),
        &format!(
            "{} snapshot delete {} --yes",
            nodus_cmd(ctx, &project),
            e.id
        ),
    )?;
    store.delete(&e.id)?;
    ctx.ui.success(format!("deleted {what}"));
    Ok(())
}

fn prune(ctx: &Ctx, dry_run: bool) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let _lock = ctx.lock(&project)?;
    let store = open_store(ctx, &project)?;
    let keep = &project.stack.nodus.snapshots.keep;
    let decisions = crate::snapshot::prune(&store, keep, None, dry_run)?;
    if ctx.ui.json {
        ctx.ui
            .json_out(&json!({ "dry_run": dry_run, "decisions": decisions }));
        return Ok(());
    }
    let removed = decisions.iter().filter(|d| !d.keep).count();
    let mut group = "";
    for d in &decisions {
        if d.group != group {
            group = &d.group;
            ctx.ui.data(format!("{group}:"));
        }
        if d.keep {
            ctx.ui
                .data(format!("  keep    {}  ({})", d.id, d.reasons.join(", ")));
        } else {
            ctx.ui.data(format!(
                "  {}  {}",
                if dry_run { "would remove" } else { "removed" },
                d.id
            ));
        }
    }
    ctx.ui.status(format!(
        "{} {removed} snapshot(s), kept {}",
        if dry_run { "would remove" } else { "removed" },
        decisions.len() - removed
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// restore

struct Plan {
    entry: SnapshotEntry,
    manifest: Manifest,
    stateful: StatefulService,
}

async fn restore_cmd(
    ctx: &Ctx,
    id: Option<String>,
    latest: bool,
    services: Vec<String>,
    no_safety: bool,
) -> anyhow::Result<()> {
    let project = ctx.project()?;
    project.stack.check_services(&services)?;
    let engine = ctx.engine().await?;
    let _lock = ctx.lock(&project)?;
    let store = open_store(ctx, &project)?;
    let files = stack_files(&project);

    // 1. Which snapshots.
    let mut chosen: Vec<SnapshotEntry> = Vec::new();
    match (id, latest) {
        (Some(id), _) => {
            let e = store.get(&id)?;
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
        (None, true) => {
            let wanted = stateful_services(&project, &services)?;
            for st in &wanted {
                match crate::snapshot::latest_usable(store.dir(), &st.service, None) {
                    Some(e) => chosen.push(e),
                    None if !services.is_empty() => bail!(
                        "no usable snapshot of {} (safety snapshots are restored by id only; see `nodus snapshot list`)",
                        st.service
                    ),
                    None => ctx
                        .ui
                        .status(format!("no snapshot of {}: left as it is", st.service)),
                }
            }
            if chosen.is_empty() {
                bail!("no usable snapshots of this stack (see `nodus snapshot list`)");
            }
        }
        (None, false) => return Err(UsageError("give a snapshot ID or --latest".into()).into()),
    }
    let mut plans = Vec::new();
    for e in chosen {
        let m =
            e.manifest
                .clone()
                .map_err(|reason| crate::snapshot::SnapshotError::BadManifest {
                    id: e.id.clone(),
                    path: e.dir.join(crate::snapshot::manifest::MANIFEST_FILE),
                    reason,
                })?;
        if m.project != project.name() {
            ctx.ui.warn(format!(
                "snapshot {} was taken in project {}; restoring into {}",
                m.id,
                m.project,
                project.name()
            ));
        }
        let st = stateful_services(&project, std::slice::from_ref(&m.service))?.remove(0);
        if plans
            .iter()
            .any(|p: &Plan| p.stateful.service == st.service)
        {
            bail!("two snapshots of {} chosen", st.service);
        }
        plans.push(Plan {
            entry: e,
            manifest: m,
            stateful: st,
        });
    }

    // 2. Verify every archive before touching anything.
    for p in &plans {
        let pb = ctx.ui.bytes_progress(
            format!("verify {}", p.entry.id),
            Some(p.manifest.archive.compressed_bytes),
        );
        let r = verify::verify_entry(&store, &p.entry, pb)
            .await
            .with_context(|| {
                format!(
                    "snapshot {} failed verification; nothing was changed",
                    p.entry.id
                )
            })?;
        ctx.ui.success(format!(
            "verified {} ({} entries, sha256 ok)",
            p.entry.id, r.entries
        ));
    }

    // 3. Where each goes; refuse incompatible ones before asking.
    let mut targets = Vec::new();
    // Services whose volume does not exist yet (created after the confirmation).
    let mut missing: Vec<String> = Vec::new();
    for p in &plans {
        let container =
            restore::service_container(&*engine, project.name(), &p.stateful.service).await?;
        let target = match &container {
            Some(c) => {
                let mount = mount_for(&c.mounts, &p.stateful.data_dir).with_context(|| {
                    format!(
                        "{} keeps {} inside its container, not on a volume; nothing to restore into",
                        p.stateful.service, p.stateful.data_dir
                    )
                })?;
                RestoreTarget {
                    project: project.name().to_string(),
                    service: p.stateful.service.clone(),
                    image: c.image.clone(),
                    data_dir: p.stateful.data_dir.clone(),
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
                    offline_target(&*engine, &project, &p.stateful, Some(&p.manifest)).await?;
                if !exists {
                    ctx.ui.status(format!(
                        "volume {} does not exist; it will be created for the restore",
                        t.mount.source
                    ));
                    missing.push(t.service.clone());
                }
                t
            }
        };
        restore::check_compatible(&p.manifest, &target)?;
        if p.manifest.volume.name.as_deref() != Some(target.mount.source.as_str()) {
            ctx.ui.warn(format!(
                "snapshot {} was taken from {}, it goes into {} now",
                p.manifest.id,
                p.manifest.volume.name.as_deref().unwrap_or("(no volume)"),
                target.mount.source
            ));
        }
        if !p.manifest.clean {
            ctx.ui.warn(format!(
                "snapshot {} is not clean ({}); postgres will run crash recovery on it",
                p.manifest.id,
                p.manifest.unclean_reason.as_deref().unwrap_or("unknown")
            ));
        }
        targets.push((target, container));
    }

    // 4. Confirm.
    let summary: Vec<String> = plans
        .iter()
        .zip(&targets)
        .map(|(p, (t, _))| {
            format!(
                "{} ← {} (taken {})",
                t.mount.source, p.manifest.id, p.manifest.created_at
            )
        })
        .collect();
    let ids: Vec<&str> = plans.iter().map(|p| p.entry.id.as_str()).collect();
    let again = if plans.len() == 1 {
        format!(
            "{} snapshot restore {} --yes",
            nodus_cmd(ctx, &project),
            ids[0]
        )
    } else {
        let svcs: Vec<String> = plans
            .iter()
            .map(|p| format!("--service {}", p.stateful.service))
            .collect();
        format!(
            "{} snapshot restore --latest {} --yes",
            nodus_cmd(ctx, &project),
            svcs.join(" ")
        )
    };
    ctx.ui.confirm(
        &format!(
            "Replace the current data with {}? {}",
            summary.join(", "),
            if no_safety {
                "The current contents are NOT kept (--no-safety)."
            } else {
                "A safety snapshot of the current contents is taken first."
            }
        ),
        &again,
    )?;

    // 5. Stop what runs (guarded; the safety snapshot is taken in the stop hook).
    let lc = lifecycle(ctx, &project, &*engine);
    let svc_names: Vec<String> = plans.iter().map(|p| p.stateful.service.clone()).collect();
    let running: Vec<String> = targets
        .iter()
        .filter(|(_, c)| c.as_ref().is_some_and(|c| c.state == RunState::Running))
        .map(|(t, _)| t.service.clone())
        .collect();
    let mut session = Session::new(
        ctx,
        &project,
        engine.clone(),
        Transition::Restore,
        SessionOptions { no_snapshot: true },
    )?;
    let outcome = if !no_safety && !running.is_empty() {
        let hook = SnapshotHook::new(&project, engine.clone(), &ctx.ui)
            .with_reason(Reason::Safety)
            .only(running.clone())
            .without_prune();
        let o = hook.outcome();
        session.chain.0.push(Box::new(hook));
        Some(o)
    } else {
        None
    };
    let mut report = Report::default();
    if !running.is_empty() {
        report = lc.stop(&running, None, &mut session.chain).await?;
    }
    let mut safety_ids: std::collections::BTreeMap<String, String> = Default::default();
    if let Some(o) = &outcome {
        let o = o.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for m in &o.taken {
            safety_ids.insert(m.service.clone(), m.id.clone());
        }
        let missing: Vec<&String> = running
            .iter()
            .filter(|s| !safety_ids.contains_key(*s))
            .collect();
        if !missing.is_empty() {
            let why: Vec<String> = o.failed.iter().map(|(s, e)| format!("{s}: {e}")).collect();
            restart_after_abort(ctx, &lc, &running, &mut session).await;
            bail!(
                "safety snapshot of {} failed ({}); the restore was abandoned and nothing was changed",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                why.join("; ")
            );
        }
    }

    // 6. Replace contents.
    let mut results = Vec::new();
    for (p, (target, _)) in plans.iter().zip(&targets) {
        let absent = missing.contains(&target.service);
        if absent {
            create_volume(&*engine, &project, &p.stateful, &target.mount.source).await?;
        }
        // Nothing to keep from a volume that did not exist.
        let helper_safety = (!no_safety && !absent && !running.contains(&target.service))
            .then(|| (&store, safety_info(&p.stateful, &files)));
        ctx.ui.status(format!(
            "restoring {} into {}...",
            p.entry.id, target.mount.source
        ));
        let stats = restore::replace_contents(&*engine, target, &p.entry, &p.manifest, helper_safety, &ctx.ui)
            .await
            .with_context(|| {
                let safety = safety_ids.get(&target.service).cloned();
                match safety {
                    Some(s) => format!("restore of {} failed; {} is left stopped; its previous contents are in safety snapshot {s}", target.service, target.service),
                    None => format!("restore of {} failed; {} is left stopped", target.service, target.service),
                }
            })?;
        if let Some(s) = &stats.safety {
            safety_ids.insert(target.service.clone(), s.clone());
        }
        results.push((p, target, stats));
    }

    // 7. Start again (guarded) and compare the census with the snapshot's. The guard compares
    // with what the snapshots recorded instead of its ledger, and records the result.
    let mut expected = crate::guard::census::Census {
        taken_at: plans
            .iter()
            .map(|p| p.manifest.created_at.clone())
            .max()
            .unwrap_or_default(),
        services: Default::default(),
    };
    for p in &plans {
        if let Ok(c) = restore::recorded_census(p.manifest.census.as_ref()) {
            expected.services.insert(p.stateful.service.clone(), c);
        }
    }
    if !expected.services.is_empty() {
        session.expect_census(expected);
    }
    let all_exist = {
        let mut ok = true;
        for s in &svc_names {
            ok &= restore::service_container(&*engine, project.name(), s)
                .await?
                .is_some();
        }
        ok
    };
    let up = UpOptions {
        services: svc_names.clone(),
        timeout: START_TIMEOUT,
    };
    let started = if all_exist {
        lc.start(&up, &mut session.chain).await
    } else {
        lc.up(&up, &mut session.chain).await
    }
    .with_context(|| format!("starting {} after the restore", svc_names.join(", ")))?;
    merge_reports(&mut report, started);

    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (p, target, stats) in &results {
        let c = restore::service_container(&*engine, project.name(), &target.service)
            .await?
            .filter(|c| c.state == RunState::Running)
            .with_context(|| format!("{} is not running after the restore", target.service))?;
        let svc = RunningService {
            service: target.service.clone(),
            container: c,
            stateful: Some(p.stateful.clone()),
        };
        let now = census::take_service(&*engine, &svc, &CensusOptions::default()).await;
        let (verdict, details) = match now {
            Err(e) => (
                "unverified",
                vec![format!("census after the restore failed: {e}")],
            ),
            Ok(now) => match restore::check_census(p.manifest.census.as_ref(), &now, false) {
                CensusCheck::Exact => ("match", vec![]),
                CensusCheck::Superset(d) => ("superset", restore::describe_diff(&d)),
                CensusCheck::Mismatch(d) => ("mismatch", restore::describe_diff(&d)),
                CensusCheck::NoBaseline(why) => ("no-baseline", vec![why]),
            },
        };
        let safety = safety_ids.get(&target.service).cloned();
        match verdict {
            "match" => ctx.ui.success(format!(
                "restored {} from {}: the census matches the one taken with the snapshot",
                target.service, p.entry.id
            )),
            "superset" => ctx.ui.success(format!(
                "restored {} from {}: everything recorded at snapshot time is there, plus: {}",
                target.service,
                p.entry.id,
                details.join("; ")
            )),
            "no-baseline" => ctx.ui.success(format!(
                "restored {} from {} (not compared: {})",
                target.service,
                p.entry.id,
                details.join("; ")
            )),
            _ => {
                ctx.ui.error(format!(
                    "{} was restored from {} but does not hold what the snapshot recorded:\n  {}",
                    target.service,
                    p.entry.id,
                    details.join("\n  ")
                ));
                problems.push(target.service.clone());
            }
        }
        if let Some(s) = &safety {
            ctx.ui.detail(format!(
                "previous contents of {}: safety snapshot {s}",
                target.service
            ));
        }
        out.push(json!({
            "service": target.service,
            "snapshot": p.entry.id,
            "volume": target.mount.source,
            "safety_snapshot": safety,
            "census": verdict,
            "details": details,
            "raw_bytes": stats.raw_bytes,
            "empty_ms": stats.empty_ms,
            "upload_ms": stats.upload_ms,
        }));
    }
    session.finish(ctx, &report)?;
    if ctx.ui.json {
        ctx.ui.json_out(&json!({ "restored": out }));
    }
    if !problems.is_empty() {
        bail!(
            "the data after the restore does not match the snapshot for {}",
            problems.join(", ")
        );
    }
    Ok(())
}

async fn restart_after_abort(
    ctx: &Ctx,
    lc: &Lifecycle<'_>,
    services: &[String],
    session: &mut Session,
) {
    let up = UpOptions {
        services: services.to_vec(),
        timeout: START_TIMEOUT,
    };
    if let Err(e) = lc.start(&up, &mut session.chain).await {
        ctx.ui.warn(format!(
            "starting {} again failed: {e}",
            services.join(", ")
        ));
    }
}
