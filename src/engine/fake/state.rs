//! The fake engine's model: how images behave, its containers and the state behind the lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::super::*;

/// What a container of an image does after `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeHealth {
    /// Healthy (when it has a healthcheck; otherwise just running).
    Healthy,
    /// Health stays `starting` forever.
    StaysStarting,
    /// Becomes `unhealthy` (keeps running).
    Unhealthy,
    /// Exits with this code (healthcheck or not).
    Exits(i64),
}

#[derive(Debug, Clone)]
pub struct ImageBehavior {
    pub health: FakeHealth,
    /// Inspections after start before the outcome is reached (0 = at once).
    pub polls: u32,
    /// Exit code when stopped (137 = killed after the grace period).
    pub stop_exit_code: i64,
    /// Line logged on a stop that is not a kill.
    pub stop_log: Option<String>,
    /// Line logged on start.
    pub start_log: Option<String>,
    /// The image defines a HEALTHCHECK of its own.
    pub image_healthcheck: bool,
    /// The container is OOM-killed when stopped.
    pub oom_on_stop: bool,
    /// How long a stop takes (tokio time: virtual in paused-time tests).
    pub stop_delay: std::time::Duration,
    /// How long a start takes (tokio time, like `stop_delay`).
    pub start_delay: std::time::Duration,
}

impl ImageBehavior {
    /// The default for an image: postgres-like images log "database system is shut down" on stop.
    pub fn for_image(image: &str) -> ImageBehavior {
        let postgres = image.contains("postgres");
        ImageBehavior {
            health: FakeHealth::Healthy,
            polls: 1,
            stop_exit_code: 0,
            stop_log: postgres.then(|| "LOG:  database system is shut down".to_string()),
            start_log: postgres
                .then(|| "LOG:  database system is ready to accept connections".to_string()),
            image_healthcheck: false,
            oom_on_stop: false,
            stop_delay: std::time::Duration::ZERO,
            start_delay: std::time::Duration::ZERO,
        }
    }
}

pub(super) type ExecHandler = Arc<dyn Fn(&ContainerInfo, &[String]) -> ExecOutput + Send + Sync>;

pub(super) struct FakeContainer {
    pub(super) info: ContainerInfo,
    pub(super) spec: ContainerSpec,
    pub(super) behavior: ImageBehavior,
    pub(super) polls: u32,
    pub(super) logs: Vec<String>,
}

impl FakeContainer {
    pub(super) fn has_healthcheck(&self) -> bool {
        match &self.spec.healthcheck {
            Some(h) if h.test.first().map(String::as_str) == Some("NONE") => false,
            Some(h) if !h.test.is_empty() => true,
            _ => self.behavior.image_healthcheck,
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) containers: Vec<FakeContainer>,
    pub(super) volumes: BTreeMap<String, VolumeInfo>,
    pub(super) networks: BTreeMap<String, NetworkInfo>,
    pub(super) images: BTreeSet<String>,
    pub(super) pullable: BTreeSet<String>,
    pub(super) behaviors: HashMap<String, ImageBehavior>,
    pub(super) calls: Vec<String>,
    pub(super) stop_timeouts: Vec<(String, Option<i64>)>,
    pub(super) archives: HashMap<(String, String), Vec<u8>>,
    pub(super) execs: HashMap<String, i64>,
    pub(super) next_id: u64,
    pub(super) next_port: u16,
    pub(super) clock: u64,
    pub(super) image_infos: HashMap<String, ImageInfo>,
    /// Builds that fail: tag → (output lines, engine message).
    pub(super) build_failures: HashMap<String, (Vec<String>, String)>,
    /// Every build's options and the context size it received.
    pub(super) builds: Vec<(BuildOptions, usize)>,
}

impl State {
    pub(super) fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:060}{:04}", 0, self.next_id)
    }
    pub(super) fn now(&mut self) -> String {
        self.clock += 1;
        let t = chrono::DateTime::from_timestamp(1_700_000_000 + self.clock as i64, 0)
            .unwrap_or_default();
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
    pub(super) fn find(&self, id_or_name: &str) -> Option<usize> {
        self.containers
            .iter()
            .position(|c| c.info.id == id_or_name || c.info.name == id_or_name)
    }
    pub(super) fn container(&mut self, id_or_name: &str) -> Result<&mut FakeContainer> {
        let i = self
            .find(id_or_name)
            .ok_or_else(|| EngineError::ContainerNotFound(id_or_name.to_string()))?;
        Ok(&mut self.containers[i])
    }
    pub(super) fn behavior(&self, image: &str) -> ImageBehavior {
        self.behaviors
            .get(image)
            .cloned()
            .unwrap_or_else(|| ImageBehavior::for_image(image))
    }
    pub(super) fn volume_in_use(&self, name: &str) -> bool {
        self.containers.iter().any(|c| {
            c.info
                .mounts
                .iter()
                .any(|m| m.kind == MountKind::Volume && m.name_or_source == name)
        })
    }
}

pub(super) fn matches(have: &Labels, want: &Labels) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

pub(super) fn bytes_stream(bytes: Vec<u8>) -> ByteStream {
    Box::pin(futures_util::stream::iter(vec![Ok(bytes.into())]))
}

/// An empty tar archive (two zero blocks).
pub fn empty_tar() -> Vec<u8> {
    vec![0u8; 1024]
}
