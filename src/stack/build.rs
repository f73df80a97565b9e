//! Compose's `build:` section and `pull_policy:`, typed. Pure: the context path was made absolute
//! by project loading; `${VAR}` was interpolated by the loader.
//!
//! The raw `build:` value stays in [`super::Service::build`] (it is written back unchanged to the
//! generated compose file for `docker compose` users); this module reads it.

use indexmap::IndexMap;
use serde_yaml::Value;

use super::Service;

/// A service's `build:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSpec {
    /// The context directory (absolute after project loading), or a URL (not supported).
    pub context: String,
    /// Dockerfile path relative to the context (`Dockerfile` by default).
    pub dockerfile: Option<String>,
    /// `dockerfile_inline:` content (takes the place of `dockerfile`).
    pub dockerfile_inline: Option<String>,
    /// Build args; `None` = a bare `KEY` in list form (or `KEY:` with no value): its value comes
    /// from the environment, and it is left out when unset (as compose does).
    pub args: IndexMap<String, Option<String>>,
    pub target: Option<String>,
    pub labels: IndexMap<String, String>,
    /// `network:` during RUN steps (`host`, `none`, a network name).
    pub network: Option<String>,
    pub extra_hosts: Vec<String>,
    /// Bytes.
    pub shm_size: Option<i64>,
    pub cache_from: Vec<String>,
    pub no_cache: bool,
    pub pull: bool,
}

impl BuildSpec {
    /// The Dockerfile name as the engine is told it (inside the context).
    pub fn dockerfile_name(&self) -> &str {
        self.dockerfile.as_deref().unwrap_or("Dockerfile")
    }

    /// True when the context is a remote URL or git reference (not built by nodus).
    pub fn is_remote(&self) -> bool {
        let c = &self.context;
        c.contains("://") || c.starts_with("git@") || c.starts_with("github.com/")
    }

    /// Args with bare `KEY` entries resolved through `lookup` (unset ones dropped).
    pub fn resolved_args(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> IndexMap<String, String> {
        self.args
            .iter()
            .filter_map(|(k, v)| match v {
                Some(v) => Some((k.clone(), v.clone())),
                None => lookup(k).map(|v| (k.clone(), v)),
            })
            .collect()
    }
}

/// `pull_policy:` of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull before every `up` (for a service with `build:`: build every time, nothing can be
    /// pulled for it).
    Always,
    /// Never pull (never build): a missing image is an error.
    Never,
    /// Pull (build) only when the image is missing. `if_not_present` is the same.
    Missing,
    /// Always build.
    Build,
}

/// The service's `pull_policy:`, when it has one.
pub fn pull_policy(service: &Service) -> Result<Option<PullPolicy>, String> {
    let Some(v) = service.extra.get("pull_policy") else {
        return Ok(None);
    };
    let s = v
        .as_str()
        .ok_or_else(|| format!("pull_policy: expected a string, found {v:?}"))?;
    Ok(Some(match s {
        "always" => PullPolicy::Always,
        "never" => PullPolicy::Never,
        "missing" | "if_not_present" => PullPolicy::Missing,
        "build" => PullPolicy::Build,
        other => {
            return Err(format!(
                "pull_policy: unknown value `{other}` (expected always, never, missing, if_not_present or build)"
            ))
        }
    }))
}

/// The image a service runs: `image:`, else (with `build:`) compose v2's `<project>-<service>`.
pub fn image_name(project: &str, service_name: &str, service: &Service) -> Option<String> {
    match (&service.image, &service.build) {
        (Some(i), _) => Some(i.clone()),
        (None, Some(_)) => Some(format!("{project}-{service_name}")),
        (None, None) => None,
    }
}

/// The typed `build:` of a service (`None` without one).
pub fn build_spec(service: &Service) -> Result<Option<BuildSpec>, String> {
    service.build.as_ref().map(parse).transpose()
}

