//! `nodus snapshot create|list|show|verify|delete|prune|restore`.

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
            SessionOptions { no_snapshot: true },
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
        SessionOptions { no_snapshot: true },
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
