//! Typed compose model. Only what nodus reads or changes is typed; everything else is kept in the
//! `extra` maps and written back unchanged. Short and long syntaxes are normalised on input (e.g.
//! `environment` list → map, volume short syntax → long) and always written in long form, which
//! `docker compose` and `docker-compose` read identically.

use indexmap::IndexMap;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComposeFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Value>,
    #[serde(default)]
    pub services: IndexMap<String, Service>,
    #[serde(
        default,
        skip_serializing_if = "IndexMap::is_empty",
        deserialize_with = "de_null_map"
    )]
    pub volumes: IndexMap<String, VolumeDef>,
    #[serde(
        default,
        skip_serializing_if = "IndexMap::is_empty",
        deserialize_with = "de_null_map"
    )]
    pub networks: IndexMap<String, NetworkDef>,
    /// `x-*` extensions (including `x-nodus`, which is also parsed into [`super::xnodus::XNodus`]),
    /// `configs`, `secrets`...
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "IndexMap::is_empty",
        deserialize_with = "de_string_map"
    )]
    pub labels: IndexMap<String, String>,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

impl VolumeDef {
    pub fn is_external(&self) -> bool {
        match &self.external {
            Some(Value::Bool(b)) => *b,
            Some(Value::Mapping(_)) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "IndexMap::is_empty",
        deserialize_with = "de_string_map"
    )]
    pub labels: IndexMap<String, String>,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for StringOrList {
    /// A string, or a list of scalars (`command: [--port, 6379]`: numbers become strings).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Sequence(items) => items
                .iter()
                .map(|i| scalar_to_string::<D::Error>(i).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()
                .map(StringOrList::List),
            v => match scalar_to_string::<D::Error>(&v)? {
                Some(s) => Ok(StringOrList::String(s)),
                None => Err(de::Error::custom(
                    "expected a string or a list of strings, found null",
                )),
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<StringOrList>,
    /// `None` value = `KEY` without `=`: taken from the environment at run time.
    #[serde(
        default,
        skip_serializing_if = "IndexMap::is_empty",
        deserialize_with = "de_env"
    )]
    pub environment: IndexMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_volumes"
    )]
    pub volumes: Vec<ServiceVolume>,
    #[serde(
        default,
        skip_serializing_if = "IndexMap::is_empty",
        deserialize_with = "de_depends_on"
    )]
    pub depends_on: IndexMap<String, DependsOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Compose duration, e.g. "60s", "1m30s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "IndexMap::is_empty",
        deserialize_with = "de_string_map"
    )]
    pub labels: IndexMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "IndexMap::is_empty",
        deserialize_with = "de_networks"
    )]
    pub networks: IndexMap<String, ServiceNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_open: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Everything else (deploy, logging, x-*, ...), passed through unchanged.
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Port {
    /// "5432", "127.0.0.1:5432:5432", "8080:80/udp", "127.0.0.1::5432"
    Short(String),
    Long(PortLong),
}

impl<'de> Deserialize<'de> for Port {
    /// `5432` (a number), `"127.0.0.1::5432"` (a string) or the long syntax mapping.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Port::Short(s)),
            Value::Number(n) => Ok(Port::Short(n.to_string())),
            v @ Value::Mapping(_) => serde_yaml::from_value(v)
                .map(Port::Long)
                .map_err(|e| de::Error::custom(format!("port: {e}"))),
            other => Err(de::Error::custom(format!(
                "expected a port like \"5432\", \"127.0.0.1:5432:5432\" or a mapping with `target:`, found {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortLong {
    pub target: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    Volume,
    Bind,
    Tmpfs,
    Npipe,
}

/// A service mount in long syntax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceVolume {
    #[serde(rename = "type")]
    pub kind: VolumeType,
    /// Volume key (top-level `volumes:`) or host path; `None` = anonymous volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DependsCondition {
    #[default]
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DependsOn {
    #[serde(default)]
    pub condition: DependsCondition,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<bool>,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ServiceNetwork {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(flatten)]
    pub extra: IndexMap<String, Value>,
}

// ---- deserialisers for compose's alternative syntaxes -------------------------------------------

fn scalar_to_string<E: de::Error>(v: &Value) -> Result<Option<String>, E> {
    Ok(match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => {
            return Err(E::custom(format!(
                "expected a scalar value, found {other:?}"
            )))
        }
    })
}

/// A map, or `null` (as in `volumes: {db: }` entries or an empty `volumes:` key).
fn de_null_map<'de, D, T>(d: D) -> Result<IndexMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Default + serde::de::DeserializeOwned,
{
    let raw: Option<IndexMap<String, Option<Value>>> = Option::deserialize(d)?;
    let mut out = IndexMap::new();
    for (k, v) in raw.unwrap_or_default() {
        let t = match v {
            None | Some(Value::Null) => T::default(),
            Some(v) => {
                serde_yaml::from_value(v).map_err(|e| de::Error::custom(format!("{k}: {e}")))?
            }
        };
        out.insert(k, t);
    }
    Ok(out)
}

/// `KEY: value` map or `["KEY=value", "KEY"]` list.
fn de_env<'de, D: Deserializer<'de>>(d: D) -> Result<IndexMap<String, Option<String>>, D::Error> {
    let v = Value::deserialize(d)?;
    let mut out = IndexMap::new();
    match v {
        Value::Null => {}
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = scalar_to_string::<D::Error>(&k)?.unwrap_or_default();
                out.insert(k, scalar_to_string::<D::Error>(&v)?);
            }
        }
        Value::Sequence(items) => {
            for item in items {
                let s = scalar_to_string::<D::Error>(&item)?.unwrap_or_default();
                match s.split_once('=') {
                    Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                    None => out.insert(s, None),
                };
            }
        }
        other => {
            return Err(de::Error::custom(format!(
                "expected a map or a list, found {other:?}"
            )))
        }
    }
    Ok(out)
}

