//! Watch rules: compose's `develop.watch` on services, `x-nodus.watch`, and the implicit rules
//! for the stack files and `.env`; matching a changed path to the rules it triggers.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::ignore::{always_ignored_anywhere, IgnoreSet};
use crate::stack::{ComposeFile, WatchAction};

/// What a rule does to its services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Restart,
    Recreate,
    Rebuild,
    Sync,
    #[serde(rename = "sync+restart")]
    SyncRestart,
    #[serde(rename = "sync+exec")]
    SyncExec,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Recreate => "recreate",
            Action::Rebuild => "rebuild",
            Action::Sync => "sync",
            Action::SyncRestart => "sync+restart",
            Action::SyncExec => "sync+exec",
        }
    }
    pub fn syncs(&self) -> bool {
        matches!(self, Action::Sync | Action::SyncRestart | Action::SyncExec)
    }
}

/// compose `develop.watch[].exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecHook {
    pub command: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub env: Vec<String>,
}

/// Which paths a rule covers.
#[derive(Debug, Clone)]
pub enum Paths {
    /// compose `path`: a file or a directory and everything below it.
    Path(PathBuf),
    /// `x-nodus.watch[].paths`: globs relative to the stack directory, each with its fixed
    /// leading directory (what sync targets are relative to).
    Globs {
        stack_dir: PathBuf,
        globs: Vec<(String, GlobMatcher, PathBuf)>,
    },
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// Where the rule comes from, e.g. `services.web.develop.watch[0]`, `x-nodus.watch[1]`.
    pub origin: String,
    pub services: Vec<String>,
    pub action: Action,
    pub target: Option<String>,
    pub exec: Option<ExecHook>,
    pub paths: Paths,
    /// The rule's own `ignore` patterns and the `.gitignore`/`.dockerignore` in its directory.
    ignore: Option<IgnoreSet>,
}

/// A changed path that a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub rule: usize,
    /// The path relative to the rule's directory (where sync puts it under `target`); the file
    /// name when the rule's path is the file itself.
    pub rel: PathBuf,
}

/// How a changed path is classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// A stack file or `.env`: reload the stack.
    Stack,
    /// Ignored (always-ignored names, the state dir, `.gitignore`/`.dockerignore`, a rule's
    /// `ignore`), or covered by no rule.
    Ignored,
    Rules(Vec<Hit>),
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{origin}: action `rebuild` on service {service} needs building images, which nodus does not support yet; use `restart`, `recreate` or `sync` (or build with `docker compose build {service}` and use `recreate`)")]
    Rebuild { origin: String, service: String },
}

/// Everything `nodus watch` reacts to.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Stack files and `.env` (absolute).
    pub stack_files: BTreeSet<PathBuf>,
    pub stack_dir: PathBuf,
    state_dir: PathBuf,
    always: IgnoreSet,
    beside_stack: IgnoreSet,
    pub warnings: Vec<String>,
}

/// The inputs rules are built from (a loaded project, in plain data for tests).
pub struct Inputs<'a> {
    pub stack_dir: &'a Path,
    pub stack_files: &'a [PathBuf],
    pub state_dir: &'a Path,
    pub compose: &'a ComposeFile,
    pub nodus_rules: &'a [crate::stack::WatchRule],
    /// `nodus watch SERVICE...`: only rules acting on these (empty = all).
    pub only: &'a [String],
}

#[derive(Deserialize)]
struct Develop {
    #[serde(default)]
    watch: Vec<DevelopWatch>,
}

#[derive(Deserialize)]
struct DevelopWatch {
    path: String,
    action: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    exec: Option<DevelopExec>,
}

#[derive(Deserialize)]
struct DevelopExec {
    command: Value,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    environment: Option<Value>,
}

