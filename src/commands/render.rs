use super::Ctx;

pub async fn run(ctx: &Ctx, _args: crate::cli::RenderArgs) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus render is not implemented yet")
}
