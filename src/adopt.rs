//! Moving a stateful service's data to the volume the stack now gives it, instead of starting an
//! empty database there: after adopting a compose project whose data sat on an anonymous volume,
//! or switching a stack from `harden: false` to hardened.
//!
//! A move: the service's container is stopped through the hooks (the guard's census before the
//! stop), a snapshot of the data dir is taken (reason `move`), the new volume is created and the
//! snapshot put into it the way `snapshot restore` does (checksum verified, owner and mode of the
//! data dir checked). The old container is then removed, its volumes kept (the old data stays
//! where it was), and `up` creates the new container. When the new service starts, the guard compares its census
//! with the one taken before the stop: a difference is a loss (exit 3). Nothing is moved without
//! a confirmation (`--yes` without a terminal).

use crate::engine::Engine;
use crate::lifecycle::adopt::{DataMove, MovePlan};
use crate::lifecycle::{Hooks, Lifecycle};
use crate::output::Ui;
use crate::project::Project;
use crate::snapshot::manifest::Reason;
use crate::snapshot::restore::{replace_contents, RestoreTarget};
use crate::snapshot::{snapshot_container, SnapshotRequest, SnapshotStore};

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("{service}: its data is in {from}, and volume {to_volume}, where the stack now keeps it, holds data too; nodus will not choose between them. If {to_volume} is a leftover (e.g. of an interrupted move), remove it (`docker volume rm {to_volume}`) and run `up` again to copy the data over; if it holds the data you want, remove the old container so nodus stops finding it")]
    Conflict {
        service: String,
        from: String,
        to_volume: String,
    },
    #[error("moving the data of {service} from {from} to volume {to_volume} failed: {reason}. Nothing was lost: the data is still in {from}{snapshot}; {cleanup}")]
    Move {
        service: String,
        from: String,
        to_volume: String,
        reason: String,
        snapshot: String,
        cleanup: String,
    },
}

/// What a move did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Moved {
    pub service: String,
    pub from: String,
    pub to_volume: String,
    pub snapshot: String,
}

/// The plan as lines for the user.
pub fn describe(plan: &MovePlan) -> Vec<String> {
    plan.moves
        .iter()
        .map(|m| {
            format!(
                "{}: its data ({}) is in {} of container {}{}; the stack now keeps it on volume {}, which is {}",
                m.service,
                m.old_data_dir,
                m.from,
                m.container.name,
                if m.compose_made { " (made by docker compose)" } else { "" },
                m.to_volume,
                if m.to_exists { "empty" } else { "new" },
            )
        })
        .collect()
}

/// Refuses on conflicts; otherwise, with `confirm` answered, moves every service of `plan`.
pub async fn run(
    engine: &dyn Engine,
    project: &Project,
    lc: &Lifecycle<'_>,
    plan: &MovePlan,
    hooks: &mut dyn Hooks,
    ui: &Ui,
) -> anyhow::Result<Vec<Moved>> {
    if let Some(c) = plan.conflicts.first() {
        return Err(AdoptError::Conflict {
            service: c.service.clone(),
            from: c.from.to_string(),
            to_volume: c.to_volume.clone(),
        }
        .into());
    }
    let mut out = Vec::new();
    for mv in &plan.moves {
        out.push(move_one(engine, project, lc, mv, hooks, ui).await?);
    }
    Ok(out)
}

async fn move_one(
    engine: &dyn Engine,
    project: &Project,
    lc: &Lifecycle<'_>,
    mv: &DataMove,
    hooks: &mut dyn Hooks,
    ui: &Ui,
) -> anyhow::Result<Moved> {
    let from = mv.from.to_string();
    let fail = |reason: String, snapshot: Option<&str>, cleanup: String| AdoptError::Move {
        service: mv.service.clone(),
        from: from.clone(),
        to_volume: mv.to_volume.clone(),
        reason,
        snapshot: snapshot
            .map(|s| format!(" and in snapshot {s}"))
            .unwrap_or_default(),
        cleanup,
    };
    let kept = format!(
        "container {} is left stopped; `nodus up` tries again",
        mv.container.name
    );

    // 1. Stop (census before the stop, through the guard).
    let stopped = lc.stop_for_move(mv, hooks).await?;
    let container = engine.inspect_container(&mv.container.id).await?;

    // 2. Snapshot of the data as it is.
    let (store, _) = SnapshotStore::open(project.state.snapshots_dir(project.name()))?;
    let store = store.for_stack(project);
    let stack_files: Vec<String> = project
        .stack
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let from_volume = (mv.from.what.contains("volume")).then_some(mv.from.source.as_str());
    let req = SnapshotRequest {
        project: project.name(),
        service: &mv.service,
        kind: mv.stateful.kind,
        container: &container,
        data_dir: &mv.old_data_dir,
        volume_name: from_volume,
        stack_files: &stack_files,
        census: stopped.as_ref().and_then(|s| s.pre_stop.clone()),
        evidence: stopped.as_ref().map(|s| s.evidence.clone()),
        reason: Reason::Move,
    };
    let manifest = snapshot_container(engine, &store, req, ui)
        .await
        .map_err(|e| fail(format!("snapshot: {e}"), None, kept.clone()))?;
    crate::snapshot::create::report_taken(ui, &manifest);
    let entry = store.get(&manifest.id)?;

    // 3. The new volume, and the data into it.
    let created = !mv.to_exists;
    if created {
        engine
            .create_volume(&mv.to_volume, &mv.to_labels)
            .await
            .map_err(|e| fail(e.to_string(), Some(&manifest.id), kept.clone()))?;
        ui.status(format!("created volume {}", mv.to_volume));
    }
    let target = RestoreTarget {
        project: project.name().to_string(),
        service: mv.service.clone(),
        image: container.image.clone(),
        data_dir: mv.new_data_dir.clone(),
        mount: mv.to_mount.clone(),
    };
    ui.status(format!(
        "{}: copying its data from {} to volume {}...",
        mv.service, mv.from, mv.to_volume
    ));
    if let Err(e) = replace_contents(engine, &target, &entry, &manifest, None, ui).await {
        // The new volume holds at most a partial copy of data that is still in the old place.
        let cleanup = if created {
            match engine.remove_volume(&mv.to_volume).await {
                Ok(()) => format!("the partial copy in {} was removed; {kept}", mv.to_volume),
                Err(r) => format!(
                    "volume {} holds a partial copy and could not be removed ({r}): remove it (`docker volume rm {}`) before running `nodus up` again",
                    mv.to_volume, mv.to_volume
                ),
            }
        } else {
            format!(
                "volume {} may hold a partial copy: empty it or remove it before running `nodus up` again",
                mv.to_volume
            )
        };
        return Err(fail(e.to_string(), Some(&manifest.id), cleanup).into());
    }
    ui.success(format!(
        "{}: data copied from {} to volume {} (snapshot {} taken before; {} is kept)",
        mv.service, mv.from, mv.to_volume, manifest.id, mv.from
    ));
    // The old container has served its purpose (its volumes stay): removing it now means a later
    // `up` does not find the data "elsewhere" again, even when this one stops before creating
    // the new container.
    match engine.remove_container(&container.id, false).await {
        Ok(()) => ui.detail(format!(
            "removed container {} (its volumes are kept)",
            container.name
        )),
        Err(e) => ui.warn(format!(
            "container {} could not be removed ({e}); `up` replaces it",
            container.name
        )),
    }
    Ok(Moved {
        service: mv.service.clone(),
        from,
        to_volume: mv.to_volume.clone(),
        snapshot: manifest.id,
    })
}
