//! `nodus render [-o FILE|-]`: write the hardened compose file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::Ctx;
use crate::stack::{render_yaml_for, Finding, StatefulService};
use crate::state::atomic_write;

#[derive(Serialize)]
struct RenderJson<'a> {
    project: &'a str,
    /// Where it was written; `-` for stdout.
    path: String,
    findings: &'a [Finding],
    stateful: &'a [StatefulService],
    /// The document itself, when `-o -` is combined with `--json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    yaml: Option<String>,
}

pub async fn run(ctx: &Ctx, args: crate::cli::RenderArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let yaml = render_yaml_for(&project.stack, &project.hardened.compose)
        .context("rendering the compose file")?;
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    let path: Option<PathBuf> = match &args.output {
        _ if to_stdout => None,
        // 0600: environment values (passwords) are in it.
        Some(p) => {
            atomic_write(p, yaml.as_bytes(), 0o600)
                .with_context(|| format!("writing {}", p.display()))?;
            Some(p.clone())
        }
        None => Some(crate::project::write_rendered(&project)?),
    };

    let h = &project.hardened;
    let shown = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "-".into());
    if ctx.ui.json {
        ctx.ui.json_out(&RenderJson {
            project: project.name(),
            path: shown.clone(),
            findings: &h.findings,
            stateful: &h.stateful,
            yaml: to_stdout.then(|| yaml.clone()),
        });
    } else if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(yaml.as_bytes())
            .context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }

    let summary = format!(
        "{} hardening fix{}, {} warning{}",
        h.fixes(),
        if h.fixes() == 1 { "" } else { "es" },
        h.warnings(),
        if h.warnings() == 1 { "" } else { "s" }
    );
    match &path {
        Some(p) => ctx.ui.success(format!(
            "rendered project {} to {} ({summary})",
            project.name(),
            p.display()
        )),
        None => ctx
            .ui
            .status(format!("rendered project {} ({summary})", project.name())),
    }
    if h.fixes() > 0 && ctx.ui.verbose == 0 {
        ctx.ui.detail("run with -v to see each fix");
    }
    Ok(())
}