/// Labels: `KEY: value` map or `["KEY=value"]` list.
fn de_string_map<'de, D: Deserializer<'de>>(d: D) -> Result<IndexMap<String, String>, D::Error> {
    Ok(de_env(d)?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// `depends_on: [a, b]` or `depends_on: {a: {condition: service_healthy}}`.
fn de_depends_on<'de, D: Deserializer<'de>>(d: D) -> Result<IndexMap<String, DependsOn>, D::Error> {
    de_name_map(d, "depends_on")
}

/// `networks: [a, b]` or `networks: {a: {aliases: [...]}, b: }`.
fn de_networks<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<IndexMap<String, ServiceNetwork>, D::Error> {
    de_name_map(d, "networks")
}

/// A list of names (each with default options) or a map of name → options (`null` = defaults).
fn de_name_map<'de, D, T>(d: D, what: &str) -> Result<IndexMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Default + serde::de::DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    let mut out = IndexMap::new();
    match v {
        Value::Null => {}
        Value::Sequence(items) => {
            for item in items {
                let name = scalar_to_string::<D::Error>(&item)?.unwrap_or_default();
                out.insert(name, T::default());
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m {
                let name = scalar_to_string::<D::Error>(&k)?.unwrap_or_default();
                let opts = match v {
                    Value::Null => T::default(),
                    v => serde_yaml::from_value(v).map_err(de::Error::custom)?,
                };
                out.insert(name, opts);
            }
        }
        other => {
            return Err(de::Error::custom(format!(
                "{what}: expected a list or a map, found {other:?}"
            )))
        }
    }
    Ok(out)
}

/// Volume short syntax (`name:/path[:ro]`, `./dir:/path`, `/path`) or long syntax.
fn de_volumes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ServiceVolume>, D::Error> {
    let v = Option::<Vec<Value>>::deserialize(d)?;
    v.unwrap_or_default()
        .into_iter()
        .map(|item| match item {
            Value::String(s) => parse_short_volume(&s).map_err(de::Error::custom),
            v => serde_yaml::from_value(v).map_err(de::Error::custom),
        })
        .collect()
}

/// Parses compose's short volume syntax.
pub fn parse_short_volume(s: &str) -> Result<ServiceVolume, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, None),
        [src, t] => (Some(*src), *t, None),
        [src, t, m] => (Some(*src), *t, Some(*m)),
        _ => {
            return Err(format!(
                "invalid volume `{s}`: expected [SOURCE:]TARGET[:MODE]"
            ))
        }
    };
    if target.is_empty() {
        return Err(format!("invalid volume `{s}`: empty target"));
    }
    let read_only = mode
        .map(|m| m.split(',').any(|o| o == "ro"))
        .unwrap_or(false);
    let kind = match source {
        None => VolumeType::Volume,
        Some(src) if src.starts_with('/') || src.starts_with('.') || src.starts_with('~') => {
            VolumeType::Bind
        }
        Some(_) => VolumeType::Volume,
    };
    Ok(ServiceVolume {
        kind,
        source: source.map(str::to_string),
        target: target.to_string(),
        read_only,
        extra: IndexMap::new(),
    })
}
