use super::Ctx;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus status is not implemented yet")
}
