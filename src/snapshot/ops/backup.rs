//! `backup`, `backup list`, `backup restore`: logical backups of a running postgres service,
//! with the census at backup time kept in the manifest and compared after a load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::CensusVerdict;
use crate::engine::{ContainerInfo, Engine, RunState};
use crate::guard::census::{self, CensusOptions, ServiceCensus};
use crate::guard::pg;
use crate::lifecycle::RunningService;
use crate::output::Ui;
use crate::project::Project;
use crate::snapshot::backup::{self, BackupEntry, BackupManifest, DumpRequest, LoadReport};
use crate::snapshot::human_bytes;
use crate::snapshot::restore;
use crate::stack::{ServiceKind, StatefulService};

/// How many psql error lines a load shows.
const SHOWN_ERRORS: usize = 10;

/// The postgres service to use: the named one, else the only/first postgres service.
pub fn postgres_service(project: &Project, name: Option<&str>) -> anyhow::Result<StatefulService> {
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

/// The service's running container, or an error saying to start it.
pub async fn running_container(
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
    engine: &dyn Engine,
    st: &StatefulService,
    c: &ContainerInfo,
    ui: &Ui,
) -> Option<serde_json::Value> {
    let svc = RunningService {
        service: st.service.clone(),
        container: c.clone(),
        stateful: Some(st.clone()),
    };
    match census::take_service(engine, &svc, &CensusOptions::default()).await {
        Ok(census) => serde_json::to_value(census).ok(),
        Err(e) => {
            ui.warn(format!(
                "census of {} failed ({e}); the backup will have no census to compare with",
                st.service
            ));
            None
        }
    }
}

/// Dumps the running service (census included) to `output`, or to a new file in the project's
/// backups directory. Returns the file and its manifest.
pub async fn create(
    engine: &dyn Engine,
    project: &Project,
    st: &StatefulService,
    output: Option<PathBuf>,
    ui: &Ui,
) -> anyhow::Result<(PathBuf, BackupManifest)> {
    let container = running_container(engine, project, &st.service).await?;
    let dir = project.state.backups_dir(project.name());
    for p in backup::clean_partials(&dir) {
        ui.status(format!("removed interrupted backup {p}"));
    }
    let out = output.unwrap_or_else(|| backup::default_path(&dir, &st.service, chrono::Utc::now()));
    let census = census_json(engine, st, &container, ui).await;
    let m = backup::dump(
        engine,
        DumpRequest {
            project: project.name(),
            service: &st.service,
            container: &container,
            out: &out,
            census,
        },
        ui,
    )
    .await?;
    Ok((out, m))
}

/// One line per backup for `backup list`.
pub fn list_lines(entries: &[BackupEntry]) -> Vec<String> {
    let mut rows: Vec<[String; 5]> = vec![[
        "FILE".into(),
        "SERVICE".into(),
        "TAKEN".into(),
        "SQL".into(),
        "STORED".into(),
    ]];
    for e in entries {
        let name = e.path.display().to_string();
        rows.push(match &e.manifest {
            Some(m) => [
                name,
                m.service.clone(),
                m.created_at.clone(),
                human_bytes(m.raw_bytes),
                human_bytes(m.compressed_bytes),
            ],
            None => [
                name,
                "(no manifest)".into(),
                "-".into(),
                "-".into(),
                human_bytes(e.size),
            ],
        });
    }
    crate::table::align(&rows)
}

/// Checks `file` against its manifest (or, without one, only that it decompresses); returns
/// the size of the SQL. Says how it went.
pub async fn verify(
    file: &Path,
    manifest: Option<&BackupManifest>,
    ui: &Ui,
) -> anyhow::Result<u64> {
    if manifest.is_none() {
        ui.warn(format!(
            "{} has no manifest ({}): its checksum cannot be checked, only that it decompresses",
            file.display(),
            backup::manifest_path(file).display()
        ));
    }
    let sp = ui.spinner(format!("verifying {}", file.display()));
    let path = file.to_path_buf();
    let m2 = manifest.cloned();
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
    ui.success(format!(
        "verified {} ({} of SQL{})",
        file.display(),
        human_bytes(sql_bytes),
        if manifest.is_some() {
            ", sha256 ok"
        } else {
            ""
        }
    ));
    Ok(sql_bytes)
}

/// The databases `file` loads into: the backup's census says, else the dump itself.
pub async fn backup_databases(
    file: &Path,
    manifest: Option<&BackupManifest>,
) -> anyhow::Result<BTreeSet<String>> {
    if let Some(census) = manifest.and_then(|m| m.census.as_ref()) {
        if let Ok(ServiceCensus::Postgres(pg)) = restore::recorded_census(Some(census)) {
            return Ok(pg.databases.keys().cloned().collect());
        }
    }
    let path = file.to_path_buf();
    tokio::task::spawn_blocking(move || backup::databases_in_dump(&path))
        .await
        .context("dump scanning thread failed")?
        .with_context(|| format!("reading the databases of {}", file.display()))
}

/// A database of the backup that already holds tables in the running service.
#[derive(Debug, Clone, Serialize)]
pub struct Occupied {
    pub database: String,
    pub tables: usize,
    pub rows: i64,
}

/// The backup's databases that already hold tables in the running service: loading into them
/// would add the backup's rows to theirs. An error when the census cannot be taken (then
/// nobody can tell whether the load would duplicate rows).
pub async fn occupied(
    engine: &dyn Engine,
    st: &StatefulService,
    container: &ContainerInfo,
    backup_dbs: &BTreeSet<String>,
) -> anyhow::Result<Vec<Occupied>> {
    let svc = RunningService {
        service: st.service.clone(),
        container: container.clone(),
        stateful: Some(st.clone()),
    };
    let now = census::take_service(engine, &svc, &CensusOptions::default())
        .await
        .with_context(|| {
            format!(
                "cannot tell whether {} already holds the backup's databases; nothing was changed",
                st.service
            )
        })?;
    let ServiceCensus::Postgres(pg) = now else {
        bail!(
            "cannot tell whether {} already holds the backup's databases (no postgres census); nothing was changed",
            st.service
        );
    };
    Ok(pg
        .databases
        .iter()
        .filter(|(name, db)| backup_dbs.contains(*name) && !db.tables.is_empty())
        .map(|(name, db)| Occupied {
            database: name.clone(),
            tables: db.tables.len(),
            rows: db.rows(),
        })
        .collect())
}

/// Drops `databases` (sessions on them are ended) and re-creates `postgres` if it was among
/// them (the dump loads into it without creating it; the others it creates itself).
pub async fn empty_databases(
    engine: &dyn Engine,
    st: &StatefulService,
    container: &ContainerInfo,
    databases: &[String],
    ui: &Ui,
) -> anyhow::Result<()> {
    let fail =
        |what: String, e: pg::PgError| anyhow::anyhow!("{}: {what}: {}", st.service, e.message);
    let mut target = pg::target_for(engine, &st.service, container)
        .await
        .map_err(|e| fail("reading its credentials".into(), e))?;
    // Finds the way in (TCP or psql in the container); the drops run from template1.
    pg::connect_maintenance(engine, &mut target, Duration::from_secs(10))
        .await
        .map_err(|e| fail("connecting".into(), e))?;
    let session = pg::connect(engine, &target, "template1", Duration::from_secs(10))
        .await
        .map_err(|e| fail("connecting to template1".into(), e))?;
    let version: i64 = session
        .query("SELECT current_setting('server_version_num')")
        .await
        .map_err(|e| fail("reading the server version".into(), e))?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for db in databases {
        let q = pg::quote_ident(db);
        if version < 130000 {
            // No DROP ... WITH (FORCE) before 13: end the sessions first.
            session
                .execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
                    pg::quote_literal(db)
                ))
                .await
                .map_err(|e| fail(format!("ending the sessions on {db}"), e))?;
        }
        let force = if version >= 130000 {
            " WITH (FORCE)"
        } else {
            ""
        };
        session
            .execute(&format!("DROP DATABASE {q}{force}"))
            .await
            .map_err(|e| fail(format!("dropping database {db}"), e))?;
        ui.status(format!("{}: dropped database {db}", st.service));
        if db == "postgres" {
            session
                .execute("CREATE DATABASE postgres")
                .await
                .map_err(|e| fail("re-creating database postgres".into(), e))?;
        }
    }
    Ok(())
}

