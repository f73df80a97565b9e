//! Scripting the fake engine (images, behaviours, containers, volumes, networks, logs, archives,
//! failing builds) and inspecting what it was asked to do (calls, specs, stop timeouts, uploads).

use super::*;

impl FakeEngine {
    // ---- scripting -----------------------------------------------------------------------------

    /// Makes images present locally.
    pub fn with_images(self, images: &[&str]) -> Self {
        self.st()
            .images
            .extend(images.iter().map(|s| s.to_string()));
        self
    }
    pub fn add_image(&self, image: &str) {
        self.st().images.insert(image.to_string());
    }
    /// Images that `pull_image` can fetch.
    /// What `inspect_image` returns for a present image (default: an empty config).
    pub fn set_image_info(&self, image: &str, info: ImageInfo) {
        let mut st = self.st();
        st.images.insert(image.to_string());
        st.image_infos.insert(image.to_string(), info);
    }
    /// Builds of `tag` fail after `lines` of output with the engine's `message`.
    pub fn fail_build(&self, tag: &str, lines: &[&str], message: &str) {
        self.st().build_failures.insert(
            tag.to_string(),
            (
                lines.iter().map(|l| l.to_string()).collect(),
                message.to_string(),
            ),
        );
    }
    /// Builds run so far: (options, bytes of context received).
    pub fn builds(&self) -> Vec<(BuildOptions, usize)> {
        self.st().builds.clone()
    }
    pub fn add_pullable(&self, image: &str) {
        self.st().pullable.insert(image.to_string());
    }
    pub fn set_behavior(&self, image: &str, behavior: ImageBehavior) {
        self.st().behaviors.insert(image.to_string(), behavior);
    }
    /// Changes the behaviour of containers of `image`, starting from its current one.
    pub fn tweak(&self, image: &str, f: impl FnOnce(&mut ImageBehavior)) {
        let mut st = self.st();
        let mut b = st.behavior(image);
        f(&mut b);
        st.behaviors.insert(image.to_string(), b.clone());
        for c in st.containers.iter_mut().filter(|c| c.info.image == image) {
            c.behavior = b.clone();
        }
    }
    /// Answers `exec`/`exec_stream` (default: exit 0, no output).
    pub fn set_exec_handler(
        &self,
        f: impl Fn(&ContainerInfo, &[String]) -> ExecOutput + Send + Sync + 'static,
    ) {
        *self.exec_handler.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
    }
    /// A volume that exists already (e.g. foreign, or created by docker-compose).
    pub fn add_volume(&self, name: &str, labels: &Labels) {
        let mut st = self.st();
        let created_at = st.now();
        st.volumes.insert(
            name.to_string(),
            VolumeInfo {
                name: name.to_string(),
                labels: labels.clone(),
                created_at: Some(created_at),
                mountpoint: format!("/var/lib/docker/volumes/{name}/_data"),
                driver: "local".into(),
            },
        );
    }
    pub fn add_network(&self, name: &str, labels: &Labels) {
        let mut st = self.st();
        let id = st.id("n");
        st.networks.insert(
            name.to_string(),
            NetworkInfo {
                id,
                name: name.to_string(),
                labels: labels.clone(),
            },
        );
    }
    /// A container that exists already (not created through the trait; not logged).
    pub fn add_container(&self, name: &str, image: &str, labels: &Labels, state: RunState) {
        let mut st = self.st();
        let id = st.id("c");
        let behavior = st.behavior(image);
        st.containers.push(FakeContainer {
            info: ContainerInfo {
                id,
                name: name.to_string(),
                image: image.to_string(),
                labels: labels.clone(),
                state,
                health: Health::None,
                exit_code: (state == RunState::Exited).then_some(0),
                oom_killed: false,
                started_at: None,
                finished_at: None,
                ports: Vec::new(),
                mounts: Vec::new(),
                env: Vec::new(),
                stop_signal: None,
                stop_timeout_secs: None,
                networks: Vec::new(),
                network_ids: Default::default(),
            },
            spec: ContainerSpec {
                name: name.to_string(),
                image: image.to_string(),
                labels: labels.clone(),
                ..ContainerSpec::default()
            },
            behavior,
            polls: 0,
            logs: Vec::new(),
        });
    }
    /// Forces a container's state (e.g. it crashed).
    pub fn set_state(&self, name: &str, state: RunState, exit_code: Option<i64>) {
        let mut st = self.st();
        if let Ok(c) = st.container(name) {
            c.info.state = state;
            c.info.exit_code = exit_code;
        }
    }
    pub fn push_log(&self, name: &str, line: &str) {
        let mut st = self.st();
        if let Ok(c) = st.container(name) {
            c.logs.push(line.to_string());
        }
    }
    /// Content returned by `download_archive` for (container name, path); default: an empty tar.
    pub fn set_archive(&self, container: &str, path: &str, tar: Vec<u8>) {
        self.st()
            .archives
            .insert((container.to_string(), path.to_string()), tar);
    }

