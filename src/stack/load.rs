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
mod tests {
    use super::*;
    use crate::stack::model::{DependsCondition, Port};
    use crate::stack::ServiceKind;

    fn src(name: &str, text: &str) -> SourceFile {
        SourceFile {
            path: PathBuf::from(name),
            text: text.to_string(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load1(text: &str) -> Result<Stack, StackError> {
        Stack::load(&[src("stack.yaml", text)], &Env::new(), None, "mydir")
    }

    const PG: &str = "services:\n  db:\n    image: postgres:15\n";

    #[test]
    fn minimal_stack_loads() {
        let s = load1(PG).unwrap();
        assert_eq!(s.project, "mydir");
        assert_eq!(s.project_source, ProjectSource::Directory);
        assert_eq!(s.service_names(), vec!["db"]);
        assert!(s.nodus.harden);
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn environment_list_and_map_syntax() {
        let s = load1("services:\n  a:\n    image: x\n    environment: [A=1, B=, C, 'D=x=y']\n  b:\n    image: x\n    environment:\n      A: 1\n      B: true\n      C:\n").unwrap();
        let a = &s.compose.services["a"].environment;
        assert_eq!(a["A"], Some("1".into()));
        assert_eq!(a["B"], Some("".into()));
        assert_eq!(a["C"], None);
        assert_eq!(a["D"], Some("x=y".into()));
        let b = &s.compose.services["b"].environment;
        assert_eq!(b["A"], Some("1".into()));
        assert_eq!(b["B"], Some("true".into()));
        assert_eq!(b["C"], None);
    }

    #[test]
    fn volume_short_syntax() {
        let s = load1(
            "services:\n  db:\n    image: x\n    volumes:\n      - pg:/var/lib/postgresql/data\n      - ./init:/docker-entrypoint-initdb.d:ro\n      - /anon\n      - ~/h:/h\n      - type: tmpfs\n        target: /t\nvolumes:\n  pg:\n",
        )
        .unwrap();
        let v = &s.compose.services["db"].volumes;
        assert_eq!(v[0].kind, VolumeType::Volume);
        assert_eq!(v[0].source.as_deref(), Some("pg"));
        assert_eq!(v[0].target, "/var/lib/postgresql/data");
        assert!(!v[0].read_only);
        assert_eq!(v[1].kind, VolumeType::Bind);
        assert!(v[1].read_only);
        assert_eq!(v[2].kind, VolumeType::Volume);
        assert_eq!(v[2].source, None);
        assert_eq!(v[2].target, "/anon");
        assert_eq!(v[3].kind, VolumeType::Bind);
        assert_eq!(v[4].kind, VolumeType::Tmpfs);
        assert!(s.compose.volumes.contains_key("pg"));
    }

    #[test]
    fn interpolation_applies_to_values_and_reports_unset() {
        let s = Stack::load(
            &[src(
                "s.yaml",
                "services:\n  db:\n    image: ${IMG:-postgres:15}\n    environment:\n      PW: $PW\n      U: ${NOPE}\n      LIT: a$$b\n",
            )],
            &env(&[("PW", "s3cret")]),
            None,
            "d",
        )
        .unwrap();
        let db = &s.compose.services["db"];
        assert_eq!(db.image.as_deref(), Some("postgres:15"));
        assert_eq!(db.environment["PW"], Some("s3cret".into()));
        assert_eq!(db.environment["U"], Some("".into()));
        assert_eq!(db.environment["LIT"], Some("a$b".into()));
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("NOPE"));
    }

    #[test]
    fn interpolation_error_names_file_and_path() {
        let err = Stack::load(
            &[src("s.yaml", "services:\n  db:\n    image: x\n    environment:\n      PW: ${PW:?set PW in .env}\n")],
            &Env::new(),
            None,
            "d",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StackError::Interpolation { .. }));
        // file:line:col of the key holding the `${PW:?...}` (issue 8, item 12).
        assert!(
            msg.starts_with("s.yaml:5:7: services.db.environment.PW: "),
            "{msg}"
        );
        assert!(msg.contains("set PW in .env"), "{msg}");
    }

    #[test]
    fn override_files_merge_in_order() {
        let s = Stack::load(
            &[
                src("a.yaml", "services:\n  db:\n    image: postgres:15\n    environment: {A: '1'}\n    ports: ['5432:5432']\n"),
                src("b.yaml", "services:\n  db:\n    image: postgres:16\n    environment: [B=2]\n    ports: ['6543:5432']\n"),
            ],
            &Env::new(),
            None,
            "d",
        )
        .unwrap();
        let db = &s.compose.services["db"];
        assert_eq!(db.image.as_deref(), Some("postgres:16"));
        assert_eq!(db.environment.len(), 2);
        assert_eq!(
            db.ports,
            vec![
                Port::Short("5432:5432".into()),
                Port::Short("6543:5432".into())
            ]
        );
        assert_eq!(s.files.len(), 2);
    }

    #[test]
    fn yaml_syntax_error_has_line_and_column() {
        let err = load1("services:\n  db:\n    image: x\n   bad: [\n").unwrap_err();
        match &err {
            StackError::Syntax {
                file,
                line,
                column,
                message,
            } => {
                assert_eq!(file, "stack.yaml");
                assert!(*line >= 3, "{err}");
                assert!(*column >= 1);
                assert!(!message.contains(" at line "), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let shown = err.to_string();
        assert!(shown.starts_with("stack.yaml:"), "{shown}");
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let err = load1("services:\n  db:\n    image: x\n    image: y\n").unwrap_err();
        assert!(
            matches!(err, StackError::Syntax { line: 3..=4, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("duplicate entry with key \"image\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_xnodus_key_lists_alternatives_with_position() {
        let err = load1(&format!("{PG}x-nodus:\n  harden: true\n  hardne: false\n")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StackError::UnknownKeys { .. }), "{msg}");
        assert!(msg.starts_with("stack.yaml:6:3: "), "{msg}");
        assert!(msg.contains("hardne"), "{msg}");
        for alt in ["harden", "settle", "services", "snapshots"] {
            assert!(msg.contains(alt), "{msg}");
        }
        let err = load1(&format!(
            "{PG}x-nodus:\n  services:\n    db:\n      databses: []\n"
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("databses") && msg.contains("databases") && msg.contains("data_dir"),
            "{msg}"
        );
        assert!(msg.starts_with("stack.yaml:7:"), "{msg}");
    }

    #[test]
    fn every_unknown_xnodus_key_is_reported_with_its_position() {
        let err = load1(&format!(
            "{PG}x-nodus:\n  hardne: true\n  services:\n    db:\n      databses: []\n      roles:\n        - name: r\n          pasword_env: X\n  snapshots:\n    kep: {{last: 1}}\n"
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("4 unknown keys in x-nodus:"), "{msg}");
        for want in [
            "stack.yaml:5:3: x-nodus: unknown key `hardne`",
            "stack.yaml:8:7: x-nodus.services.db: unknown key `databses`",
            "stack.yaml:11:11: x-nodus.services.db.roles.0: unknown key `pasword_env`",
            "stack.yaml:13:5: x-nodus.snapshots: unknown key `kep`",
        ] {
            assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
        }
        assert!(msg.contains("password_env"), "{msg}");
    }

    #[test]
    fn a_tab_in_the_indentation_is_named() {
        let err = load1("services:\n  db:\n\timage: x\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                StackError::Syntax {
                    line: 3,
                    column: 1,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("tabs are not allowed for indentation"),
            "{msg}"
        );
        let err = load1("services:\n  db:\n  \t image: x\n").unwrap_err();
        assert!(err.to_string().starts_with("stack.yaml:3:3: tabs"), "{err}");
    }

    #[test]
    fn an_unclosed_quote_is_located_where_it_opens() {
        let err = load1(
            "services:\n  db:\n    image: \"postgres:15\n    environment:\n      A: b\n    ports:\n      - 5432\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                StackError::Syntax {
                    line: 3,
                    column: 12,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("never closed"), "{msg}");
    }

    #[test]
    fn unknown_xnodus_key_found_after_interpolation_still_reported() {
        // The raw text cannot be parsed as x-nodus (a ${} in a bool), so no position: still the list.
        let err = load1(&format!(
            "{PG}x-nodus:\n  harden: ${{H:-true}}\n  bogus: 1\n"
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bogus") && msg.contains("snapshots"), "{msg}");
    }

    #[test]
    fn interpolated_bools_and_numbers_are_cast() {
        let s = Stack::load(
            &[src(
                "s.yaml",
                "services:\n  db:\n    image: x\n    privileged: ${P:-false}\n    healthcheck:\n      test: [CMD, x]\n      retries: ${R}\n    environment:\n      N: ${R}\nx-nodus:\n  harden: ${H:-false}\n  snapshots:\n    keep:\n      daily: '7'\n",
            )],
            &env(&[("R", "12")]),
            None,
            "d",
        )
        .unwrap();
        let db = &s.compose.services["db"];
        assert_eq!(db.privileged, Some(false));
        assert_eq!(db.healthcheck.as_ref().unwrap().retries, Some(12));
        assert_eq!(
            db.environment["N"],
            Some("12".into()),
            "environment values stay strings"
        );
        assert!(!s.nodus.harden);
        assert_eq!(s.nodus.snapshots.keep.daily, Some(7));
    }

    #[test]
    fn xnodus_is_parsed() {
        let s = load1(&format!(
            "{PG}x-nodus:\n  settle: 2s\n  services:\n    db:\n      kind: postgres\n      databases:\n        - name: app\n          extensions: [pg_trgm]\n  snapshots:\n    keep: {{hourly: 168}}\n"
        ))
        .unwrap();
        assert_eq!(s.nodus.settle.as_deref(), Some("2s"));
        assert_eq!(s.nodus.services["db"].kind, Some(ServiceKind::Postgres));
        assert_eq!(
            s.nodus.services["db"].databases[0].extensions,
            vec!["pg_trgm"]
        );
        assert_eq!(s.nodus.snapshots.keep.hourly, Some(168));
        assert!(s.nodus.snapshots.on_down);
        // kept in the compose passthrough
        assert!(s.compose.extra.contains_key("x-nodus"));
    }

    #[test]
    fn xnodus_for_unknown_service_is_rejected() {
        let err = load1(&format!(
            "{PG}x-nodus:\n  services:\n    dbb:\n      stateful: true\n"
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("dbb") && msg.contains("services: db"), "{msg}");
    }

    #[test]
    fn missing_dependency() {
        let err = load1("services:\n  app:\n    image: x\n    depends_on:\n      db:\n        condition: service_healthy\n").unwrap_err();
        assert!(
            matches!(err, StackError::MissingDependency { ref service, ref dependency } if service == "app" && dependency == "db")
        );
        let s = load1("services:\n  app:\n    image: x\n    depends_on:\n      db:\n        condition: service_healthy\n  db:\n    image: y\n").unwrap();
        assert_eq!(
            s.compose.services["app"].depends_on["db"].condition,
            DependsCondition::ServiceHealthy
        );
    }

    #[test]
    fn undeclared_named_volume() {
        let err = load1(
            "services:\n  db:\n    image: x\n    volumes: ['pgdata:/var/lib/postgresql/data']\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("undefined volume pgdata"), "{msg}");
        assert!(msg.contains("services.db.volumes"), "{msg}");
    }

    #[test]
    fn durations_are_checked() {
        let err = load1("services:\n  db:\n    image: x\n    stop_grace_period: 10 seconds\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("services.db.stop_grace_period"),
            "{err}"
        );
        let err = load1("services:\n  db:\n    image: x\n    healthcheck:\n      test: [CMD, x]\n      interval: fast\n").unwrap_err();
        assert!(
            err.to_string().contains("services.db.healthcheck.interval"),
            "{err}"
        );
        let err = load1(&format!("{PG}x-nodus:\n  settle: soon\n")).unwrap_err();
        assert!(err.to_string().contains("x-nodus.settle"), "{err}");
    }

    #[test]
    fn project_name_precedence_and_normalisation() {
        let text = "name: My_Stack\nservices:\n  db:\n    image: x\n";
        let s = Stack::load(
            &[src("s.yaml", text)],
            &Env::new(),
            Some(("Flag.Name", ProjectSource::Flag)),
            "dir",
        )
        .unwrap();
        assert_eq!(s.project, "flagname");
        assert_eq!(s.project_source, ProjectSource::Flag);
        let s = Stack::load(&[src("s.yaml", text)], &Env::new(), None, "dir").unwrap();
        assert_eq!(s.project, "my_stack");
        assert_eq!(s.project_source, ProjectSource::NameKey);
        let s = Stack::load(&[src("s.yaml", PG)], &Env::new(), None, "My Dir").unwrap();
        assert_eq!(s.project, "mydir");
        let err = Stack::load(&[src("s.yaml", PG)], &Env::new(), None, "___").unwrap_err();
        assert!(matches!(err, StackError::ProjectName { .. }), "{err}");
        let err = Stack::load(
            &[src("s.yaml", PG)],
            &Env::new(),
            Some(("!!!", ProjectSource::Environment)),
            "d",
        )
        .unwrap_err();
        assert!(err.to_string().contains("COMPOSE_PROJECT_NAME"), "{err}");
        // name: may be interpolated
        let s = Stack::load(
            &[src(
                "s.yaml",
                "name: ${N:-x-1}\nservices:\n  a:\n    image: b\n",
            )],
            &Env::new(),
            None,
            "d",
        )
        .unwrap();
        assert_eq!(s.project, "x-1");
    }

    #[test]
    fn normalisation_rules() {
        assert_eq!(normalize_project_name("Hello World"), "helloworld");
        assert_eq!(normalize_project_name("_-a.b"), "ab");
        assert_eq!(normalize_project_name("nodus-dev"), "nodus-dev");
        assert_eq!(normalize_project_name("ÄÖ"), "");
    }

    #[test]
    fn yaml_anchors_and_merge_keys() {
        let s = load1(
            "x-common: &common\n  restart: always\n  environment:\n    TZ: UTC\nservices:\n  a:\n    <<: *common\n    image: x\n  b:\n    <<: *common\n    image: y\n    restart: 'no'\n",
        )
        .unwrap();
        assert_eq!(s.compose.services["a"].restart.as_deref(), Some("always"));
        assert_eq!(s.compose.services["b"].restart.as_deref(), Some("no"));
        assert_eq!(
            s.compose.services["b"].environment["TZ"],
            Some("UTC".into())
        );
    }

    #[test]
    fn adversarial_inputs_do_not_panic() {
        let cases = [
            "",
            "# only a comment\n",
            "- a\n- b\n",
            "42\n",
            "services: [db, cache]\n",
            "services:\n  db:\n",
            "services:\n  db: postgres\n",
            "services:\n  1: {image: x}\n",
            "services:\n  true: {image: x}\n",
            "services:\n  ? [a, b]\n  : {image: x}\n",
            "services:\n  db: {image: [1, 2]}\n",
            "services:\n  db: {image: x, volumes: 3}\n",
            "services:\n  db: {image: x, volumes: ['a:b:c:d']}\n",
            "services:\n  db: {image: x, environment: 3}\n",
            "services:\n  db: {image: x, ports: [{}]}\n",
            "services:\n  db: {image: x, depends_on: 3}\n",
            "services:\n  db: {image: x}\nvolumes: [a]\n",
            "services:\n  db: {image: x}\nx-nodus: 3\n",
            "services:\n  db: {image: x}\nx-nodus: {services: [db]}\n",
            "services:\n  db: {image: x}\nname: [a]\n",
            "services:\n  db: {image: x, healthcheck: {retries: -1}}\n",
            "a: &a [*a]\n",
            "a: !!binary aGVsbG8=\nservices:\n  db: {image: x}\n",
            "services:\n  db: {image: x, <<: 3}\n",
            "\t\tservices:\n",
            "services:\n  db: {image: \"${\"}\n",
            "services:\n  'bad name!': {image: x}\n",
            "services: {}\n",
            "---\na: 1\n---\nb: 2\n",
        ];
        for text in cases {
            let r = load1(text);
            if let Err(e) = &r {
                assert!(!e.to_string().is_empty());
            }
        }
        // numbers as service names are read as strings
        let s = load1("services:\n  1: {image: x}\n").unwrap();
        assert_eq!(s.service_names(), vec!["1"]);
        assert!(load1("").is_err());
        assert!(load1("- a\n").is_err());
        assert!(load1("services: [db]\n")
            .unwrap_err()
            .to_string()
            .contains("found a list"));
        assert!(load1("services:\n  db:\n")
            .unwrap_err()
            .to_string()
            .contains("services.db"));
    }

    #[test]
    fn service_type_errors_name_the_service() {
        let err = load1("services:\n  db:\n    image: x\n    healthcheck:\n      retries: lots\n")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("stack.yaml"), "{msg}");
        assert!(
            msg.contains("retries") || msg.contains("services.db"),
            "{msg}"
        );
    }

    #[test]
    fn typed_field_errors_have_positions() {
        let err = load1("services:\n  db:\n    image: x\n    healthcheck:\n      retries: lots\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stack.yaml:5:16: services.db.healthcheck.retries: invalid type: string \"lots\", expected u32"
        );
        let err =
            load1("services:\n  db:\n    image: x\nvolumes:\n  a:\n    labels: 5\n").unwrap_err();
        assert!(err.to_string().contains("volumes.a"), "{err}");
    }

    #[test]
    fn numbers_in_ports_and_commands() {
        let s = load1("services:\n  r:\n    image: redis\n    ports: [6379, '127.0.0.1::6380']\n    command: [redis-server, --port, 6379]\n").unwrap();
        let r = &s.compose.services["r"];
        assert_eq!(
            r.ports,
            vec![
                Port::Short("6379".into()),
                Port::Short("127.0.0.1::6380".into())
            ]
        );
        assert_eq!(
            r.command,
            Some(StringOrList::List(vec![
                "redis-server".into(),
                "--port".into(),
                "6379".into()
            ]))
        );
    }

    #[test]
    fn strip_marks_removes_positions() {
        assert_eq!(
            strip_marks("did not find expected key at line 4 column 4, while parsing a block mapping at line 2 column 3"),
            "did not find expected key, while parsing a block mapping"
        );
        assert_eq!(strip_marks("look at line twelve"), "look at line twelve");
    }

    #[test]
    fn paths_are_made_absolute() {
        let mut s = load1(
            "services:\n  app:\n    build: ./app\n    env_file: [.env.app, /abs/e]\n    volumes:\n      - ./data:/data\n      - ../shared:/shared\n      - ~/cache:/cache\n      - /abs:/abs\n      - named:/n\n  b:\n    build:\n      dockerfile: Dockerfile.b\n  c:\n    image: x\n    build: https://github.com/a/b.git\nvolumes:\n  named:\nsecrets:\n  s:\n    file: ./secret.txt\n",
        )
        .unwrap();
        resolve_paths(
            &mut s.compose,
            Path::new("/work/proj"),
            Some(Path::new("/home/u")),
        );
        let app = &s.compose.services["app"];
        assert_eq!(app.build, Some(Value::String("/work/proj/app".into())));
        assert_eq!(
            app.env_file,
            Some(StringOrList::List(vec![
                "/work/proj/.env.app".into(),
                "/abs/e".into()
            ]))
        );
        let srcs: Vec<_> = app
            .volumes
            .iter()
            .map(|v| v.source.clone().unwrap())
            .collect();
        assert_eq!(
            srcs,
            vec![
                "/work/proj/data",
                "/work/shared",
                "/home/u/cache",
                "/abs",
                "named"
            ]
        );
        assert_eq!(
            s.compose.services["b"].build.as_ref().unwrap()["context"],
            Value::String("/work/proj".into())
        );
        assert_eq!(
            s.compose.services["c"].build,
            Some(Value::String("https://github.com/a/b.git".into()))
        );
        assert_eq!(
            s.compose.extra["secrets"]["s"]["file"],
            Value::String("/work/proj/secret.txt".into())
        );
    }
}
