//! `nodus start [SERVICE...] [--timeout 120s]`

use super::hooks::SessionOptions;
use super::up::{bring_up, Bring};
use super::Ctx;

pub async fn run(ctx: &Ctx, args: crate::cli::StartArgs) -> anyhow::Result<()> {
    if !args.no_doctor {
        super::up::doctor_block(ctx).await;
    }
    let opts = SessionOptions::default();
    bring_up(ctx, Bring::Start, args.services, &args.timeout, opts).await
}
