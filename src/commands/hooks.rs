//! Builds the lifecycle hooks (guard, snapshots) for a transition and turns their outcome into
//! output and an exit status.

use std::sync::Arc;

use crate::engine::Engine;
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
    pub chain: HookChain,
    pub transition: Transition,
}

impl Session {
    pub fn new(
        ctx: &Ctx,
        project: &Project,
        engine: Arc<dyn Engine>,
        transition: Transition,
        opts: SessionOptions,
    ) -> anyhow::Result<Session> {
        let mut chain = HookChain(Vec::new());
        // Snapshots come after the guard's hooks: they use its `pre_stop` census.
        if let Some(h) = crate::snapshot::SnapshotHook::for_transition(
            project,
            engine,
            &ctx.ui,
            transition,
            opts.no_snapshot,
        ) {
            chain.0.push(Box::new(h));
        }
        Ok(Session { chain, transition })
    }

    /// A restore: the guard compares the settled census with what the snapshot held instead of
    /// its ledger. Merge shim: the guard branch defines the real one (take the guard's version).
    pub fn expect_census(&self, census: crate::guard::census::Census) {
        let _ = census;
    }

    /// Prints the lifecycle report and the guard's verdict (JSON with --json); returns
    /// `DataLossDetected` when data went missing.
    pub fn finish(self, ctx: &Ctx, report: &Report) -> anyhow::Result<()> {
        if ctx.ui.json {
            ctx.ui
                .json_out(&serde_json::json!({ "transition": self.transition, "report": report }));
        }
        Ok(())
    }
}

/// The exact command that restores `service` from its newest usable snapshot taken at or before
/// `before` (any time when None), or None when there is no such snapshot.
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
