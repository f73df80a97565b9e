//! Loading a stack from disk: discovery of stack files like compose, `.env`, the process
//! environment, `env_file:`, the project name and the state dir. The I/O half of `stack/`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::GlobalArgs;
use crate::output::Ui;
use crate::stack::interpolate::Interpolator;
use crate::stack::model::StringOrList;
use crate::stack::{resolve_paths, Env, FindingLevel, Hardened, ProjectSource, SourceFile, Stack};
use crate::state::StateDir;

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("no stack file found in {dir} (looked for nodus.yaml, nodus.yml, compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml); pass one with -f")]
    NotFound { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    DotEnv {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A stack loaded from disk, with its state dir.
#[derive(Debug, Clone)]
pub struct Project {
    pub stack: Stack,
    pub hardened: Hardened,
    /// Directory of the first stack file (absolute).
    pub dir: PathBuf,
    pub state: StateDir,
    /// The process environment over `.env` (what `${VAR}` saw).
    pub env: Env,
}

impl Project {
    pub fn name(&self) -> &str {
        &self.stack.project
    }

    /// The services a command acts on: those named, else the default selection (services
    /// without a profile, and those of the active `COMPOSE_PROFILES`).
    pub fn selection(&self, named: &[String]) -> Vec<String> {
        if !named.is_empty() {
            return named.to_vec();
        }
        let profiles = crate::stack::plan::parse_profiles(
            self.env.get("COMPOSE_PROFILES").map(String::as_str),
        );
        crate::stack::plan::default_services(&self.hardened.compose, &profiles)
    }

    /// Records the project name in the state dir (for the "project renamed" warning). Only
    /// commands that create resources under this name call it; read-only commands never do.
    pub fn remember_name(&self) -> anyhow::Result<()> {
        if self.state.remembered_project()?.as_deref() != Some(self.name()) {
            self.state.remember_project(self.name())?;
        }
        Ok(())
    }
}

/// Default stack file names, in order of preference.
pub const DEFAULT_FILES: &[&str] = &[
    "nodus.yaml",
    "nodus.yml",
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// Finds, reads and loads the stack named by the global flags. Prints the hardening findings
/// (warnings always, fixes with -v) and warns loudly when the project name changed since it was
/// last recorded (by `up`).
pub fn load(global: &GlobalArgs, ui: &Ui) -> anyhow::Result<Project> {
    let project = read(global)?;
    let (stack, hardened, state) = (&project.stack, &project.hardened, &project.state);
    for w in &stack.warnings {
        ui.warn(w);
    }
    for f in &hardened.findings {
        match f.level {
            FindingLevel::Warning => ui.warn(format!("{}: {}", f.service, f.message)),
            FindingLevel::Fixed => ui.detail(format!("hardened {}: {}", f.service, f.message)),
        }
    }

    // Reading only: the name is recorded by the commands that create resources
    // (`Project::remember_name`), so `status -p x` does not rewrite it.
    if let Some(old) = state.remembered_project()?.as_deref() {
        if old != stack.project {
            ui.warn(rename_warning(old, &stack.project, hardened));
        }
    }
    Ok(project)
}

/// Loads the stack like [`load`] without printing anything or remembering the project name (for
/// `nodus doctor`, which only looks). Also returns the stack files' texts.
pub fn read_only(global: &GlobalArgs) -> anyhow::Result<(Project, Vec<SourceFile>)> {
    let project = read(global)?;
    let files = if global.stack.is_empty() {
        discover(&std::env::current_dir()?)?
    } else {
        global.stack.clone()
    };
    let mut sources = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| ProjectError::Read {
            path: f.clone(),
            source,
        })?;
        sources.push(SourceFile { path: f, text });
    }
    Ok((project, sources))
}

fn read(global: &GlobalArgs) -> anyhow::Result<Project> {
    let cwd = std::env::current_dir().context("cannot determine the current directory")?;
    let files = if global.stack.is_empty() {
        discover(&cwd)?
    } else {
        global.stack.clone()
    };
    let first = files
        .first()
        .ok_or_else(|| ProjectError::NotFound { dir: cwd.clone() })?;
    let first_abs = if first.is_absolute() {
        first.clone()
    } else {
        cwd.join(first)
    };
    let parent = first_abs.parent().unwrap_or(Path::new("/"));
    let dir = std::fs::canonicalize(parent).map_err(|source| ProjectError::Read {
        path: parent.to_path_buf(),
        source,
    })?;
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut sources = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| ProjectError::Read {
            path: f.clone(),
            source,
        })?;
        sources.push(SourceFile {
            path: f.clone(),
            text,
        });
    }

    let env = environment(&dir.join(".env"))?;
    let project_override = match global.project_name.as_deref() {
        Some(p) => Some((p, ProjectSource::Flag)),
        None => env
            .get("COMPOSE_PROJECT_NAME")
            .map(String::as_str)
            .filter(|p| !p.trim().is_empty())
            .map(|p| (p, ProjectSource::Environment)),
    };
    let mut stack = Stack::load(&sources, &env, project_override, &dir_name)?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    resolve_paths(&mut stack.compose, &dir, home.as_deref());
    apply_env_files(&mut stack, &env)?;
    let hardened = stack.harden();

    let state_root = state_root(global.state_dir.as_deref(), &stack, &dir);
    let state = StateDir::open_for_stack(&state_root, &first_abs)?;
    Ok(Project {
        stack,
        hardened,
        dir,
        state,
        env,
    })
}

