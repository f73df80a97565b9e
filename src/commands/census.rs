use super::Ctx;

pub async fn run(ctx: &Ctx, _args: crate::cli::CensusArgs) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus census is not implemented yet")
}
