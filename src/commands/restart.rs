use super::Ctx;

pub async fn run(ctx: &Ctx, _args: crate::cli::RestartArgs) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus restart is not implemented yet")
}
