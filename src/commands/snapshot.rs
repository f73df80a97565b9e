//! `nodus snapshot create|list|show|verify|delete|prune|restore|export|import|migrate`.

use serde_json::json;

use super::hooks::{Session, SessionOptions};
use super::{nodus_cmd, Ctx};
use crate::cli::SnapshotCommand;
use crate::error::UsageError;
use crate::lifecycle::Transition;
use crate::snapshot::ops::{self, create, restore::RestorePlan, restore::Selection};
use crate::snapshot::SnapshotStore;

pub async fn run(ctx: &Ctx, cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Create { services } => create(ctx, services).await,
        SnapshotCommand::List => list(ctx),
        SnapshotCommand::Show { id } => show(ctx, &id),
        SnapshotCommand::Verify { id, all, read_data } => verify(ctx, id, all, read_data).await,
        SnapshotCommand::Stats => stats(ctx),
        SnapshotCommand::Delete { id } => delete(ctx, &id),
        SnapshotCommand::Prune { dry_run } => prune(ctx, dry_run),
        SnapshotCommand::Restore {
            id,
            latest,
            services,
            no_safety,
        } => {
            let selection = match (id, latest) {
                (Some(id), _) => Selection::Id(id),
                (None, true) => Selection::Latest,
                (None, false) => {
                    return Err(UsageError("give a snapshot ID or --latest".into()).into())
                }
            };
            restore(
                ctx,
                RestoreArgs {
                    selection,
                    services,
                    no_safety,
                },
            )
            .await
        }
        SnapshotCommand::Export(args) => export(ctx, args).await,
        SnapshotCommand::Import(args) => import(ctx, args).await,
        SnapshotCommand::Migrate => migrate(ctx).await,
    }
}

async fn create(ctx: &Ctx, services: Vec<String>) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let targets = ops::stateful_services(&project, &services)?;
    let engine = ctx.engine().await?;
    let _lock = ctx.lock_async(&project).await?;
    let store = ops::open_store(&project, &ctx.ui)?;
    let targets = create::targets(&*engine, &project, &targets).await?;

    // Services that are not running: their data is at rest, snapshot it as it is.
    let mut created =
        create::snapshot_offline(&*engine, &project, &store, &targets.offline, &ctx.ui).await;
    // Running services: guarded clean stop, snapshot (in the hook), start again.
    let mut lifecycle = None;
    if !targets.running.is_empty() {
        let mut session = Session::new(
            ctx,
            &project,
            engine.clone(),
            Transition::Restart,
            SessionOptions {
                no_snapshot: true,
                ..Default::default()
            },
        )?;
        let (report, more) = create::snapshot_running(
            engine.clone(),
            &project,
            &targets.running,
            &mut session.chain,
            &ctx.ui,
        )
        .await?;
        created.extend(more);
        let concluded = session.conclude(ctx, &report);
        lifecycle = Some((concluded, report));
    }

    if ctx.ui.json {
        let mut doc = created.json();
        doc["lifecycle"] = lifecycle
            .as_ref()
            .map(|(c, r)| c.json(r))
            .unwrap_or_default();
        ctx.ui.json_out(&doc);
    }
    if let Some((c, _)) = &lifecycle {
        c.result()?;
    }
    created.result()
}

fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let store = ops::open_store(&project, &ctx.ui)?;
    let entries = store.list()?;
    if ctx.ui.json {
        ctx.ui
            .json_out(&entries.iter().map(ops::entry_json).collect::<Vec<_>>());
    } else if entries.is_empty() {
        ctx.ui
            .status(format!("no snapshots of project {} yet", project.name()));
    } else {
        for line in ops::list_table(&entries) {
            ctx.ui.data(line);
        }
    }
    Ok(())
}

/// Text by default; the whole manifest with `--json`.
fn show(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let store = SnapshotStore::for_project(&project);
    if ctx.ui.json {
        ctx.ui.json_out(&ops::show_json(&store, id)?);
    } else {
        for line in ops::show_lines(&store, id)? {
            ctx.ui.data(line);
        }
    }
    Ok(())
}

fn stats(ctx: &Ctx) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let store = ops::open_store(&project, &ctx.ui)?;
    let stats = ops::store_stats(&store)?;
    if ctx.ui.json {
        ctx.ui.json_out(&stats);
    } else {
        for line in ops::stats_lines(&stats) {
            ctx.ui.data(line);
        }
    }
    Ok(())
}

async fn verify(ctx: &Ctx, id: Option<String>, all: bool, read_data: bool) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let store = ops::open_store(&project, &ctx.ui)?;
    let entries = match (id, all) {
        (Some(id), _) => vec![store.get(&id)?],
        (None, true) => store.list()?,
        (None, false) => return Err(UsageError("give a snapshot ID or --all".into()).into()),
    };
    let verified = ops::verify_entries(&store, &entries, read_data, &ctx.ui).await;
    if ctx.ui.json {
        ctx.ui.json_out(&verified.results);
    }
    verified.result()?;
    if entries.is_empty() {
        ctx.ui.status("no snapshots to verify");
    }
    Ok(())
}