/// `a/./b/../c` → `a/c`, without touching the filesystem.
pub fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec!["sh".into(), "-c".into(), s.clone()]),
        Value::Sequence(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn env_list(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        Value::Mapping(m) => m
            .iter()
            .filter_map(|(k, v)| {
                let k = k.as_str()?;
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => String::new(),
                };
                Some(format!("{k}={v}"))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The fixed leading directory of a glob (`conf/**/*.yaml` → `conf`).
fn glob_base(glob: &str) -> PathBuf {
    let mut base = PathBuf::new();
    let parts: Vec<&str> = glob.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.contains(['*', '?', '[', '{']) || i + 1 == parts.len() {
            break;
        }
        base.push(part);
    }
    base
}

impl RuleSet {
    pub fn build(i: &Inputs) -> Result<RuleSet, RuleError> {
        let mut warnings = Vec::new();
        let mut rules = Vec::new();
        let wanted = |s: &str| i.only.is_empty() || i.only.iter().any(|o| o == s);

        // compose develop.watch
        for (name, svc) in &i.compose.services {
            let Some(dev) = svc.extra.get("develop") else {
                continue;
            };
            let dev: Develop =
                serde_yaml::from_value(dev.clone()).map_err(|e| RuleError::Invalid {
                    origin: format!("services.{name}.develop"),
                    message: e.to_string(),
                })?;
            if !wanted(name) {
                continue;
            }
            for (n, w) in dev.watch.into_iter().enumerate() {
                let origin = format!("services.{name}.develop.watch[{n}]");
                let action = match w.action.as_str() {
                    "restart" => Action::Restart,
                    "rebuild" => Action::Rebuild,
                    "sync" => Action::Sync,
                    "sync+restart" => Action::SyncRestart,
                    "sync+exec" => Action::SyncExec,
                    other => {
                        return Err(RuleError::Invalid {
                            origin,
                            message: format!("unknown action {other:?}; valid: sync, rebuild, restart, sync+restart, sync+exec"),
                        })
                    }
                };
                let exec = match (&action, w.exec) {
                    (Action::SyncExec, None) => {
                        return Err(RuleError::Invalid {
                            origin,
                            message: "action sync+exec needs `exec.command`".into(),
                        })
                    }
                    (_, Some(e)) => Some(ExecHook {
                        command: string_list(&e.command).ok_or_else(|| RuleError::Invalid {
                            origin: origin.clone(),
                            message: "exec.command must be a string or a list of strings".into(),
                        })?,
                        user: e.user,
                        working_dir: e.working_dir,
                        env: e.environment.as_ref().map(env_list).unwrap_or_default(),
                    }),
                    (_, None) => None,
                };
                let path = clean(&i.stack_dir.join(&w.path));
                if !path.exists() {
                    warnings.push(format!(
                        "{origin}: {} does not exist; it is not watched (restart the watch once it does)",
                        path.display()
                    ));
                }
                let root = if path.is_dir() {
                    path.clone()
                } else {
                    path.parent().unwrap_or(i.stack_dir).to_path_buf()
                };
                let ignore = IgnoreSet::new(&root, &w.ignore, &mut warnings);
                rules.push(Rule {
                    origin,
                    services: vec![name.clone()],
                    action,
                    target: w.target,
                    exec,
                    paths: Paths::Path(path),
                    ignore: Some(ignore),
                });
            }
        }

        // x-nodus.watch
        for (n, w) in i.nodus_rules.iter().enumerate() {
            let origin = format!("x-nodus.watch[{n}]");
            if w.paths.is_empty() || w.services.is_empty() {
                return Err(RuleError::Invalid {
                    origin,
                    message: "needs at least one entry in `paths` and in `services`".into(),
                });
            }
            for s in &w.services {
                if !i.compose.services.contains_key(s) {
                    return Err(RuleError::Invalid {
                        origin,
                        message: format!(
                            "no service {s:?} in the stack (services: {})",
                            i.compose
                                .services
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
            let services: Vec<String> = w.services.iter().filter(|s| wanted(s)).cloned().collect();
            if services.is_empty() {
                continue;
            }
            let mut globs = Vec::new();
            for g in &w.paths {
                let pattern = g.trim_start_matches("./").trim_end_matches('/');
                if Path::new(pattern).is_absolute() || pattern.split('/').any(|p| p == "..") {
                    return Err(RuleError::Invalid {
                        origin,
                        message: format!("path {g:?} must be relative to the stack file and stay below its directory"),
                    });
                }
                let matcher = GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| RuleError::Invalid {
                        origin: origin.clone(),
                        message: format!("glob {g:?}: {e}"),
                    })?
                    .compile_matcher();
                // A plain directory means everything below it.
                let dir_matcher = (!pattern.contains(['*', '?', '[', '{'])
                    && i.stack_dir.join(pattern).is_dir())
                .then(|| {
                    GlobBuilder::new(&format!("{pattern}/**"))
                        .literal_separator(true)
                        .build()
                        .ok()
                        .map(|g| g.compile_matcher())
                })
                .flatten();
                let base = if dir_matcher.is_some() {
                    PathBuf::from(pattern)
                } else {
                    glob_base(pattern)
                };
                globs.push((
                    g.clone(),
                    dir_matcher.unwrap_or(matcher),
                    i.stack_dir.join(base),
                ));
            }
            let action = match w.action {
                WatchAction::Restart => Action::Restart,
                WatchAction::Recreate => Action::Recreate,
                WatchAction::Rebuild => Action::Rebuild,
                WatchAction::Sync => Action::Sync,
                WatchAction::SyncRestart => Action::SyncRestart,
            };
            rules.push(Rule {
                origin,
                services,
                action,
                target: w.target.clone(),
                exec: None,
                paths: Paths::Globs {
                    stack_dir: i.stack_dir.to_path_buf(),
                    globs,
                },
                ignore: None,
            });
        }

        for r in &rules {
            if r.action == Action::Rebuild {
                return Err(RuleError::Rebuild {
                    origin: r.origin.clone(),
                    service: r.services[0].clone(),
                });
            }
            if r.action.syncs() {
                match &r.target {
                    Some(t) if t.starts_with('/') => {}
                    Some(t) => {
                        return Err(RuleError::Invalid {
                            origin: r.origin.clone(),
                            message: format!(
                                "target {t:?} must be an absolute path in the container"
                            ),
                        })
                    }
                    None => {
                        return Err(RuleError::Invalid {
                            origin: r.origin.clone(),
                            message: format!(
                                "action {} needs `target` (where the files go in the container)",
                                r.action.name()
                            ),
                        })
                    }
                }
            }
        }

        let mut stack_files: BTreeSet<PathBuf> = i
            .stack_files
            .iter()
            .map(|f| clean(&std::path::absolute(f).unwrap_or_else(|_| f.clone())))
            .collect();
        stack_files.insert(i.stack_dir.join(".env"));
        Ok(RuleSet {
            rules,
            stack_files,
            stack_dir: i.stack_dir.to_path_buf(),
            state_dir: i.state_dir.to_path_buf(),
            always: IgnoreSet::always(i.stack_dir),
            beside_stack: IgnoreSet::new(i.stack_dir, &[], &mut warnings),
            warnings,
        })
    }

    /// The directories to watch: (path, recursive).
    pub fn roots(&self) -> Vec<(PathBuf, bool)> {
        let mut out: BTreeSet<(PathBuf, bool)> = BTreeSet::new();
        for f in &self.stack_files {
            if let Some(p) = f.parent() {
                out.insert((p.to_path_buf(), false));
            }
        }
        for r in &self.rules {
            match &r.paths {
                Paths::Path(p) => {
                    if p.is_dir() {
                        out.insert((p.clone(), true));
                    } else if let Some(parent) = p.parent() {
                        out.insert((parent.to_path_buf(), false));
                    }
                }
                Paths::Globs { globs, .. } => {
                    for (_, _, base) in globs {
                        out.insert((base.clone(), true));
                    }
                }
            }
        }
        // A recursive root covers the non-recursive ones below it.
        let rec: Vec<PathBuf> = out
            .iter()
            .filter(|(_, r)| *r)
            .map(|(p, _)| p.clone())
            .collect();
        out.into_iter()
            .filter(|(p, r)| !rec.iter().any(|q| p.starts_with(q) && !(p == q && *r)))
            .filter(|(p, _)| p.exists())
            .collect()
    }

    /// Services some rule acts on.
    pub fn services(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.services.iter().cloned())
            .collect()
    }

    pub fn classify(&self, path: &Path) -> Match {
        let path = clean(path);
        if self.stack_files.contains(&path) {
            return Match::Stack;
        }
        if path.starts_with(&self.state_dir) {
            return Match::Ignored;
        }
        let is_dir = path.is_dir();
        if self.always.ignores(&path, is_dir)
            || self.beside_stack.ignores(&path, is_dir)
            || (!path.starts_with(&self.stack_dir) && always_ignored_anywhere(&path))
        {
            return Match::Ignored;
        }
        let mut hits = Vec::new();
        for (n, r) in self.rules.iter().enumerate() {
            let rel = match &r.paths {
                Paths::Path(p) => {
                    if &path == p {
                        Some(PathBuf::from(path.file_name().unwrap_or_default()))
                    } else {
                        path.strip_prefix(p).ok().map(Path::to_path_buf)
                    }
                }
                Paths::Globs { stack_dir, globs } => {
                    path.strip_prefix(stack_dir).ok().and_then(|rel_stack| {
                        globs.iter().find_map(|(_, m, base)| {
                            m.is_match(rel_stack)
                                .then(|| path.strip_prefix(base).ok().map(Path::to_path_buf))
                                .flatten()
                        })
                    })
                }
            };
            let Some(rel) = rel else { continue };
            if rel.as_os_str().is_empty() {
                continue;
            }
            if r.ignore.as_ref().is_some_and(|i| i.ignores(&path, is_dir)) {
                continue;
            }
            hits.push(Hit { rule: n, rel });
        }
        if hits.is_empty() {
            Match::Ignored
        } else {
            Match::Rules(hits)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(yaml: &str) -> ComposeFile {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn set(dir: &Path, c: &ComposeFile, x: &[crate::stack::WatchRule], only: &[String]) -> RuleSet {
        RuleSet::build(&Inputs {
            stack_dir: dir,
            stack_files: &[dir.join("compose.yaml")],
            state_dir: &dir.join(".nodus"),
            compose: c,
            nodus_rules: x,
            only,
        })
        .unwrap()
    }

    fn xrule(paths: &[&str], services: &[&str], action: WatchAction) -> crate::stack::WatchRule {
        crate::stack::WatchRule {
            paths: paths.iter().map(|s| s.to_string()).collect(),
            services: services.iter().map(|s| s.to_string()).collect(),
            action,
            target: Some("/app".into()),
        }
    }

    const TWO: &str = "services:\n  api:\n    image: a\n    develop:\n      watch:\n        - path: ./src\n          action: restart\n          ignore: [\"*.md\"]\n        - path: static\n          action: sync\n          target: /srv/static\n  worker:\n    image: w\n  db:\n    image: postgres\n";

    #[test]
    fn develop_watch_rules_match_paths_below_them() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::create_dir_all(dir.join("src/lib")).unwrap();
        std::fs::create_dir_all(dir.join("static")).unwrap();
        let c = compose(TWO);
        let s = set(dir, &c, &[], &[]);
        assert_eq!(s.rules.len(), 2);
        assert_eq!(
            s.classify(&dir.join("src/lib/a.py")),
            Match::Rules(vec![Hit {
                rule: 0,
                rel: "lib/a.py".into()
            }])
        );
        assert_eq!(
            s.classify(&dir.join("static/css/x.css")),
            Match::Rules(vec![Hit {
                rule: 1,
                rel: "css/x.css".into()
            }])
        );
        // The rule's own ignore, editor temporaries, unrelated files.
        assert_eq!(s.classify(&dir.join("src/README.md")), Match::Ignored);
        assert_eq!(s.classify(&dir.join("src/.a.py.swp")), Match::Ignored);
        assert_eq!(
            s.classify(&dir.join("src/node_modules/x.js")),
            Match::Ignored
        );
        assert_eq!(s.classify(&dir.join("other/a.py")), Match::Ignored);
        assert_eq!(
            s.classify(&dir.join(".nodus/ledger/x.json")),
            Match::Ignored
        );
        // Stack files and .env reload, even when .gitignore lists .env.
        std::fs::write(dir.join(".gitignore"), ".env\n*.log\n").unwrap();
        let s = set(dir, &c, &[], &[]);
        assert_eq!(s.classify(&dir.join("compose.yaml")), Match::Stack);
        assert_eq!(s.classify(&dir.join(".env")), Match::Stack);
        assert_eq!(s.classify(&dir.join("src/debug.log")), Match::Ignored);
    }

    #[test]
    fn gitignore_in_a_rule_directory_applies_to_it() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/.dockerignore"), "cache/\n").unwrap();
        let s = set(dir, &compose(TWO), &[], &[]);
        assert_eq!(s.classify(&dir.join("src/cache/x")), Match::Ignored);
        assert!(matches!(s.classify(&dir.join("src/x")), Match::Rules(_)));
    }

    #[test]
    fn xnodus_globs_several_services_and_service_filter() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::create_dir_all(dir.join("conf/sub")).unwrap();
        let c = compose(TWO);
        let x = vec![
            xrule(
                &["conf/**/*.yaml"],
                &["api", "worker"],
                WatchAction::Restart,
            ),
            xrule(&["init/*.sql"], &["db"], WatchAction::Recreate),
        ];
        let s = set(dir, &c, &x, &[]);
        let hits = |p: &str| match s.classify(&dir.join(p)) {
            Match::Rules(h) => h,
            other => panic!("{p}: {other:?}"),
        };
        let h = hits("conf/sub/a.yaml");
        assert_eq!(h.len(), 1);
        assert_eq!(s.rules[h[0].rule].services, vec!["api", "worker"]);
        assert_eq!(h[0].rel, PathBuf::from("sub/a.yaml"));
        assert!(matches!(
            s.classify(&dir.join("conf/a.yaml")),
            Match::Rules(_)
        ));
        assert_eq!(s.classify(&dir.join("conf/a.json")), Match::Ignored);
        assert_eq!(
            s.rules[hits("init/001.sql")[0].rule].action,
            Action::Recreate
        );
        // `*` does not cross directories.
        assert_eq!(s.classify(&dir.join("init/old/001.sql")), Match::Ignored);
        // Only the named services' rules.
        let s = set(dir, &c, &x, &["db".into()]);
        assert_eq!(s.rules.len(), 1);
        assert_eq!(s.services().into_iter().collect::<Vec<_>>(), vec!["db"]);
    }

    #[test]
    fn roots_cover_rule_directories_and_the_stack_directory() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::create_dir_all(dir.join("static")).unwrap();
        std::fs::create_dir_all(dir.join("conf")).unwrap();
        let x = vec![xrule(&["conf/*.yaml"], &["api"], WatchAction::Restart)];
        let s = set(dir, &compose(TWO), &x, &[]);
        let roots = s.roots();
        assert!(roots.contains(&(dir.to_path_buf(), false)));
        assert!(roots.contains(&(dir.join("src"), true)));
        assert!(roots.contains(&(dir.join("conf"), true)));
    }

    #[test]
    fn rebuild_is_refused_at_start_up_and_sync_needs_a_target() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let c = compose("services:\n  api:\n    image: a\n    develop:\n      watch:\n        - path: src\n          action: rebuild\n");
        let e = RuleSet::build(&Inputs {
            stack_dir: dir,
            stack_files: &[],
            state_dir: dir,
            compose: &c,
            nodus_rules: &[],
            only: &[],
        })
        .unwrap_err();
        assert!(e.to_string().contains("rebuild"), "{e}");
        assert!(
            e.to_string().contains("services.api.develop.watch[0]"),
            "{e}"
        );
        let mut r = xrule(&["x/*"], &["api"], WatchAction::Sync);
        r.target = None;
        let c = compose("services:\n  api:\n    image: a\n");
        let e = RuleSet::build(&Inputs {
            stack_dir: dir,
            stack_files: &[],
            state_dir: dir,
            compose: &c,
            nodus_rules: &[r],
            only: &[],
        })
        .unwrap_err();
        assert!(e.to_string().contains("needs `target`"), "{e}");
        let r = xrule(&["x/*"], &["nope"], WatchAction::Restart);
        let e = RuleSet::build(&Inputs {
            stack_dir: dir,
            stack_files: &[],
            state_dir: dir,
            compose: &c,
            nodus_rules: &[r],
            only: &[],
        })
        .unwrap_err();
        assert!(e.to_string().contains("no service \"nope\""), "{e}");
    }

    #[test]
    fn glob_bases() {
        assert_eq!(glob_base("conf/**/*.yaml"), PathBuf::from("conf"));
        assert_eq!(glob_base("init/*.sql"), PathBuf::from("init"));
        assert_eq!(glob_base("*.sql"), PathBuf::from(""));
        assert_eq!(glob_base("a/b/c.txt"), PathBuf::from("a/b"));
    }
}
