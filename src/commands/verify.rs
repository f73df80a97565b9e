use super::Ctx;

pub async fn run(ctx: &Ctx, _args: crate::cli::VerifyArgs) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus verify is not implemented yet")
}
