use super::Ctx;

pub async fn run(ctx: &Ctx, _args: crate::cli::BackupArgs) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("nodus backup is not implemented yet")
}
