//! `nodus restart [SERVICE...] [--timeout 120s] [--no-snapshot]`

use super::hooks::SessionOptions;
use super::up::{bring_up, Bring};
use super::Ctx;

pub async fn run(ctx: &Ctx, args: crate::cli::RestartArgs) -> anyhow::Result<()> {
    let opts = SessionOptions {
        no_snapshot: args.no_snapshot,
        force_snapshot: args.snapshot,
        services: args.services.clone(),
    };
    bring_up(ctx, Bring::Restart, args.services, &args.timeout, opts).await
}
