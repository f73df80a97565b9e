//! `Stack::load`: parse each file, interpolate, merge, deserialise, validate, name the project.

use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::duration::parse_duration;
use super::interpolate::{key_display, Interpolator};
use super::merge::merge_documents;
use super::model::{ComposeFile, NetworkDef, Service, StringOrList, VolumeDef, VolumeType};
use super::position::{key_position, unclosed_quote};
use super::xnodus::{self, XNodus};
use super::{normalize_project_name, Env, ProjectSource, SourceFile, Stack, StackError};

pub(super) fn load(
    sources: &[SourceFile],
    env: &Env,
    project_override: Option<(&str, ProjectSource)>,
    dir_name: &str,
) -> Result<Stack, StackError> {
    if sources.is_empty() {
        return Err(StackError::Invalid {
            file: "(none)".into(),
            path: "(top level)".into(),
            message: "no stack files given".into(),
        });
    }
    let mut interp = Interpolator::new(env);
    let mut docs: Vec<Value> = Vec::with_capacity(sources.len());
    for src in sources {
        let file = display(&src.path);
        let mut doc = parse_document(&file, &src.text)?;
        interp.interpolate_value(&mut doc, "").map_err(|e| {
            let segs: Vec<&str> = e.path.split('.').collect();
            let (line, column) = key_position(&src.text, &segs).unwrap_or((0, 0));
            StackError::Interpolation {
                file: file.clone(),
                line,
                column,
                path: e.path.clone(),
                message: e.message,
            }
        })?;
        cast_types(&mut doc);
        docs.push(doc);
    }
    let warnings: Vec<String> = interp
        .unset
        .iter()
        .map(|name| format!("variable {name} is not set; using an empty string"))
        .collect();

    let mut merged = docs[0].clone();
    for doc in &docs[1..] {
        merge_documents(&mut merged, doc.clone());
    }
    let Value::Mapping(mut top) = merged else {
        // parse_document only returns mappings, and merging two mappings yields a mapping.
        return Err(StackError::Invalid {
            file: display(&sources[0].path),
            path: "(top level)".into(),
            message: "expected a mapping at the top level".into(),
        });
    };

    // ---- services, one by one so errors name the service ----
    let services_files = files_defining(sources, &docs, &["services"]);
    let services_map = match top.shift_remove("services") {
        Some(Value::Mapping(m)) => m,
        None | Some(Value::Null) => Mapping::new(),
        Some(other) => {
            return Err(StackError::Invalid {
                file: services_files,
                path: "services".into(),
                message: format!(
                    "expected a mapping of service names to their definitions, found {}",
                    kind_name(&other)
                ),
            })
        }
    };
    if services_map.is_empty() {
        return Err(StackError::Invalid {
            file: display_all(sources),
            path: "services".into(),
            message: "no services defined".into(),
        });
    }
    let mut services: IndexMap<String, Service> = IndexMap::new();
    for (k, v) in services_map {
        let name = match &k {
            Value::String(s) => s.clone(),
            other => {
                return Err(StackError::Invalid {
                    file: services_files,
                    path: "services".into(),
                    message: format!("service names must be strings, found {}", kind_name(other)),
                })
            }
        };
        let file = files_defining(sources, &docs, &["services", &name]);
        let path = format!("services.{name}");
        if !valid_service_name(&name) {
            return Err(StackError::Invalid {
                file,
                path,
                message: format!(
                    "invalid service name {name:?}: use letters, digits, `.`, `_` and `-`, starting with a letter or digit"
                ),
            });
        }
        if !v.is_mapping() {
            return Err(StackError::Invalid {
                file,
                path,
                message: format!(
                    "expected a mapping with at least `image:` or `build:`, found {}",
                    kind_name(&v)
                ),
            });
        }
        let svc: Service = serde_yaml::from_value(v).map_err(|e| {
            let want = strip_marks(&e.to_string());
            locate::<ServicesWrap>(sources, &docs, &["services", &name], &want).unwrap_or(
                StackError::Invalid {
                    file: file.clone(),
                    path: path.clone(),
                    message: want,
                },
            )
        })?;
        if svc.image.is_none() && svc.build.is_none() {
            return Err(StackError::Invalid {
                file,
                path,
                message: "has neither an `image:` nor a `build:` context".into(),
            });
        }
        services.insert(name, svc);
    }

    // ---- the rest of the file ----
    for key in ["volumes", "networks"] {
        if let Some(v) = top.get(key) {
            if !(v.is_mapping() || v.is_null()) {
                return Err(StackError::Invalid {
                    file: files_defining(sources, &docs, &[key]),
                    path: key.into(),
                    message: format!(
                        "expected a mapping of {key} names to definitions, found {}",
                        kind_name(v)
                    ),
                });
            }
        }
    }
    for (key, entries) in [
        ("volumes", top.get("volumes")),
        ("networks", top.get("networks")),
    ] {
        let Some(Value::Mapping(entries)) = entries else {
            continue;
        };
        for (name, def) in entries {
            let name = key_display(name);
            let res = if key == "volumes" {
                serde_yaml::from_value::<Option<VolumeDef>>(def.clone()).map(drop)
            } else {
                serde_yaml::from_value::<Option<NetworkDef>>(def.clone()).map(drop)
            };
            if let Err(e) = res {
                return Err(StackError::Invalid {
                    file: files_defining(sources, &docs, &[key, &name]),
                    path: format!("{key}.{name}"),
                    message: strip_marks(&e.to_string()),
                });
            }
        }
    }
    top.insert(
        Value::String("services".into()),
        Value::Mapping(Mapping::new()),
    );
    let mut compose: ComposeFile =
        serde_yaml::from_value(Value::Mapping(top)).map_err(|e| StackError::Invalid {
            file: display_all(sources),
            path: "(top level)".into(),
            message: strip_marks(&e.to_string()),
        })?;
    compose.services = services;

    // ---- x-nodus ----
    let nodus = match compose.extra.get("x-nodus") {
        None | Some(Value::Null) => XNodus::default(),
        Some(v) => xnodus::parse(v.clone()).map_err(|e| match e {
            xnodus::ParseError::Unknown(keys) => unknown_keys_error(sources, &docs, &keys),
            xnodus::ParseError::Invalid(e) => {
                let want = strip_marks(&e.to_string());
                locate::<XNodusWrap>(sources, &docs, &["x-nodus"], &want).unwrap_or_else(|| {
                    StackError::Invalid {
                        file: files_defining(sources, &docs, &["x-nodus"]),
                        path: "x-nodus".into(),
                        message: want,
                    }
                })
            }
        })?,
    };

    validate(&compose, &nodus, sources, &docs)?;

    // ---- project name ----
    let (raw, project_source) = match project_override {
        Some((p, s)) => (p.to_string(), s),
        None => match compose.name.as_deref().filter(|n| !n.trim().is_empty()) {
            Some(n) => (n.to_string(), ProjectSource::NameKey),
            None => (dir_name.to_string(), ProjectSource::Directory),
        },
    };
    let project = normalize_project_name(&raw);
    if project.is_empty() {
        let from = match project_source {
            ProjectSource::Flag => "from -p",
            ProjectSource::Environment => "from COMPOSE_PROJECT_NAME",
            ProjectSource::NameKey => "from `name:` in the stack",
            ProjectSource::Directory => "the stack directory's name",
        };
        return Err(StackError::ProjectName {
            name: raw,
            reason: format!(
                "{from}: nothing is left after keeping lowercase letters, digits, `-` and `_` (it must start with a letter or digit); pass a name with -p or set `name:` in the stack"
            ),
        });
    }

    Ok(Stack {
        project,
        project_source,
        files: sources.iter().map(|s| s.path.clone()).collect(),
        compose,
        nodus,
        warnings,
    })
}

