use super::Ctx;

pub async fn run(ctx: &Ctx, _cmd: crate::cli::SnapshotCommand) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus snapshot is not implemented yet")
}