fn delete(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let _lock = ctx.lock(&project)?;
    let store = ops::open_store(&project, &ctx.ui)?;
    let e = store.get(id)?;
    let what = ops::describe_entry(&e);
    ctx.ui.confirm(
        &format!("Delete {what}?"),
        &format!(
            "{} snapshot delete {} --yes",
            nodus_cmd(ctx, &project),
            e.id
        ),
    )?;
    let collected = crate::snapshot::delete_snapshots(&store, std::slice::from_ref(&e.id))?;
    for c in &collected {
        match &c.result {
            Ok(_) => ctx.ui.status(c.describe()),
            Err(_) => ctx.ui.warn(c.describe()),
        }
    }
    if ctx.ui.json {
        ctx.ui.json_out(&json!({ "deleted": e.id }));
    }
    ctx.ui.success(format!("deleted {what}"));
    Ok(())
}

fn prune(ctx: &Ctx, dry_run: bool) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let _lock = ctx.lock(&project)?;
    let store = ops::open_store(&project, &ctx.ui)?;
    let keep = &project.stack.nodus.snapshots.keep;
    let (decisions, collected) = crate::snapshot::prune(&store, keep, None, dry_run)?;
    for c in &collected {
        match &c.result {
            Ok(_) => ctx.ui.status(c.describe()),
            Err(_) => ctx.ui.warn(c.describe()),
        }
    }
    if ctx.ui.json {
        ctx.ui
            .json_out(&json!({ "dry_run": dry_run, "decisions": decisions }));
        return Ok(());
    }
    let (lines, summary) = ops::prune_listing(&decisions, dry_run);
    for l in lines {
        ctx.ui.data(l);
    }
    ctx.ui.status(summary);
    Ok(())
}

/// What `snapshot restore` was asked to do.
pub struct RestoreArgs {
    pub selection: Selection,
    /// `--service` (all stateful services when empty).
    pub services: Vec<String>,
    /// `--no-safety`.
    pub no_safety: bool,
}

/// `nodus snapshot restore`; also run in-process when a loss found by `up` is to be undone.
pub async fn restore(ctx: &Ctx, args: RestoreArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    project.stack.check_services(&args.services)?;
    let engine = ctx.engine().await?;
    let _lock = ctx.lock_async(&project).await?;
    let store = ops::open_store(&project, &ctx.ui)?;

    let plan = RestorePlan::prepare(
        &*engine,
        &project,
        &store,
        &args.selection,
        &args.services,
        &ctx.ui,
    )
    .await
    .map_err(|e| match e.downcast_ref::<ops::restore::NewestUnusable>() {
        // The exact command for this stack (`-f`/`-p` as given).
        Some(n) => anyhow::anyhow!(n.message(&nodus_cmd(ctx, &project))),
        None => e,
    })?;

    let ids = plan.ids();
    let again = if ids.len() == 1 {
        format!(
            "{} snapshot restore {} --yes",
            nodus_cmd(ctx, &project),
            ids[0]
        )
    } else {
        let svcs: Vec<String> = plan
            .services()
            .iter()
            .map(|s| format!("--service {s}"))
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
            plan.summary().join(", "),
            if args.no_safety {
                "The current contents are NOT kept (--no-safety)."
            } else {
                "A safety snapshot of the current contents is taken first."
            }
        ),
        &again,
    )?;

    let mut session = Session::new(
        ctx,
        &project,
        engine.clone(),
        Transition::Restore,
        SessionOptions {
            no_snapshot: true,
            ..Default::default()
        },
    )?;
    let expect = session.expect_census();
    let restored = plan
        .execute(
            engine.clone(),
            &project,
            &mut session.chain,
            args.no_safety,
            expect,
            &ctx.ui,
        )
        .await?;
    let concluded = session.conclude(ctx, &restored.report);
    if ctx.ui.json {
        ctx.ui.json_out(&json!({
            "restored": restored.services,
            "lifecycle": concluded.json(&restored.report),
        }));
    }
    concluded.result()?;
    restored.result()
}

