//! `nodus init [--template ...] [--ci github|gitlab] [--force] [--dir DIR]`: writes the starter
//! files from the templates embedded in the binary (`templates/`).

use std::path::PathBuf;

use super::Ctx;
use crate::cli::{CiArg, InitArgs, TemplateArg};
use crate::error::UsageError;
use crate::templates;

pub fn run(ctx: &Ctx, args: InitArgs) -> anyhow::Result<()> {
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let stack = match args.template {
        TemplateArg::Dev => templates::Stack::Dev,
        TemplateArg::NodusAdk => templates::Stack::NodusAdk,
        TemplateArg::Zentoria => templates::Stack::Zentoria,
        TemplateArg::Orquix => templates::Stack::Orquix,
    };
    let ci = args.ci.map(|c| match c {
        CiArg::Github => templates::Ci::Github,
        CiArg::Gitlab => templates::Ci::Gitlab,
    });
    let files = templates::files(stack, ci);
    // Nothing is written unless every file may be.
    let existing: Vec<PathBuf> = files
        .iter()
        .map(|f| dir.join(f.path))
        .filter(|p| p.exists())
        .collect();
    if !existing.is_empty() && !args.force {
        let list: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
        return Err(UsageError(format!(
            "{} already exists; nothing was written (use --force to overwrite)",
            list.join(", ")
        ))
        .into());
    }
    let mut written = Vec::new();
    for f in &files {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
        }
        crate::state::atomic_write(&path, f.contents.as_bytes(), 0o644)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        ctx.ui.status(format!("wrote {}", path.display()));
        written.push(path.display().to_string());
    }
    if ctx.ui.json {
        ctx.ui.json_out(&serde_json::json!({
            "template": stack.name(),
            "files": written,
        }));
    } else {
        ctx.ui.status(
            "next: `nodus up` to start the stack, `nodus test-persistence` to check that its data survives restarts",
        );
    }
    Ok(())
}