/// Parses `build: ./dir` or the mapping form.
pub fn parse(v: &Value) -> Result<BuildSpec, String> {
    let m = match v {
        Value::String(ctx) => {
            return Ok(BuildSpec {
                context: ctx.clone(),
                ..BuildSpec::default()
            })
        }
        Value::Mapping(m) => m,
        other => {
            return Err(format!(
                "build: expected a context path or a mapping, found {other:?}"
            ))
        }
    };
    let mut spec = BuildSpec {
        context: ".".into(),
        ..BuildSpec::default()
    };
    for (k, v) in m {
        let key = k.as_str().unwrap_or_default();
        let field = |what: &str| format!("build.{key}: {what}");
        match key {
            "context" => spec.context = string(v).ok_or_else(|| field("expected a path"))?,
            "dockerfile" => {
                spec.dockerfile = Some(string(v).ok_or_else(|| field("expected a path"))?)
            }
            "dockerfile_inline" => {
                spec.dockerfile_inline = Some(string(v).ok_or_else(|| field("expected a string"))?)
            }
            "args" => spec.args = map_or_list(v).map_err(|e| field(&e))?,
            "target" => {
                spec.target = Some(string(v).ok_or_else(|| field("expected a stage name"))?)
            }
            "labels" => {
                spec.labels = map_or_list(v)
                    .map_err(|e| field(&e))?
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect()
            }
            "network" => spec.network = Some(string(v).ok_or_else(|| field("expected a name"))?),
            "extra_hosts" => {
                let hosts: Vec<String> = match v {
                    Value::Sequence(items) => items.iter().filter_map(string).collect(),
                    Value::Mapping(_) => map_or_list(v)
                        .map_err(|e| field(&e))?
                        .into_iter()
                        .map(|(h, ip)| format!("{h}:{}", ip.unwrap_or_default()))
                        .collect(),
                    _ => return Err(field("expected a list or a mapping")),
                };
                spec.extra_hosts = hosts
                    .into_iter()
                    .map(|h| match h.split_once('=') {
                        Some((host, ip)) if !h.contains(':') || ip.contains(':') => {
                            format!("{host}:{ip}")
                        }
                        _ => h,
                    })
                    .collect()
            }
            "shm_size" => {
                spec.shm_size = Some(match v {
                    Value::Number(n) => n.as_i64().ok_or_else(|| field("expected a size"))?,
                    Value::String(s) => parse_size(s).map_err(|e| field(&e))?,
                    _ => return Err(field("expected a size like 256m")),
                })
            }
            "cache_from" => {
                spec.cache_from = match v {
                    Value::Sequence(items) => items.iter().filter_map(string).collect(),
                    _ => return Err(field("expected a list of images")),
                }
            }
            "no_cache" => {
                spec.no_cache = v.as_bool().ok_or_else(|| field("expected true or false"))?
            }
            "pull" => spec.pull = v.as_bool().ok_or_else(|| field("expected true or false"))?,
            // Accepted and not applied (BuildKit-only or registry features): the generated compose
            // file keeps them for `docker compose build`.
            _ => {}
        }
    }
    if spec.dockerfile.is_some() && spec.dockerfile_inline.is_some() {
        return Err("build: `dockerfile` and `dockerfile_inline` cannot be combined".into());
    }
    Ok(spec)
}

/// The `build:` keys nodus reads; others are kept in the generated file but not applied.
pub const APPLIED_KEYS: &[&str] = &[
    "context",
    "dockerfile",
    "dockerfile_inline",
    "args",
    "target",
    "labels",
    "network",
    "extra_hosts",
    "shm_size",
    "cache_from",
    "no_cache",
    "pull",
];

/// `build:` keys present but not applied by nodus (for a warning).
pub fn unapplied_keys(v: &Value) -> Vec<String> {
    match v {
        Value::Mapping(m) => m
            .keys()
            .filter_map(|k| k.as_str())
            .filter(|k| !APPLIED_KEYS.contains(k))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `KEY: value` mapping or `[KEY=value, KEY]` list; `None` = no value given.
fn map_or_list(v: &Value) -> Result<IndexMap<String, Option<String>>, String> {
    let mut out = IndexMap::new();
    match v {
        Value::Null => {}
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = string(k).ok_or("expected string keys")?;
                let v = match v {
                    Value::Null => None,
                    other => Some(string(other).ok_or("expected scalar values")?),
                };
                out.insert(k, v);
            }
        }
        Value::Sequence(items) => {
            for item in items {
                let s = string(item).ok_or("expected KEY=VALUE strings")?;
                match s.split_once('=') {
                    Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                    None => out.insert(s, None),
                };
            }
        }
        _ => return Err("expected a mapping or a list".into()),
    }
    Ok(out)
}

