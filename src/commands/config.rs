//! `nodus config [--hardened] [--services] [--volumes] [--format yaml|json]`: the merged,
//! interpolated model (like `docker compose config`); the global `-q` only validates.

use anyhow::Context as _;

use super::Ctx;
use crate::cli::{ConfigArgs, ConfigFormat};
use crate::stack::render_plain;

pub async fn run(ctx: &Ctx, a: ConfigArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let compose = if a.hardened {
        &project.hardened.compose
    } else {
        &project.stack.compose
    };
    if ctx.global.quiet {
        return Ok(());
    }
    if a.services {
        for s in compose.services.keys() {
            ctx.ui.data(s);
        }
        return Ok(());
    }
    if a.volumes {
        for v in compose.volumes.keys() {
            ctx.ui.data(v);
        }
        return Ok(());
    }
    if ctx.ui.json || a.format == ConfigFormat::Json {
        let mut doc = serde_json::to_value(compose).context("serialising the model")?;
        if let Some(m) = doc.as_object_mut() {
            m.shift_remove("version");
            m.insert("name".into(), project.name().into());
        }
        ctx.ui.json_out(&doc);
        return Ok(());
    }
    let yaml = render_plain(compose).context("rendering the model")?;
    let out = yaml.trim_end();
    ctx.ui.data(out);
    Ok(())
}
