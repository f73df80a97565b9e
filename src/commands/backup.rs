//! `nodus backup [SERVICE] [-o FILE]`, `nodus backup restore FILE`, `nodus backup list`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::json;

use super::Ctx;
use crate::cli::{BackupArgs, BackupCommand};
use crate::engine::{ContainerInfo, Engine, RunState};
use crate::guard::census::{self, CensusOptions};
use crate::lifecycle::RunningService;
use crate::project::Project;
use crate::snapshot::backup::{self, BackupManifest, DumpRequest};
use crate::snapshot::human_bytes;
use crate::snapshot::restore::{self, CensusCheck};
use crate::stack::{ServiceKind, StatefulService};

pub async fn run(ctx: &Ctx, args: BackupArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BackupCommand::Restore { file, service }) => restore_cmd(ctx, &file, service).await,
        Some(BackupCommand::List) => list(ctx),
        None => create(ctx, args.service, args.output).await,
    }
}

/// The postgres service to use: the named one, else the only/first postgres service.
fn postgres_service(project: &Project, name: Option<&str>) -> anyhow::Result<StatefulService> {
    let pgs: Vec<&StatefulService> = project
        .hardened
        .stateful
        .iter()
        .filter(|s| s.kind == ServiceKind::Postgres)
        .collect();
    match name {
        Some(n) => {
            project.stack.check_services(&[n.to_string()])?;
            pgs.into_iter()
                .find(|s| s.service == n)
                .cloned()
                .with_context(|| format!("service {n} is not a postgres service; `nodus backup` dumps postgres with pg_dumpall"))
        }
        None => pgs
            .first()
            .map(|s| (*s).clone())
            .context("this stack has no postgres service to back up"),
    }
}

async fn running_container(
    engine: &dyn Engine,
    project: &Project,
    service: &str,
) -> anyhow::Result<ContainerInfo> {
    match restore::service_container(engine, project.name(), service).await? {
        Some(c) if c.state == RunState::Running => Ok(c),
        _ => bail!("{service} is not running; start it with `nodus up {service}` first"),
    }
}

/// The census of a running service as JSON, or None (with a warning) when it cannot be taken.
async fn census_json(
    ctx: &Ctx,
    engine: &dyn Engine,
    st: &StatefulService,
    c: &ContainerInfo,
) -> Option<serde_json::Value> {
    let svc = RunningService {
        service: st.service.clone(),
        container: c.clone(),
        stateful: Some(st.clone()),
    };
    match census::take_service(engine, &svc, &CensusOptions::default()).await {
        Ok(census) => serde_json::to_value(census).ok(),
        Err(e) => {
            ctx.ui.warn(format!(
                "census of {} failed ({e}); the backup will have no census to compare with",
                st.service
            ));
            None
        }
    }
}

async fn create(ctx: &Ctx, service: Option<String>, output: Option<PathBuf>) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let st = postgres_service(&project, service.as_deref())?;
    let engine = ctx.engine().await?;
    let _lock = ctx.lock(&project)?;
    let container = running_container(&*engine, &project, &st.service).await?;
    let dir = project.state.backups_dir(project.name());
    for p in backup::clean_partials(&dir) {
        ctx.ui.status(format!("removed interrupted backup {p}"));
    }
    let out = output.unwrap_or_else(|| backup::default_path(&dir, &st.service, chrono::Utc::now()));
    let census = census_json(ctx, &*engine, &st, &container).await;
    let m = backup::dump(
        &*engine,
        DumpRequest {
            project: project.name(),
            service: &st.service,
            container: &container,
            out: &out,
            census,
        },
        &ctx.ui,
    )
    .await?;
    if ctx.ui.json {
        ctx.ui.json_out(&json!({ "path": out, "manifest": m }));
    } else {
        ctx.ui.success(format!(
            "backup of {}: {} ({} of SQL → {}, sha256 {})",
            st.service,
            out.display(),
            human_bytes(m.raw_bytes),
            human_bytes(m.compressed_bytes),
            &m.sha256[..12]
        ));
    }
    Ok(())
}

fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let dir = project.state.backups_dir(project.name());
    let entries = backup::list(&dir)?;
    if ctx.ui.json {
        ctx.ui.json_out(&entries);
        return Ok(());
    }
    if entries.is_empty() {
        ctx.ui.status(format!("no backups in {}", dir.display()));
        return Ok(());
    }
    for e in &entries {
        let name = e.path.display().to_string();
        match &e.manifest {
            Some(m) => ctx.ui.data(format!(
                "{name}  {}  {}  {} SQL  {} stored",
                m.service,
                m.created_at,
                human_bytes(m.raw_bytes),
                human_bytes(m.compressed_bytes)
            )),
            None => ctx.ui.data(format!(
                "{name}  (no manifest)  {} stored",
                human_bytes(e.size)
            )),
        }
    }
    Ok(())
}