/// The outcome of [`load`].
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    pub file: PathBuf,
    pub service: String,
    pub load: LoadReport,
    pub census: CensusVerdict,
    pub details: Vec<String>,
}

impl Loaded {
    /// Says how it went; an error when the data does not match the backup's census.
    pub fn conclude(&self, ui: &Ui) -> anyhow::Result<()> {
        let (file, svc, details) = (self.file.display(), &self.service, &self.details);
        match self.census {
            CensusVerdict::Match => {
                ui.success(format!(
                    "loaded {file} into {svc}: the census matches the backup's"
                ));
                for d in details {
                    ui.status(format!("  {d}"));
                }
            }
            CensusVerdict::Superset => ui.success(format!(
                "loaded {file} into {svc}: everything in the backup's census is there, plus: {}",
                details.join("; ")
            )),
            CensusVerdict::NoBaseline => ui.success(format!(
                "loaded {file} into {svc} (not compared: {})",
                details.join("; ")
            )),
            CensusVerdict::Mismatch | CensusVerdict::Unverified => bail!(
                "{file} was loaded into {svc} but the data does not match the backup's census:\n  {}",
                details.join("\n  ")
            ),
        }
        Ok(())
    }
}

/// `now` restricted to the databases of the recorded census, and the names of the others.
fn only_backup_databases(
    recorded: Option<&serde_json::Value>,
    now: ServiceCensus,
) -> (ServiceCensus, Vec<String>) {
    let Ok(ServiceCensus::Postgres(before)) = restore::recorded_census(recorded) else {
        return (now, vec![]);
    };
    match now {
        ServiceCensus::Postgres(mut pg) => {
            let others: Vec<String> = pg
                .databases
                .keys()
                .filter(|d| !before.databases.contains_key(*d))
                .cloned()
                .collect();
            pg.databases.retain(|d, _| before.databases.contains_key(d));
            (ServiceCensus::Postgres(pg), others)
        }
        other => (other, vec![]),
    }
}