/// `256m`, `1g`, `1024` (bytes), as compose reads sizes.
fn parse_size(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<i64>()
        .map(|n| n * mult)
        .map_err(|_| format!("invalid size `{s}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn string_form() {
        let s = svc("build: /p/app\n");
        let b = build_spec(&s).unwrap().unwrap();
        assert_eq!(b.context, "/p/app");
        assert_eq!(b.dockerfile_name(), "Dockerfile");
        assert_eq!(image_name("proj", "app", &s).as_deref(), Some("proj-app"));
    }

    #[test]
    fn mapping_form() {
        let s = svc(concat!(
            "image: mine:1\n",
            "build:\n  context: /p/app\n  dockerfile: docker/Dev.Dockerfile\n",
            "  args: [A=1, FROM_ENV, 'EMPTY=']\n  target: dev\n  labels: {a: b}\n",
            "  network: host\n  extra_hosts: ['h=1.2.3.4', 'g:5.6.7.8']\n  shm_size: 256m\n",
            "  cache_from: [x:1]\n  no_cache: true\n  pull: false\n  ssh: [default]\n",
        ));
        let b = build_spec(&s).unwrap().unwrap();
        assert_eq!(b.dockerfile_name(), "docker/Dev.Dockerfile");
        assert_eq!(b.args["A"].as_deref(), Some("1"));
        assert_eq!(b.args["FROM_ENV"], None);
        assert_eq!(b.args["EMPTY"].as_deref(), Some(""));
        assert_eq!(b.target.as_deref(), Some("dev"));
        assert_eq!(b.labels["a"], "b");
        assert_eq!(b.network.as_deref(), Some("host"));
        assert_eq!(b.extra_hosts, vec!["h:1.2.3.4", "g:5.6.7.8"]);
        assert_eq!(b.shm_size, Some(256 << 20));
        assert_eq!(b.cache_from, vec!["x:1"]);
        assert!(b.no_cache && !b.pull);
        assert_eq!(unapplied_keys(s.build.as_ref().unwrap()), vec!["ssh"]);
        assert_eq!(image_name("proj", "app", &s).as_deref(), Some("mine:1"));
        let resolved = b.resolved_args(&|k| (k == "FROM_ENV").then(|| "e".to_string()));
        assert_eq!(resolved["FROM_ENV"], "e");
        let unset = b.resolved_args(&|_| None);
        assert!(!unset.contains_key("FROM_ENV"));
    }

    #[test]
    fn args_map_and_inline() {
        let s =
            svc("build:\n  context: /c\n  dockerfile_inline: |\n    FROM x\n  args: {N: 3, E: }\n");
        let b = build_spec(&s).unwrap().unwrap();
        assert_eq!(b.args["N"].as_deref(), Some("3"));
        assert_eq!(b.args["E"], None);
        assert_eq!(b.dockerfile_inline.as_deref(), Some("FROM x\n"));
        let bad = svc("build:\n  dockerfile: D\n  dockerfile_inline: FROM x\n");
        assert!(build_spec(&bad).unwrap_err().contains("cannot be combined"));
        let bad = svc("build:\n  no_cache: maybe\n");
        assert!(build_spec(&bad).unwrap_err().contains("build.no_cache"));
    }

    #[test]
    fn pull_policies() {
        assert_eq!(pull_policy(&svc("image: x\n")).unwrap(), None);
        for (v, p) in [
            ("always", PullPolicy::Always),
            ("never", PullPolicy::Never),
            ("missing", PullPolicy::Missing),
            ("if_not_present", PullPolicy::Missing),
            ("build", PullPolicy::Build),
        ] {
            let s = svc(&format!("image: x\npull_policy: {v}\n"));
            assert_eq!(pull_policy(&s).unwrap(), Some(p));
        }
        assert!(pull_policy(&svc("image: x\npull_policy: sometimes\n")).is_err());
    }
}