    // ---- inspection ----------------------------------------------------------------------------

    /// Every mutating call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.st().calls.clone()
    }
    pub fn clear_calls(&self) {
        self.st().calls.clear();
    }
    /// Position of the first call equal to `call` (panics with the log when absent).
    pub fn call_index(&self, call: &str) -> usize {
        let calls = self.calls();
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("call {call:?} not found in {calls:#?}"))
    }
    /// The timeouts `stop_container` was called with, per container name.
    pub fn stop_timeouts(&self) -> Vec<(String, Option<i64>)> {
        self.st().stop_timeouts.clone()
    }
    /// Current container info without counting as a poll.
    pub fn container(&self, name: &str) -> Option<ContainerInfo> {
        let st = self.st();
        st.find(name).map(|i| st.containers[i].info.clone())
    }
    /// The spec a container was created with.
    pub fn spec_of(&self, name: &str) -> Option<ContainerSpec> {
        let st = self.st();
        st.find(name).map(|i| st.containers[i].spec.clone())
    }
    pub fn container_names(&self) -> Vec<String> {
        self.st()
            .containers
            .iter()
            .map(|c| c.info.name.clone())
            .collect()
    }
    pub fn volume(&self, name: &str) -> Option<VolumeInfo> {
        self.st().volumes.get(name).cloned()
    }
    pub fn volume_names(&self) -> Vec<String> {
        self.st().volumes.keys().cloned().collect()
    }
    pub fn network(&self, name: &str) -> Option<NetworkInfo> {
        self.st().networks.get(name).cloned()
    }
    pub fn network_names(&self) -> Vec<String> {
        self.st().networks.keys().cloned().collect()
    }
    /// Uploaded archive bytes for (container name, path).
    pub fn uploaded(&self, container: &str, path: &str) -> Option<Vec<u8>> {
        self.st()
            .archives
            .get(&(container.to_string(), path.to_string()))
            .cloned()
    }

    /// `cmd` asks whether the service is ready: its health command, `pg_isready`, `redis-cli ping`.
    pub(super) fn is_probe(&self, info: &ContainerInfo, cmd: &[String]) -> bool {
        if cmd.first().map(String::as_str) == Some("pg_isready") || cmd == ["redis-cli", "ping"] {
            return true;
        }
        let st = self.st();
        let Some(test) = st
            .containers
            .iter()
            .find(|c| c.info.id == info.id)
            .and_then(|c| c.spec.healthcheck.as_ref())
            .map(|h| h.test.clone())
        else {
            return false;
        };
        match test.first().map(String::as_str) {
            Some("CMD") => cmd == &test[1..],
            Some("CMD-SHELL") => {
                cmd.len() == 3
                    && cmd[0] == "/bin/sh"
                    && cmd[1] == "-c"
                    && cmd[2] == test[1..].join(" ")
            }
            _ => false,
        }
    }

    pub(super) fn run_exec(&self, id: &str, cmd: &[String]) -> Result<ExecOutput> {
        let info = {
            let mut st = self.st();
            let c = st.container(id)?;
            if c.info.state != RunState::Running {
                return Err(EngineError::api(
                    "exec",
                    c.info.name.clone(),
                    "container is not running",
                ));
            }
            c.info.clone()
        };
        // Readiness probes read, they change nothing: not in the log of mutating calls.
        let probe = self.is_probe(&info, cmd);
        if !probe {
            self.st()
                .calls
                .push(format!("exec {} {}", info.name, cmd.join(" ")));
        }
        let handler = self
            .exec_handler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(match handler {
            Some(h) => h(&info, cmd),
            // A readiness probe (the health command, pg_isready, redis-cli ping) passes when the
            // scripted health says healthy.
            None if probe => {
                let ok = info.health == Health::Healthy;
                ExecOutput {
                    exit_code: if ok { 0 } else { 1 },
                    stdout: if ok && cmd[0] == "redis-cli" {
                        b"PONG\n".to_vec()
                    } else {
                        Vec::new()
                    },
                    stderr: Vec::new(),
                }
            }
            None => ExecOutput {
                exit_code: 0,
                stdout: Vec::new(),
                stderr: Vec::new(),
            },
        })
    }
}