/// Loads a verified dump into the running service with psql (errors are counted, not fatal)
/// and compares the census with the one in the manifest.
pub async fn load(
    engine: &dyn Engine,
    st: &StatefulService,
    container: &ContainerInfo,
    file: &Path,
    sql_bytes: u64,
    manifest: Option<&BackupManifest>,
    ui: &Ui,
) -> anyhow::Result<Loaded> {
    let report = backup::load(engine, container, file, sql_bytes, ui).await?;
    if report.errors > 0 {
        let other = report.errors - report.already_exists;
        ui.status(format!(
            "psql reported {} error(s): {} \"already exists\" (expected when loading into an existing cluster), {other} other",
            report.errors, report.already_exists,
        ));
        for l in report.other_errors.iter().take(SHOWN_ERRORS) {
            ui.warn(l);
        }
        if other > SHOWN_ERRORS {
            ui.status(format!(
                "... and {} more (the census comparison below says whether data is missing)",
                other - SHOWN_ERRORS
            ));
        }
    }

    let mut verdict = CensusVerdict::NoBaseline;
    let mut details = Vec::new();
    if let Some(m) = manifest {
        if m.census.is_some() {
            let now = census_json(engine, st, container, ui)
                .await
                .and_then(|v| serde_json::from_value(v).ok());
            match now {
                None => {
                    verdict = CensusVerdict::Unverified;
                    details.push("census after the load failed".to_string());
                }
                Some(now) => {
                    // Only the backup's databases are compared; others were not touched.
                    let (now, untouched) = only_backup_databases(m.census.as_ref(), now);
                    (verdict, details) = CensusVerdict::from_check(restore::check_census(
                        m.census.as_ref(),
                        &now,
                        true,
                    ));
                    // More in the backup's databases than the backup holds: rows or tables
                    // that were there before the load, or doubled by it.
                    if verdict == CensusVerdict::Superset {
                        verdict = CensusVerdict::Mismatch;
                        details.insert(
                            0,
                            "the backup's databases hold more than the backup (rows that were there before the load, or loaded twice)".into(),
                        );
                    }
                    if !untouched.is_empty() {
                        details.push(format!(
                            "databases not in the backup, left as they were: {}",
                            untouched.join(", ")
                        ));
                    }
                }
            }
        } else {
            details.push("the backup has no census to compare with".into());
        }
    }
    Ok(Loaded {
        file: file.to_path_buf(),
        service: st.service.clone(),
        load: report,
        census: verdict,
        details,
    })
}
