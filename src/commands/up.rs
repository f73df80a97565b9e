use super::Ctx;

pub async fn run(ctx: &Ctx, _args: crate::cli::UpArgs) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus up is not implemented yet")
}
