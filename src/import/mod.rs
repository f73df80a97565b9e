//! `nodus import`: a nodus stack file from an existing compose file.
//!
//! The output is the user's file as written (variables stay `${VAR}`) with nodus' hardening made
//! explicit — named volumes at data dirs, stop signal, grace period, health checks — plus an
//! `x-nodus` block naming each database service's kind and databases, and a header comment
//! saying what changed and why. The original file is never written. `migrate.rs` moves data
//! from bind mounts and anonymous volumes into the new named volumes (`--migrate-data`).

pub mod migrate;

use indexmap::IndexMap;
use serde_yaml::{Mapping, Value};

use crate::doctor::dsn;
use crate::project::Project;
use crate::stack::harden::is_under;
use crate::stack::interpolate::escape;
use crate::stack::model::{ComposeFile, ServiceVolume, StringOrList, VolumeDef, VolumeType};
use crate::stack::{FindingLevel, ServiceKind, SourceFile};

/// Where a service's data is now, when it has to move to a named volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum DataSource {
    Bind(String),
    Anonymous,
}

/// A data move `--migrate-data` performs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migration {
    pub service: String,
    pub kind: ServiceKind,
    pub from: DataSource,
    /// The path in the container whose content moves (a mount target or the data dir).
    pub path: String,
    pub volume_key: String,
    /// Engine name of the new volume.
    pub volume_name: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportPlan {
    /// The stack file to write.
    pub yaml: String,
    /// What changed and why, per service ("" = the stack).
    pub changes: Vec<(String, String)>,
    /// Data moves (with `--migrate-data`) or data that stays where it is (without).
    pub migrations: Vec<Migration>,
    /// Warnings for the user (data left behind...).
    pub warnings: Vec<String>,
}