fn validate(
    compose: &ComposeFile,
    nodus: &XNodus,
    sources: &[SourceFile],
    docs: &[Value],
) -> Result<(), StackError> {
    let names: Vec<String> = compose.services.keys().cloned().collect();
    for name in nodus.services.keys() {
        if !compose.services.contains_key(name) {
            return Err(StackError::Invalid {
                file: files_defining(sources, docs, &["x-nodus"]),
                path: format!("x-nodus.services.{name}"),
                message: format!(
                    "no service {name} in this stack (services: {})",
                    names.join(", ")
                ),
            });
        }
    }
    if let Some(settle) = &nodus.settle {
        parse_duration(settle).map_err(|e| StackError::Invalid {
            file: files_defining(sources, docs, &["x-nodus"]),
            path: "x-nodus.settle".into(),
            message: e,
        })?;
    }
    for (name, svc) in &compose.services {
        let file = || files_defining(sources, docs, &["services", name]);
        for dep in svc.depends_on.keys() {
            if !compose.services.contains_key(dep) {
                return Err(StackError::MissingDependency {
                    service: name.clone(),
                    dependency: dep.clone(),
                });
            }
        }
        for v in &svc.volumes {
            if v.kind != VolumeType::Volume {
                continue;
            }
            if let Some(src) = &v.source {
                if !compose.volumes.contains_key(src) {
                    return Err(StackError::Invalid {
                        file: file(),
                        path: format!("services.{name}.volumes"),
                        message: format!(
                            "service {name:?} refers to undefined volume {src}: declare it under the top-level `volumes:` key ({src}: {{}}), or use ./{src} for a directory beside the stack"
                        ),
                    });
                }
            }
        }
        if let Some(g) = &svc.stop_grace_period {
            parse_duration(g).map_err(|e| StackError::Invalid {
                file: file(),
                path: format!("services.{name}.stop_grace_period"),
                message: e,
            })?;
        }
        if let Some(hc) = &svc.healthcheck {
            let extra_start_interval = hc.extra.get("start_interval").and_then(Value::as_str);
            for (key, val) in [
                ("interval", hc.interval.as_deref()),
                ("timeout", hc.timeout.as_deref()),
                ("start_period", hc.start_period.as_deref()),
                ("start_interval", extra_start_interval),
            ] {
                if let Some(val) = val {
                    parse_duration(val).map_err(|e| StackError::Invalid {
                        file: file(),
                        path: format!("services.{name}.healthcheck.{key}"),
                        message: e,
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Parses one file into a YAML mapping (merge keys applied, scalar keys as strings).
fn parse_document(file: &str, text: &str) -> Result<Value, StackError> {
    let mut v: Value = serde_yaml::from_str(text).map_err(|e| yaml_error(file, text, &e))?;
    v.apply_merge().map_err(|e| StackError::Invalid {
        file: file.to_string(),
        path: "<<".into(),
        message: format!("YAML merge key: {}", strip_marks(&e.to_string())),
    })?;
    match v {
        Value::Mapping(_) => {}
        Value::Null => {
            return Err(StackError::Invalid {
                file: file.to_string(),
                path: "(top level)".into(),
                message: "the file is empty; a stack file needs at least a `services:` mapping"
                    .into(),
            })
        }
        other => {
            return Err(StackError::Invalid {
                file: file.to_string(),
                path: "(top level)".into(),
                message: format!(
                    "expected a mapping (services:, volumes:, ...) at the top level, found {}",
                    kind_name(&other)
                ),
            })
        }
    }
    stringify_keys(&mut v);
    Ok(v)
}

fn yaml_error(file: &str, text: &str, e: &serde_yaml::Error) -> StackError {
    let raw = e.to_string();
    let message = strip_marks(&raw);
    // An unclosed quote is noticed at the end of the file; point at where it opens.
    if raw.contains("quoted scalar") {
        if let Some((line, column)) = unclosed_quote(text) {
            return StackError::Syntax {
                file: file.to_string(),
                line,
                column,
                message: "this quoted string is never closed (add the closing quote)".into(),
            };
        }
    }
    match e.location() {
        Some(loc) => {
            // libyaml says "found character that cannot start any token" for a tab.
            let tab = text
                .lines()
                .nth(loc.line().saturating_sub(1))
                .and_then(|l| {
                    let lead = l.len() - l.trim_start_matches([' ', '\t']).len();
                    l[..lead].find('\t').or_else(|| {
                        (l.as_bytes().get(loc.column().saturating_sub(1)) == Some(&b'\t'))
                            .then(|| loc.column() - 1)
                    })
                });
            if let Some(col) = tab {
                return StackError::Syntax {
                    file: file.to_string(),
                    line: loc.line(),
                    column: col + 1,
                    message: "tabs are not allowed for indentation in YAML: indent with spaces"
                        .into(),
                };
            }
            StackError::Syntax {
                file: file.to_string(),
                line: loc.line(),
                column: loc.column(),
                message,
            }
        }
        None => StackError::Invalid {
            file: file.to_string(),
            path: "(document)".into(),
            message: e.to_string(),
        },
    }
}

#[derive(Clone, Copy)]
enum Cast {
    Bool,
    Int,
}

/// Fields that are not strings: an interpolated (or quoted) `"true"`/`"5"` there is converted, as
/// compose does after interpolation (`retries: ${RETRIES:-5}`, `harden: ${NODUS_HARDEN:-true}`).
const CASTS: &[(&str, Cast)] = &[
    ("services.*.healthcheck.retries", Cast::Int),
    ("services.*.healthcheck.disable", Cast::Bool),
    ("services.*.privileged", Cast::Bool),
    ("services.*.init", Cast::Bool),
    ("services.*.tty", Cast::Bool),
    ("services.*.stdin_open", Cast::Bool),
    ("services.*.read_only", Cast::Bool),
    ("services.*.volumes.*.read_only", Cast::Bool),
    ("services.*.ports.*.target", Cast::Int),
    ("services.*.depends_on.*.required", Cast::Bool),
    ("services.*.depends_on.*.restart", Cast::Bool),
    ("volumes.*.external", Cast::Bool),
    ("networks.*.external", Cast::Bool),
    ("x-nodus.harden", Cast::Bool),
    ("x-nodus.services.*.stateful", Cast::Bool),
    ("x-nodus.services.*.harden", Cast::Bool),
    ("x-nodus.services.*.roles.*.login", Cast::Bool),
    ("x-nodus.snapshots.on_down", Cast::Bool),
    ("x-nodus.snapshots.trust_mtime", Cast::Bool),
    ("x-nodus.snapshots.keep.*", Cast::Int),
];

fn cast_types(doc: &mut Value) {
    for (pattern, cast) in CASTS {
        let parts: Vec<&str> = pattern.split('.').collect();
        cast_at(doc, &parts, *cast);
    }
}

fn cast_at(v: &mut Value, path: &[&str], cast: Cast) {
    let Some((first, rest)) = path.split_first() else {
        if let Value::String(s) = v {
            let t = s.trim();
            let new = match cast {
                Cast::Bool => match t.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "y" | "on" => Some(Value::Bool(true)),
                    "false" | "no" | "n" | "off" => Some(Value::Bool(false)),
                    _ => None,
                },
                Cast::Int => t
                    .parse::<u64>()
                    .ok()
                    .map(|n| Value::Number(n.into()))
                    .or_else(|| t.parse::<i64>().ok().map(|n| Value::Number(n.into()))),
            };
            if let Some(new) = new {
                *v = new;
            }
        }
        return;
    };
    match v {
        Value::Mapping(m) if *first == "*" => m.values_mut().for_each(|c| cast_at(c, rest, cast)),
        Value::Sequence(items) if *first == "*" => {
            items.iter_mut().for_each(|c| cast_at(c, rest, cast))
        }
        Value::Mapping(m) => {
            if let Some(c) = m.get_mut(*first) {
                cast_at(c, rest, cast)
            }
        }
        _ => {}
    }
}

/// Number and boolean mapping keys become strings (YAML `1: x`), as compose reads them.
fn stringify_keys(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            let needs = m
                .keys()
                .any(|k| matches!(k, Value::Number(_) | Value::Bool(_)));
            if needs {
                let old = std::mem::take(m);
                for (k, val) in old {
                    let k = match k {
                        Value::Number(_) | Value::Bool(_) => Value::String(key_display(&k)),
                        other => other,
                    };
                    m.insert(k, val);
                }
            }
            for val in m.values_mut() {
                stringify_keys(val);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(stringify_keys),
        Value::Tagged(t) => stringify_keys(&mut t.value),
        _ => {}
    }
}

/// Removes libyaml/serde_yaml position suffixes (" at line 3 column 5") from a message.
pub(super) fn strip_marks(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + " at line ".len()..];
        let digits = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let after_line = &tail[digits..];
        if digits > 0 {
            if let Some(col) = after_line.strip_prefix(" column ") {
                let d2 = col.find(|c: char| !c.is_ascii_digit()).unwrap_or(col.len());
                if d2 > 0 {
                    rest = &col[d2..];
                    continue;
                }
            }
        }
        out.push_str(" at line ");
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn display_all(sources: &[SourceFile]) -> String {
    sources
        .iter()
        .map(|s| display(&s.path))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The files (comma-separated) whose document contains `path`; all files when none does.
fn files_defining(sources: &[SourceFile], docs: &[Value], path: &[&str]) -> String {
    let hits: Vec<String> = sources
        .iter()
        .zip(docs)
        .filter(|(_, doc)| {
            let mut cur = *doc;
            for p in path {
                match cur.get(*p) {
                    Some(next) => cur = next,
                    None => return false,
                }
            }
            true
        })
        .map(|(s, _)| display(&s.path))
        .collect();
    if hits.is_empty() {
        display_all(sources)
    } else {
        hits.join(", ")
    }
}

/// Every unknown `x-nodus` key with the file:line:col that writes it and the valid keys there.
fn unknown_keys_error(
    sources: &[SourceFile],
    docs: &[Value],
    keys: &[xnodus::UnknownKey],
) -> StackError {
    let problems = keys
        .iter()
        .map(|k| {
            let mut path: Vec<&str> = vec!["x-nodus"];
            path.extend(k.path.iter().map(String::as_str));
            let key = path.last().copied().unwrap_or_default();
            // The last file that writes it (override files win).
            let located = sources.iter().zip(docs).rev().find_map(|(src, doc)| {
                let mut cur = doc;
                for p in &path {
                    cur = match (cur, p.parse::<usize>()) {
                        (Value::Sequence(items), Ok(n)) => items.get(n)?,
                        _ => cur.get(*p)?,
                    };
                }
                let (l, c) = key_position(&src.text, &path)?;
                Some(format!("{}:{l}:{c}", display(&src.path)))
            });
            let place = located.unwrap_or_else(|| files_defining(sources, docs, &["x-nodus"]));
            let valid = if k.valid.is_empty() {
                String::new()
            } else {
                let valid: Vec<String> = k.valid.iter().map(|v| format!("`{v}`")).collect();
                format!(" (valid here: {})", valid.join(", "))
            };
            format!(
                "{place}: {}: unknown key `{key}`{valid}",
                path[..path.len() - 1].join(".")
            )
        })
        .collect();
    StackError::UnknownKeys { problems }
}

// ---- positions for errors found after merging ----------------------------------------------------

#[derive(Deserialize)]
struct XNodusWrap {
    #[serde(rename = "x-nodus", default)]
    _x: Option<XNodus>,
}

#[derive(Deserialize)]
struct ServicesWrap {
    #[serde(rename = "services", default)]
    _services: Option<IndexMap<String, Service>>,
}

/// Re-reads the raw text of the files defining `path` (last first) as `W`; when that fails with
/// the same message as the merged document did, the raw error carries the file:line:column.
fn locate<W: serde::de::DeserializeOwned>(
    sources: &[SourceFile],
    docs: &[Value],
    path: &[&str],
    want: &str,
) -> Option<StackError> {
    for (src, doc) in sources.iter().zip(docs).rev() {
        let mut cur = doc;
        let mut present = true;
        for p in path {
            match cur.get(*p) {
                Some(next) => cur = next,
                None => {
                    present = false;
                    break;
                }
            }
        }
        if !present {
            continue;
        }
        if let Err(e) = serde_yaml::from_str::<W>(&src.text) {
            let got = strip_marks(&e.to_string());
            if let Some(loc) = e.location() {
                if got.contains(want) {
                    return Some(StackError::Syntax {
                        file: display(&src.path),
                        line: loc.line(),
                        column: loc.column(),
                        message: got,
                    });
                }
            }
        }
    }
    None
}

// ---- relative paths ------------------------------------------------------------------------------

/// Makes relative host paths absolute against `base` (the stack directory): bind mount sources,
/// `env_file:`, `build:` contexts and top-level `secrets`/`configs` files. `~` is `home`.
/// Needed because the generated file lives in `.nodus/`, and compose resolves relative paths
/// against the compose file's directory; the engine needs absolute paths anyway.
pub fn resolve_paths(compose: &mut ComposeFile, base: &Path, home: Option<&Path>) {
    let abs = |p: &str| -> String { absolutise(p, base, home) };
    for svc in compose.services.values_mut() {
        for v in &mut svc.volumes {
            if v.kind == VolumeType::Bind {
                if let Some(src) = &v.source {
                    v.source = Some(abs(src));
                }
            }
        }
        svc.env_file = svc.env_file.take().map(|ef| match ef {
            StringOrList::String(s) => StringOrList::String(abs(&s)),
            StringOrList::List(l) => StringOrList::List(l.iter().map(|s| abs(s)).collect()),
        });
        match &mut svc.build {
            Some(Value::String(ctx)) if is_local_context(ctx) => *ctx = abs(ctx),
            Some(Value::Mapping(m)) => match m.get_mut("context") {
                Some(Value::String(ctx)) => {
                    if is_local_context(ctx) {
                        *ctx = abs(ctx);
                    }
                }
                Some(_) => {}
                None => {
                    m.insert(Value::String("context".into()), Value::String(abs(".")));
                }
            },
            _ => {}
        }
    }
    for key in ["secrets", "configs"] {
        if let Some(Value::Mapping(m)) = compose.extra.get_mut(key) {
            for def in m.values_mut() {
                if let Some(Value::String(f)) = def.get_mut("file") {
                    *f = abs(f);
                }
            }
        }
    }
}

fn is_local_context(ctx: &str) -> bool {
    !(ctx.contains("://") || ctx.starts_with("git@") || ctx.starts_with("github.com/"))
}

fn absolutise(p: &str, base: &Path, home: Option<&Path>) -> String {
    let path = Path::new(p);
    if path.is_absolute() {
        return p.to_string();
    }
    let joined: PathBuf = match (p, home) {
        ("~", Some(h)) => h.to_path_buf(),
        (_, Some(h)) if p.starts_with("~/") => h.join(&p[2..]),
        _ => base.join(path),
    };
    clean(&joined).display().to_string()
}

/// Lexical clean-up of `.` and `..` components (as compose's filepath.Join does).
fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped =
                    matches!(out.components().next_back(), Some(Component::Normal(_))) && out.pop();
                if !popped && !matches!(out.components().next_back(), Some(Component::RootDir)) {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests;
