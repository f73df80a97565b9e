//! Builds the lifecycle hooks (guard, snapshots) for a transition and turns their outcome into
//! output and an exit status.

use std::sync::Arc;

use crate::engine::Engine;
use crate::error::DataLossDetected;
use crate::guard::census::Census;
use crate::guard::verdict::{Status, Verdict};
use crate::guard::{Guard, GuardConfig, Outcome, SharedOutcome};
use crate::lifecycle::{HookChain, Report, Transition};
use crate::project::Project;

use super::Ctx;

#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOptions {
    /// `--no-snapshot`.
    pub no_snapshot: bool,
}

/// The hooks of one guarded transition.
pub struct Session {
    /// The guard first; further hooks (snapshots) are pushed after it, so their `before_stop`
    /// runs after the guard's census and CHECKPOINT, and they see its census in `pre_stop`.
    pub chain: HookChain,
    pub transition: Transition,
    /// The guard's outcome (its verdict), filled while the lifecycle runs.
    pub guard: SharedOutcome,
    pub project: Project,
}

/// The exact command that restores `service` from its newest usable snapshot taken at or before
/// `before` (any time when None), or None when there is no such snapshot. Safety snapshots and
/// snapshots that failed verification are skipped (see `snapshot::latest_usable`).
pub fn latest_snapshot_before(
    project: &Project,
    service: &str,
    before: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<String> {
    let entry = crate::snapshot::latest_usable(
        &project.state.snapshots_dir(project.name()),
        service,
        before,
    )?;
    let p = match project.stack.project_source {
        crate::stack::ProjectSource::Flag => format!(" -p {}", project.name()),
        _ => String::new(),
    };
    Some(format!("nodus{p} snapshot restore {}", entry.id))
}

/// The restore command for a verdict's lost services (snapshots from before `before`, RFC 3339).
pub fn restore_lookup(project: &Project) -> impl Fn(&str, &str) -> Option<String> + '_ {
    move |service, before| {
        let before = chrono::DateTime::parse_from_rfc3339(before)
            .ok()
            .map(|d| d.with_timezone(&chrono::Utc));
        latest_snapshot_before(project, service, before)
    }
}

impl Session {
    pub fn new(
        ctx: &Ctx,
        project: &Project,
        engine: Arc<dyn Engine>,
        transition: Transition,
        opts: SessionOptions,
    ) -> anyhow::Result<Session> {
        let shared: SharedOutcome = Arc::new(std::sync::Mutex::new(Outcome::default()));
        let guard = Guard::new(
            engine.clone(),
            ctx.ui.clone(),
            GuardConfig::from_project(project),
            transition,
            shared.clone(),
        );
        // Snapshots come after the guard: they store its `pre_stop` census in the manifest.
        let mut chain = HookChain(vec![Box::new(guard)]);
        if let Some(h) = crate::snapshot::SnapshotHook::for_transition(
            project,
            engine,
            &ctx.ui,
            transition,
            opts.no_snapshot,
        ) {
            chain.0.push(Box::new(h));
        }
        Ok(Session {
            chain,
            transition,
            guard: shared,
            project: project.clone(),
        })
    }

    /// `nodus down --volumes`: the data is removed on purpose, so the next start records a new
    /// baseline instead of reporting a loss. Call before running the transition.
    pub fn removing_volumes(&self) {
        if let Ok(mut o) = self.guard.lock() {
            o.remove_volumes = true;
        }
    }

    /// A restore: compare the settled census with what the snapshot held instead of the ledger.
    pub fn expect_census(&self, census: Census) {
        if let Ok(mut o) = self.guard.lock() {
            o.expected = Some(census);
        }
    }

    /// The guard's verdict so far (None before anything was counted).
    pub fn verdict(&self) -> Option<Verdict> {
        self.guard.lock().ok().and_then(|o| o.verdict.clone())
    }

    /// Prints the lifecycle report and the guard's verdict (JSON with --json); returns
    /// `DataLossDetected` when data went missing.
    pub fn finish(self, ctx: &Ctx, report: &Report) -> anyhow::Result<()> {
        let mut verdict = self.guard.lock().ok().and_then(|mut o| o.verdict.take());
        if let Some(v) = verdict.as_mut() {
            v.fill_restore(restore_lookup(&self.project));
            v.note_created_volumes(&report.volumes_created);
        }
        if ctx.ui.json {
            ctx.ui.json_out(&serde_json::json!({
                "transition": self.transition,
                "report": report,
                "guard": verdict,
            }));
        } else if let Some(v) = &verdict {
            v.print(&ctx.ui);
        }
        let Some(v) = verdict else { return Ok(()) };
        if v.verdict != Status::Loss {
            return Ok(());
        }
        offer_restore(ctx, &v);
        Err(DataLossDetected {
            summary: v.loss_summary(),
            restore_command: v.restore_command.clone(),
        }
        .into())
    }
}

/// On a terminal, offers to run the restore. Never prompts without one (or with --json / --yes).
pub fn offer_restore(ctx: &Ctx, v: &Verdict) {
    let Some(cmd) = &v.restore_command else {
        return;
    };
    if ctx.ui.json || !ctx.ui.interactive || ctx.ui.assume_yes {
        return;
    }
    let ok = dialoguer::Confirm::new()
        .with_prompt(format!("Put the data back now ({cmd})?"))
        .default(false)
        .interact()
        .unwrap_or(false);
    if ok {
        // Running the restore from here is wired by the snapshot module; until then, say how.
        ctx.ui.status(format!("run: {cmd}"));
    }
}