/// Builds the stack file. `live_databases` are the databases a running server holds (by service).
pub fn plan(
    project: &Project,
    source: &SourceFile,
    migrate_data: bool,
    live_databases: &IndexMap<String, Vec<String>>,
) -> ImportPlan {
    let stack = &project.stack;
    let hardened = &project.hardened;
    let mut changes: Vec<(String, String)> = Vec::new();
    let mut warnings = Vec::new();
    let mut migrations = Vec::new();

    // The file as written: variables not interpolated. Falls back to the interpolated model when
    // the raw text does not deserialise (a `${VAR}` in a typed field).
    let mut raw: ComposeFile = match serde_yaml::from_str::<ComposeFile>(&source.text) {
        Ok(c) => c,
        Err(e) => {
            warnings.push(format!(
                "{} could not be read without interpolating variables ({e}); the stack file has their current values",
                source.path.display()
            ));
            stack.compose.clone()
        }
    };

    for st in &hardened.stateful {
        let name = &st.service;
        let (Some(orig), Some(hard)) = (
            stack.compose.services.get(name),
            hardened.compose.services.get(name),
        ) else {
            continue;
        };
        let Some(rsvc) = raw.services.get_mut(name) else {
            continue;
        };
        // The mount holding the data now (as written, paths absolute).
        let covering = orig
            .volumes
            .iter()
            .filter(|v| is_under(&st.data_dir, &v.target))
            .max_by_key(|v| v.target.trim_end_matches('/').len())
            .cloned();
        // Mounts: what hardening changed (an anonymous source named) or added.
        let n = rsvc.volumes.len().min(orig.volumes.len());
        for i in 0..n {
            let (o, h) = (&orig.volumes[i], &hard.volumes[i]);
            if o.source.is_none() && h.source.is_some() && o.kind == VolumeType::Volume {
                rsvc.volumes[i].source = h.source.clone();
            }
        }
        for h in hard.volumes.iter().skip(orig.volumes.len()) {
            rsvc.volumes.push(h.clone());
        }
        // A bind mount moves to a named volume only with --migrate-data.
        if let Some(c) = covering.as_ref().filter(|c| c.kind == VolumeType::Bind) {
            let path = c.source.clone().unwrap_or_default();
            if migrate_data {
                let key = fresh_key(&raw, name);
                let vname = format!("{}_{key}", stack.project);
                if let Some(rsvc) = raw.services.get_mut(name) {
                    for v in rsvc.volumes.iter_mut() {
                        if v.kind == VolumeType::Bind && v.target == c.target {
                            *v = ServiceVolume {
                                kind: VolumeType::Volume,
                                source: Some(key.clone()),
                                target: c.target.clone(),
                                read_only: false,
                                extra: IndexMap::new(),
                            };
                        }
                    }
                }
                raw.volumes.insert(key.clone(), VolumeDef::default());
                changes.push((
                    name.clone(),
                    format!("bind mount {path} at {} replaced by named volume {key}; its data was copied there by `nodus import --migrate-data` (the directory itself is left as it was)", c.target),
                ));
                migrations.push(Migration {
                    service: name.clone(),
                    kind: st.kind,
                    from: DataSource::Bind(path),
                    path: c.target.clone(),
                    volume_key: key,
                    volume_name: vname,
                });
            } else {
                changes.push((
                    name.clone(),
                    format!("bind mount {path} at {} kept: nodus does not snapshot bind mounts; `nodus import --migrate-data` moves it to a named volume", c.target),
                ));
            }
        } else if let (Some(key), Some(vname)) = (&st.volume_key, &st.volume_name) {
            // Data on an anonymous volume (declared, or the image's VOLUME) moves to the named one.
            let anonymous = match &covering {
                None => true,
                Some(c) => {
                    c.kind == VolumeType::Volume
                        && (c.source.is_none()
                            || c.target != st.data_dir && hardened_added(orig, hard, &st.data_dir))
                }
            };
            if anonymous {
                if migrate_data {
                    migrations.push(Migration {
                        service: name.clone(),
                        kind: st.kind,
                        from: DataSource::Anonymous,
                        path: st.data_dir.clone(),
                        volume_key: key.clone(),
                        volume_name: vname.clone(),
                    });
                    changes.push((
                        name.clone(),
                        format!("the data of the anonymous volume at {} was copied into named volume {key} by `nodus import --migrate-data`", st.data_dir),
                    ));
                } else {
                    warnings.push(format!(
                        "{name}: its data is on an anonymous volume today; the stack file mounts named volume {key} instead, which starts EMPTY. Run the import with --migrate-data to copy the data over"
                    ));
                }
            }
        }
        // Signal, grace, health check.
        let rsvc = raw.services.get_mut(name).expect("service present");
        if rsvc.stop_signal.is_none() && hard.stop_signal.is_some() {
            rsvc.stop_signal = hard.stop_signal.clone();
        }
        if rsvc.stop_grace_period != hard.stop_grace_period {
            rsvc.stop_grace_period = hard.stop_grace_period.clone();
        }
        if rsvc.healthcheck.is_none() && hard.healthcheck.is_some() {
            // The check's `$` are for the container's shell: `$$` in a compose file.
            let mut hc = hard.healthcheck.clone();
            if let Some(h) = hc.as_mut() {
                h.test = match h.test.take() {
                    Some(StringOrList::List(l)) => {
                        Some(StringOrList::List(l.iter().map(|t| escape(t)).collect()))
                    }
                    Some(StringOrList::String(t)) => Some(StringOrList::String(escape(&t))),
                    None => None,
                };
            }
            rsvc.healthcheck = hc;
        }
    }
    for (k, v) in &hardened.compose.volumes {
        if !raw.volumes.contains_key(k) {
            let used = raw
                .services
                .values()
                .any(|s| s.volumes.iter().any(|m| m.source.as_deref() == Some(k)));
            if used {
                raw.volumes.insert(k.clone(), v.clone());
            }
        }
    }
    for f in &hardened.findings {
        if f.level == FindingLevel::Fixed && !f.message.starts_with("port ") {
            changes.push((f.service.clone(), f.message.clone()));
        }
    }

    // x-nodus: kinds and databases.
    let x = xnodus_block(
        project,
        raw.extra.get("x-nodus"),
        live_databases,
        &mut changes,
    );
    raw.extra.insert("x-nodus".into(), x);
    // The same project as the compose file had, wherever the stack file is written.
    raw.name = Some(stack.project.clone());

    let header = header(source, &changes, &warnings);
    let yaml = crate::stack::harden::render_stack_file(&raw, &header)
        .unwrap_or_else(|e| format!("# rendering failed: {e}\n"));
    ImportPlan {
        yaml,
        changes,
        migrations,
        warnings,
    }
}

/// Hardening mounted a named volume at `data_dir` that the original did not have (the
/// parent-mount case: the data was on the image's anonymous VOLUME).
fn hardened_added(
    orig: &crate::stack::Service,
    hard: &crate::stack::Service,
    data_dir: &str,
) -> bool {
    !orig.volumes.iter().any(|v| v.target == data_dir)
        && hard.volumes.iter().any(|v| v.target == data_dir)
}

fn fresh_key(c: &ComposeFile, service: &str) -> String {
    let used = |k: &str| {
        c.volumes.contains_key(k)
            || c.services
                .values()
                .any(|s| s.volumes.iter().any(|v| v.source.as_deref() == Some(k)))
    };
    let base = format!("{service}_data");
    if !used(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}_{i}"))
        .find(|k| !used(k))
        .unwrap_or(base)
}