/// The state dir: `--state-dir` (or `NODUS_STATE_DIR`), else `x-nodus.state_dir` relative to the
/// stack file's directory, else `.nodus` beside the stack file.
fn state_root(flag: Option<&Path>, stack: &Stack, dir: &Path) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    match stack.nodus.state_dir.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => dir.join(d),
        _ => dir.join(".nodus"),
    }
}

/// Writes the hardened compose file to the state dir (`.nodus/compose.yaml`, 0600: environment
/// values may be passwords) and a `.env` beside it with `COMPOSE_PROJECT_NAME`, so plain
/// `docker compose -f .nodus/compose.yaml ...` uses this project (and its volumes) rather than one
/// named after the `.nodus` directory. Returns the compose file's path.
pub fn write_rendered(project: &Project) -> anyhow::Result<PathBuf> {
    let yaml = crate::stack::render_yaml_for(&project.stack, &project.hardened.compose)
        .context("rendering the compose file")?;
    let path = project.state.compose_path();
    crate::state::atomic_write(&path, yaml.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    let env_path = project.state.root().join(".env");
    let env = format!(
        "# Written by nodus: plain compose reading compose.yaml here uses the same project.\nCOMPOSE_PROJECT_NAME={}\n",
        project.name()
    );
    crate::state::atomic_write(&env_path, env.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", env_path.display()))?;
    Ok(path)
}

fn rename_warning(old: &str, new: &str, hardened: &Hardened) -> String {
    // An example volume whose engine name follows the project name.
    let key = hardened
        .stateful
        .iter()
        .filter_map(|s| s.volume_key.as_deref())
        .find(|k| {
            hardened
                .compose
                .volumes
                .get(*k)
                .is_some_and(|v| v.name.is_none() && !v.is_external())
        })
        .or_else(|| {
            hardened
                .compose
                .volumes
                .iter()
                .find(|(_, v)| v.name.is_none() && !v.is_external())
                .map(|(k, _)| k.as_str())
        })
        .unwrap_or("data");
    format!(
        "project name changed from {old} to {new}: compose volumes are per project, so this stack will get NEW, EMPTY volumes ({old}_{key} → {new}_{key}).\n         The old volumes still hold the data under the old name.\n         If that is not what you want, run with -p {old}."
    )
}

/// The default stack files in `dir`, compose-style: the first of [`DEFAULT_FILES`], plus its
/// `.override` file when present (`docker-compose.override.yml`, `compose.override.yaml`...).
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, ProjectError> {
    let base = DEFAULT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ProjectError::NotFound {
            dir: dir.to_path_buf(),
        })?;
    let mut files = vec![base.clone()];
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(over) = ["yaml", "yml"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.override.{ext}")))
        .find(|p| p.is_file())
    {
        files.push(over);
    }
    Ok(files)
}

/// The process environment over the `.env` file at `path` (when present).
fn environment(path: &Path) -> Result<Env, ProjectError> {
    let process: Env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(process),
        Err(source) => {
            return Err(ProjectError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let pairs = parse_dotenv(&text, &process).map_err(|(line, message)| ProjectError::DotEnv {
        path: path.to_path_buf(),
        line,
        message,
    })?;
    let mut env: Env = pairs.into_iter().collect();
    for (k, v) in process {
        env.insert(k, v);
    }
    Ok(env)
}

/// Reads `env_file:` entries (already absolute) into the services' `environment`; keys set
/// explicitly in `environment:` win.
fn apply_env_files(stack: &mut Stack, env: &Env) -> Result<(), ProjectError> {
    for svc in stack.compose.services.values_mut() {
        let files = match &svc.env_file {
            None => continue,
            Some(StringOrList::String(s)) => vec![s.clone()],
            Some(StringOrList::List(l)) => l.clone(),
        };
        let explicit: std::collections::HashSet<String> = svc.environment.keys().cloned().collect();
        let mut from_files: Vec<(String, String)> = Vec::new();
        for f in files {
            let path = PathBuf::from(&f);
            let text = std::fs::read_to_string(&path).map_err(|source| ProjectError::Read {
                path: path.clone(),
                source,
            })?;
            let pairs =
                parse_dotenv(&text, env).map_err(|(line, message)| ProjectError::DotEnv {
                    path: path.clone(),
                    line,
                    message,
                })?;
            from_files.extend(pairs);
        }
        // later env files override earlier ones; explicit `environment:` keys override both
        for (k, v) in from_files {
            if !explicit.contains(&k) {
                svc.environment.insert(k, Some(v));
            }
        }
    }
    Ok(())
}

/// Parses a `.env`/`env_file` text as compose does: `KEY=value`, `export KEY=value`, `#` comments,
/// single quotes (literal), double quotes (escapes, may span lines), unquoted values with inline
/// ` #` comments; `${VAR}` in unquoted and double-quoted values is interpolated from the earlier
/// lines and `lookup`. Errors carry the 1-based line number.
pub fn parse_dotenv(text: &str, lookup: &Env) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut scope: Env = Env::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let raw = lines[i];
        i += 1;
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            if valid_key(line) {
                // `KEY` alone: taken from the environment, like compose
                continue;
            }
            return Err((lineno, format!("expected KEY=value, found {line:?}")));
        };
        let key = key.trim();
        if !valid_key(key) {
            return Err((
                lineno,
                format!("invalid variable name {key:?} (letters, digits, `_`, `.` and `-`, not starting with a digit)"),
            ));
        }
        let rest = rest.trim_start();
        let value = if let Some(body) = rest.strip_prefix('\'') {
            match body.find('\'') {
                Some(end) => body[..end].to_string(),
                None => {
                    return Err((
                        lineno,
                        format!("unterminated single quote in the value of {key}"),
                    ))
                }
            }
        } else if let Some(body) = rest.strip_prefix('"') {
            // may continue on the next lines
            let mut buf = body.to_string();
            let closed = loop {
                if let Some(end) = closing_double_quote(&buf) {
                    buf.truncate(end);
                    break true;
                }
                if i >= lines.len() {
                    break false;
                }
                buf.push('\n');
                buf.push_str(lines[i]);
                i += 1;
            };
            if !closed {
                return Err((
                    lineno,
                    format!("unterminated double quote in the value of {key}"),
                ));
            }
            let unescaped = unescape_double(&buf);
            interpolate_env(&unescaped, &scope, lookup).map_err(|m| (lineno, m))?
        } else {
            let v = match rest.find(" #").or_else(|| rest.find("\t#")) {
                Some(c) => &rest[..c],
                None => rest,
            };
            interpolate_env(v.trim_end(), &scope, lookup).map_err(|m| (lineno, m))?
        };
        scope.insert(key.to_string(), value.clone());
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn closing_double_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape_double(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('$') => out.push_str("$$"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// `${VAR}` in a .env value: earlier lines of the same file, then the environment.
fn interpolate_env(value: &str, scope: &Env, lookup: &Env) -> Result<String, String> {
    if !value.contains('$') {
        return Ok(value.to_string());
    }
    let mut combined = lookup.clone();
    for (k, v) in scope {
        combined.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Interpolator::new(&combined).interpolate_str(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dotenv_syntax() {
        let text = "# comment\n\nA=1\nexport B = two words \nC='single $NOT # kept'\nD=\"dq \\\"x\\\" \\n y\"\nE=val # comment\nF=${A}-${HOST_VAR:-d}\nG=\"multi\nline\"\nH=\nI\nA=override\n";
        let got = parse_dotenv(text, &env(&[("HOST_VAR", "h")])).unwrap();
        let m: Env = got.into_iter().collect();
        assert_eq!(m["A"], "override");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "single $NOT # kept");
        assert_eq!(m["D"], "dq \"x\" \n y");
        assert_eq!(m["E"], "val");
        assert_eq!(m["F"], "1-h");
        assert_eq!(m["G"], "multi\nline");
        assert_eq!(m["H"], "");
        assert!(!m.contains_key("I"));
    }

    #[test]
    fn dotenv_errors_have_line_numbers() {
        assert_eq!(
            parse_dotenv("A=1\nnot a line\n", &Env::new())
                .unwrap_err()
                .0,
            2
        );
        assert_eq!(
            parse_dotenv("A=1\n\nB='open\n", &Env::new()).unwrap_err().0,
            3
        );
        assert_eq!(
            parse_dotenv("A=\"open\nstill\n", &Env::new())
                .unwrap_err()
                .0,
            1
        );
        assert_eq!(parse_dotenv("1A=x\n", &Env::new()).unwrap_err().0, 1);
        assert_eq!(
            parse_dotenv("X=${Y:?need Y}\n", &Env::new()).unwrap_err().0,
            1
        );
    }

    #[test]
    fn discovery_order_and_overrides() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            discover(d.path()),
            Err(ProjectError::NotFound { .. })
        ));
        std::fs::write(d.path().join("docker-compose.yml"), "").unwrap();
        assert_eq!(
            discover(d.path()).unwrap(),
            vec![d.path().join("docker-compose.yml")]
        );
        std::fs::write(d.path().join("docker-compose.override.yml"), "").unwrap();
        assert_eq!(
            discover(d.path()).unwrap(),
            vec![
                d.path().join("docker-compose.yml"),
                d.path().join("docker-compose.override.yml")
            ]
        );
        std::fs::write(d.path().join("compose.yaml"), "").unwrap();
        assert_eq!(
            discover(d.path()).unwrap(),
            vec![d.path().join("compose.yaml")]
        );
        std::fs::write(d.path().join("compose.override.yaml"), "").unwrap();
        assert_eq!(
            discover(d.path()).unwrap(),
            vec![
                d.path().join("compose.yaml"),
                d.path().join("compose.override.yaml")
            ]
        );
        std::fs::write(d.path().join("nodus.yaml"), "").unwrap();
        assert_eq!(
            discover(d.path()).unwrap(),
            vec![d.path().join("nodus.yaml")]
        );
    }
}
