use super::Ctx;

pub async fn run(ctx: &Ctx, _args: crate::cli::StopArgs) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus stop is not implemented yet")
}