/// `nodus snapshot export`: read-only on the snapshots.
async fn export(ctx: &Ctx, args: crate::cli::SnapshotExportArgs) -> anyhow::Result<()> {
    use crate::snapshot::{export, import};
    let project = ctx.project()?;
    let recipients = export::parse_recipients(&args.age_recipients, &args.age_recipients_files)?;
    let store = ops::open_store(&project, &ctx.ui)?;
    let entry = store.get(&args.id)?;
    let out = args.output.unwrap_or_else(|| ".".into());
    let total = entry.manifest.as_ref().ok().map(|m| m.archive.raw_bytes);
    let pb = ctx.ui.bytes_progress(format!("export {}", entry.id), total);
    let pb2 = pb.clone();
    let started = std::time::Instant::now();
    let done = tokio::task::spawn_blocking(move || {
        import::export_entry(&entry, &out, &recipients, args.force, Some(pb2))
    })
    .await??;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if ctx.ui.json {
        let mut doc = serde_json::to_value(&done)?;
        doc["seconds"] = json!((secs * 1000.0).round() / 1000.0);
        ctx.ui.json_out(&doc);
    } else {
        ctx.ui.data(done.path.display().to_string());
    }
    ctx.ui.success(format!(
        "exported {} to {} ({} of tar in {}{}, {:.1}s); checksum in {}",
        done.snapshot,
        done.path.display(),
        crate::snapshot::human_bytes(done.data_bytes),
        crate::snapshot::human_bytes(done.bytes),
        if done.encrypted {
            format!(
                ", age-encrypted to {} {}",
                done.recipients,
                crate::guard::census::plural(done.recipients, "recipient", "recipients")
            )
        } else {
            String::new()
        },
        secs,
        done.sha256_file.display()
    ));
    Ok(())
}

/// `nodus snapshot import FILE`: checks the whole file, then writes it as a new snapshot.
async fn import(ctx: &Ctx, args: crate::cli::SnapshotImportArgs) -> anyhow::Result<()> {
    use crate::snapshot::{export, import};
    use std::sync::Arc;
    let project = ctx.project()?;
    if let Some(s) = &args.service {
        project.stack.check_services(std::slice::from_ref(s))?;
    }
    let _lock = ctx.lock_async(&project).await?;
    let store = ops::open_store(&project, &ctx.ui)?;
    let identities = match &args.identity {
        Some(p) => Some(Arc::new(export::load_identities(p)?)),
        None => None,
    };
    let file = args.file.clone();
    let size = std::fs::metadata(&file).ok().map(|m| m.len());
    let pb = ctx.ui.bytes_progress("check export", size);
    let (pb2, ids, f) = (pb.clone(), identities.clone(), file.clone());
    let info = tokio::task::spawn_blocking(move || {
        export::scan(&f, ids.as_deref().map(|v| v.as_slice()), Some(pb2))
    })
    .await??;
    pb.finish_and_clear();
    ctx.ui.detail(format!(
        "{}: {}{} checked",
        file.display(),
        if info.sidecar_checked {
            "sha256 sidecar, "
        } else {
            "no .sha256 beside it; "
        },
        if info.encrypted {
            "age MAC, zstd and data checksums"
        } else {
            "zstd and data checksums"
        }
    ));
    let (manifest, changes) = import::map_manifest(
        &info.manifest,
        project.name(),
        &project.hardened.stateful,
        args.service.as_deref(),
    )?;
    for c in &changes {
        ctx.ui.status(format!("mapped {c}"));
    }
    import::check_new_id(&store, &manifest.id)?;
    let pb = ctx
        .ui
        .bytes_progress(format!("import {}", manifest.id), Some(info.data_bytes));
    let (pb2, f, i) = (pb.clone(), file.clone(), info.clone());
    let written = tokio::task::spawn_blocking(move || {
        import::import_file(
            &store,
            &f,
            identities.as_deref().map(|v| v.as_slice()),
            &i,
            manifest,
            Some(pb2),
        )
    })
    .await??;
    pb.finish_and_clear();
    if ctx.ui.json {
        ctx.ui.json_out(&json!({
            "imported": written.id,
            "service": written.service,
            "file": file,
            "encrypted": info.encrypted,
            "sha256_checked": info.sidecar_checked,
            "data_bytes": info.data_bytes,
            "mapped": changes,
            "exported_by": info.header.nodus_version,
        }));
    } else {
        ctx.ui.data(written.id.clone());
    }
    ctx.ui.success(format!(
        "imported snapshot {} of {} ({} of tar); restore it with `{} snapshot restore {}`",
        written.id,
        written.service,
        crate::snapshot::human_bytes(info.data_bytes),
        nodus_cmd(ctx, &project),
        written.id
    ));
    Ok(())
}

/// `nodus snapshot migrate`: single-file snapshots into the deduplicating store.
async fn migrate(ctx: &Ctx) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let _lock = ctx.lock_async(&project).await?;
    let store = ops::open_store(&project, &ctx.ui)?;
    let ui = ctx.ui.clone();
    let report =
        tokio::task::spawn_blocking(move || crate::snapshot::migrate::migrate(&store, &ui))
            .await??;
    if ctx.ui.json {
        ctx.ui.json_out(&report);
    }
    let summary = report.summary();
    if report.failed.is_empty() {
        ctx.ui.success(summary);
        Ok(())
    } else {
        anyhow::bail!("{summary}")
    }
}
