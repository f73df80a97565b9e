//! `nodus import COMPOSE_FILE [-o nodus.yaml] [--migrate-data]`: a nodus stack file from a
//! compose file (never edited), optionally moving data into the new named volumes.

use std::path::PathBuf;

use anyhow::Context as _;
use indexmap::IndexMap;

use super::Ctx;
use crate::engine::{DockerEngine, Engine, RunState};
use crate::error::UsageError;
use crate::import::{self, migrate};
use crate::stack::ServiceKind;

pub async fn run(ctx: &Ctx, args: crate::cli::ImportArgs) -> anyhow::Result<()> {
    let file = args.compose_file.clone();
    if !file.is_file() {
        return Err(UsageError(format!("{}: no such compose file", file.display())).into());
    }
    let mut global = ctx.global.clone();
    global.stack = vec![file.clone()];
    let (project, sources) = crate::project::read_only(&global)?;
    let source = sources
        .first()
        .cloned()
        .context("reading the compose file")?;
    let output: PathBuf = args
        .output
        .clone()
        .unwrap_or_else(|| project.dir.join("nodus.yaml"));
    let same = |a: &std::path::Path, b: &std::path::Path| match (a.canonicalize(), b.canonicalize())
    {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if same(&output, &file) {
        return Err(UsageError(format!(
            "-o {} is the compose file itself; nodus import never edits the original",
            output.display()
        ))
        .into());
    }
    if output.exists() {
        ctx.ui.confirm(
            &format!("{} exists. Replace it?", output.display()),
            &super::up::rerun_with_yes(),
        )?;
    }

    let engine: Option<Box<dyn Engine>> = match DockerEngine::connect().await {
        Ok(e) => Some(Box::new(e)),
        Err(e) if args.migrate_data => return Err(e.into()),
        Err(_) => None,
    };
    // Databases the running servers hold (for x-nodus).
    let mut live: IndexMap<String, Vec<String>> = IndexMap::new();
    if let Some(engine) = engine.as_deref() {
        live = live_databases(engine, &project).await;
    }
    let plan = import::plan(&project, &source, args.migrate_data, &live);
    for w in &plan.warnings {
        ctx.ui.warn(w);
    }

    let mut done: Vec<migrate::Migrated> = Vec::new();
    if args.migrate_data {
        let engine = engine.as_deref().context("engine")?;
        if plan.migrations.is_empty() {
            ctx.ui
                .status("no data to migrate: every data directory is on a named volume already");
        }
        for m in &plan.migrations {
            if !crate::guard::census::supports(m.kind) || m.kind == ServiceKind::Qdrant {
                for d in &done {
                    migrate::undo(engine, d).await;
                }
                anyhow::bail!(
                    "{}: nodus cannot take a census of {} services inside a container, so it cannot prove a copy; move the data by hand",
                    m.service,
                    crate::guard::census::kind_str(m.kind)
                );
            }
            match migrate::migrate(engine, project.name(), m, &ctx.ui).await {
                Ok(d) => done.push(d),
                Err(e) => {
                    for d in &done {
                        migrate::undo(engine, d).await;
                    }
                    return Err(anyhow::Error::new(e).context(format!(
                        "import of {} failed; {} was not written and the original stack was left as it was",
                        file.display(),
                        output.display()
                    )));
                }
            }
        }
    }

    let written = crate::state::atomic_write(&output, plan.yaml.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", output.display()));
    if let Err(e) = written {
        if let Some(engine) = engine.as_deref() {
            for d in &done {
                migrate::undo(engine, d).await;
            }
        }
        return Err(e);
    }
    if ctx.ui.json {
        ctx.ui.json_out(&serde_json::json!({
            "compose_file": file.display().to_string(),
            "output": output.display().to_string(),
            "project": project.name(),
            "changes": plan.changes.iter().map(|(s, c)| serde_json::json!({"service": s, "change": c})).collect::<Vec<_>>(),
            "migrated": done,
            "warnings": plan.warnings,
        }));
    } else {
        for (s, c) in &plan.changes {
            ctx.ui.detail(format!("{s}: {c}"));
        }
        ctx.ui.success(format!(
            "wrote {} ({} change(s){}); {} is unchanged. Next: nodus -f {} up",
            output.display(),
            plan.changes.len(),
            if done.is_empty() {
                String::new()
            } else {
                format!(
                    ", data of {} moved",
                    done.iter()
                        .map(|d| d.service.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            file.display(),
            super::shell_word(&output.display().to_string())
        ));
    }
    Ok(())
}

async fn live_databases(
    engine: &dyn Engine,
    project: &crate::project::Project,
) -> IndexMap<String, Vec<String>> {
    let mut out = IndexMap::new();
    let Ok(cs) = crate::doctor::live::project_containers(engine, project.name()).await else {
        return out;
    };
    for st in &project.hardened.stateful {
        if st.kind != ServiceKind::Postgres {
            continue;
        }
        let Some(c) = cs.get(&st.service).filter(|c| c.state == RunState::Running) else {
            continue;
        };
        let Ok(mut t) = crate::guard::pg::target_for(engine, &st.service, c).await else {
            continue;
        };
        let Ok((s, _)) = crate::guard::pg::connect_maintenance(
            engine,
            &mut t,
            std::time::Duration::from_secs(3),
        )
        .await
        else {
            continue;
        };
        if let Ok(rows) = s
            .query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
            .await
        {
            out.insert(
                st.service.clone(),
                rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect(),
            );
        }
    }
    out
}
