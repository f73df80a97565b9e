use super::Ctx;

pub async fn run(ctx: &Ctx, _args: crate::cli::DownArgs) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus down is not implemented yet")
}
