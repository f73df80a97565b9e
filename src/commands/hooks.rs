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
        let _ = (ctx, project, engine, opts);
        Ok(Session {
            chain: HookChain(Vec::new()),
            transition,
        })
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