fn xnodus_block(
    project: &Project,
    existing: Option<&Value>,
    live: &IndexMap<String, Vec<String>>,
    changes: &mut Vec<(String, String)>,
) -> Value {
    let stack = &project.stack;
    let mut top = match existing {
        Some(Value::Mapping(m)) => m.clone(),
        _ => Mapping::new(),
    };
    let mut services = match top.get("services") {
        Some(Value::Mapping(m)) => m.clone(),
        _ => Mapping::new(),
    };
    for st in &project.hardened.stateful {
        let name = &st.service;
        let mut entry = match services.get(name.as_str()) {
            Some(Value::Mapping(m)) => m.clone(),
            _ => Mapping::new(),
        };
        if !entry.contains_key("kind") {
            entry.insert(
                "kind".into(),
                Value::String(crate::guard::census::kind_str(st.kind).into()),
            );
        }
        if st.kind == ServiceKind::Postgres {
            let mut found: Vec<(String, String)> = Vec::new();
            let svc = &stack.compose.services[name];
            let user = svc
                .environment
                .get("POSTGRES_USER")
                .cloned()
                .flatten()
                .unwrap_or_else(|| "postgres".into());
            if let Some(Some(db)) = svc.environment.get("POSTGRES_DB") {
                found.push((db.clone(), "POSTGRES_DB".into()));
            }
            for (other, osvc) in &stack.compose.services {
                for d in dsn::dsns_of(osvc) {
                    if !d.database.is_empty() && dsn::resolve_server(stack, &d).0 == *name {
                        found.push((d.database.clone(), format!("{} of {other}", d.var)));
                    }
                }
            }
            for v in &svc.volumes {
                if v.kind == VolumeType::Bind && is_under(&v.target, "/docker-entrypoint-initdb.d")
                {
                    for db in init_script_databases(v.source.as_deref().unwrap_or("")) {
                        found.push((db, "init scripts".into()));
                    }
                }
            }
            for db in live.get(name).into_iter().flatten() {
                found.push((db.clone(), "the running server".into()));
            }
            let mut dbs = match entry.get("databases") {
                Some(Value::Sequence(s)) => s.clone(),
                _ => Vec::new(),
            };
            let has = |dbs: &Vec<Value>, n: &str| {
                dbs.iter()
                    .any(|d| d.get("name").and_then(Value::as_str) == Some(n))
            };
            for (db, why) in found {
                if db == "postgres"
                    || db.starts_with("template")
                    || (db == user && why != "POSTGRES_DB")
                    || has(&dbs, &db)
                {
                    continue;
                }
                let mut m = Mapping::new();
                m.insert("name".into(), Value::String(db.clone()));
                dbs.push(Value::Mapping(m));
                changes.push((
                    name.clone(),
                    format!("x-nodus: database {db} (from {why}) is checked and created if missing on every `nodus up`"),
                ));
            }
            if !dbs.is_empty() {
                entry.insert("databases".into(), Value::Sequence(dbs));
            }
        }
        services.insert(Value::String(name.clone()), Value::Mapping(entry));
    }
    top.insert("services".into(), Value::Mapping(services));
    Value::Mapping(top)
}

/// `CREATE DATABASE` names in the `.sql` files of a bind-mounted init directory (or file).
fn init_script_databases(src: &str) -> Vec<String> {
    let p = std::path::Path::new(src);
    let files: Vec<std::path::PathBuf> = if p.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    } else {
        vec![p.to_path_buf()]
    };
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sql"))
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            crate::doctor::live::created_objects(&t)
                .into_iter()
                .filter(|(k, _)| *k == "database")
                .map(|(_, n)| n)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn header(source: &SourceFile, changes: &[(String, String)], warnings: &[String]) -> String {
    let mut h = format!(
        "# nodus stack file imported from {} by `nodus import` ({}).\n\
         # The original file was not changed. Use it with: nodus -f <this file> up\n",
        source.path.display(),
        chrono::Utc::now().format("%Y-%m-%d")
    );
    if !changes.is_empty() {
        h.push_str("#\n# What changed and why:\n");
        for (svc, c) in changes {
            let who = if svc.is_empty() {
                String::new()
            } else {
                format!("{svc}: ")
            };
            for (i, line) in wrap(&format!("{who}{c}"), 96).into_iter().enumerate() {
                h.push_str(if i == 0 { "#   - " } else { "#     " });
                h.push_str(&line);
                h.push('\n');
            }
        }
    }
    for w in warnings {
        for (i, line) in wrap(&format!("WARNING: {w}"), 96).into_iter().enumerate() {
            h.push_str(if i == 0 { "#   ! " } else { "#     " });
            h.push_str(&line);
            h.push('\n');
        }
    }
    h.push('\n');
    h
}

fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    for w in s.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + w.len() > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        out.push(line);
    }
    out
}
