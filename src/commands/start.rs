use super::Ctx;

pub async fn run(ctx: &Ctx, _args: crate::cli::UpArgs) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus start is not implemented yet")
}