async fn restore_cmd(ctx: &Ctx, file: &Path, service: Option<String>) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let manifest: Option<BackupManifest> = backup::read_manifest(file)?;
    let wanted = service
        .as_deref()
        .or(manifest.as_ref().map(|m| m.service.as_str()));
    let st = postgres_service(&project, wanted)?;
    let engine = ctx.engine().await?;
    let _lock = ctx.lock(&project)?;

    // Verify before touching anything.
    if manifest.is_none() {
        ctx.ui.warn(format!(
            "{} has no manifest ({}): its checksum cannot be checked, only that it decompresses",
            file.display(),
            backup::manifest_path(file).display()
        ));
    }
    let sp = ctx.ui.spinner(format!("verifying {}", file.display()));
    let path = file.to_path_buf();
    let m2 = manifest.clone();
    let sql_bytes = tokio::task::spawn_blocking(move || backup::verify_file(&path, m2.as_ref()))
        .await
        .context("verification thread failed")?
        .with_context(|| {
            format!(
                "{} failed verification; nothing was changed",
                file.display()
            )
        })?;
    sp.finish_and_clear();
    ctx.ui.success(format!(
        "verified {} ({} of SQL{})",
        file.display(),
        human_bytes(sql_bytes),
        if manifest.is_some() {
            ", sha256 ok"
        } else {
            ""
        }
    ));

    let container = running_container(&*engine, &project, &st.service).await?;
    ctx.ui.confirm(
        &format!(
            "Load {} into {} with psql? Objects that already exist are kept (their errors are counted, not fatal)",
            file.display(),
            st.service
        ),
        &format!(
            "{} backup restore {} --service {} --yes",
            super::snapshot::nodus_cmd(ctx, &project),
            super::snapshot::shell_word(&file.display().to_string()),
            st.service
        ),
    )?;
    let report = backup::load(&*engine, &container, file, sql_bytes, &ctx.ui).await?;
    if report.errors > 0 {
        ctx.ui.status(format!(
            "psql reported {} error(s): {} \"already exists\" (expected when loading into an existing cluster), {} other",
            report.errors,
            report.already_exists,
            report.errors - report.already_exists
        ));
        const SHOWN: usize = 10;
        for l in report.other_errors.iter().take(SHOWN) {
            ctx.ui.warn(l);
        }
        let other = report.errors - report.already_exists;
        if other > SHOWN {
            ctx.ui.status(format!(
                "... and {} more (the census comparison below says whether data is missing)",
                other - SHOWN
            ));
        }
    }

    let mut verdict = "no-baseline";
    let mut details = Vec::new();
    if let Some(m) = &manifest {
        if m.census.is_some() {
            let now = census_json(ctx, &*engine, &st, &container).await;
            let now = now.and_then(|v| serde_json::from_value(v).ok());
            match now {
                None => {
                    verdict = "unverified";
                    details.push("census after the load failed".to_string());
                }
                Some(now) => match restore::check_census(m.census.as_ref(), &now, true) {
                    CensusCheck::Exact => verdict = "match",
                    CensusCheck::Superset(d) => {
                        verdict = "superset";
                        details = restore::describe_diff(&d);
                    }
                    CensusCheck::Mismatch(d) => {
                        verdict = "mismatch";
                        details = restore::describe_diff(&d);
                    }
                    CensusCheck::NoBaseline(why) => details.push(why),
                },
            }
        } else {
            details.push("the backup has no census to compare with".into());
        }
    }
    if ctx.ui.json {
        ctx.ui.json_out(&json!({ "file": file, "service": st.service, "load": report, "census": verdict, "details": details }));
    }
    match verdict {
        "match" => ctx.ui.success(format!(
            "loaded {} into {}: the census matches the backup's",
            file.display(),
            st.service
        )),
        "superset" => ctx.ui.success(format!(
            "loaded {} into {}: everything in the backup's census is there, plus: {}",
            file.display(),
            st.service,
            details.join("; ")
        )),
        "no-baseline" => ctx.ui.success(format!(
            "loaded {} into {} (not compared: {})",
            file.display(),
            st.service,
            details.join("; ")
        )),
        _ => bail!(
            "{} was loaded into {} but the data does not match the backup's census:\n  {}",
            file.display(),
            st.service,
            details.join("\n  ")
        ),
    }
    Ok(())
}
