//! An in-memory [`Engine`] for unit tests of lifecycle logic (test builds only).
//!
//! It keeps containers (with state transitions), volumes, networks and images, records every
//! mutating call in a log (`"create_volume nt_data"`, `"start nt-db-1"`, ...; names, not ids) and
//! lets tests script how images behave: health after start, exit on start, exit code and log line
//! on stop.
//!
//! Health is driven by inspection: after `start`, a container with a healthcheck is `starting`;
//! each `inspect_container` counts as one poll, and after [`ImageBehavior::polls`] polls it reaches
//! the scripted outcome. Like the real engine, creating a container that mounts a missing named
//! volume creates that volume (without labels).

use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::StreamExt;

use super::*;

mod state;
use state::{bytes_stream, matches, ExecHandler, FakeContainer, State};
pub use state::{empty_tar, FakeHealth, ImageBehavior};

/// The in-memory engine.
#[derive(Clone)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
    exec_handler: Arc<Mutex<Option<ExecHandler>>>,
}

impl Default for FakeEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeEngine {
    pub fn new() -> FakeEngine {
        FakeEngine {
            state: Arc::new(Mutex::new(State {
                next_port: 49153,
                ..State::default()
            })),
            exec_handler: Arc::new(Mutex::new(None)),
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Engine for FakeEngine {
    async fn info(&self) -> Result<EngineInfo> {
        Ok(EngineInfo {
            id: "FAKE:ENGINE:ID".into(),
            server_version: "27.0.0-fake".into(),
            api_version: "1.47".into(),
            endpoint: "fake://".into(),
            operating_system: "fake linux".into(),
        })
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        Ok(self.st().images.contains(image))
    }

    async fn build_image(
        &self,
        opts: &BuildOptions,
        mut context: ContextStream,
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<String> {
        let mut size = 0;
        while let Some(chunk) = context.next().await {
            size += chunk
                .map_err(|e| EngineError::api("build", opts.tag.clone(), e.to_string()))?
                .len();
        }
        let failure = {
            let mut st = self.st();
            st.calls.push(format!("build {}", opts.tag));
            st.builds.push((opts.clone(), size));
            st.build_failures.get(&opts.tag).cloned()
        };
        progress(BuildEvent::Step("Step 1/2 : FROM base".into()));
        progress(BuildEvent::Step("Step 2/2 : RUN make".into()));
        if let Some((lines, message)) = failure {
            for l in lines {
                progress(BuildEvent::Output(l));
            }
            return Err(EngineError::BuildFailed {
                image: opts.tag.clone(),
                message,
            });
        }
        let mut st = self.st();
        let id = st.id("sha256:");
        st.images.insert(opts.tag.clone());
        st.image_infos.insert(
            opts.tag.clone(),
            ImageInfo {
                id: id.clone(),
                labels: opts.labels.clone(),
                ..ImageInfo::default()
            },
        );
        Ok(id)
    }

    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()> {
        let ok = {
            let mut st = self.st();
            st.calls.push(format!("pull {image}"));
            if st.pullable.contains(image) {
                st.images.insert(image.to_string());
                true
            } else {
                false
            }
        };
        if !ok {
            return Err(EngineError::ImageUnavailable {
                image: image.to_string(),
                reason: "no registry in the fake engine".into(),
            });
        }
        progress(PullProgress {
            status: "Downloading".into(),
            current: Some(50),
            total: Some(100),
        });
        progress(PullProgress {
            status: "Download complete".into(),
            current: Some(100),
            total: Some(100),
        });
        Ok(())
    }

    async fn list_containers(&self, labels: &Labels) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .st()
            .containers
            .iter()
            .filter(|c| matches(&c.info.labels, labels))
            .map(|c| c.info.clone())
            .collect())
    }

    async fn inspect_container(&self, id_or_name: &str) -> Result<ContainerInfo> {
        let mut st = self.st();
        let now = st.now();
        let c = st.container(id_or_name)?;
        if c.info.state == RunState::Running {
            c.polls += 1;
            let reached = c.polls > c.behavior.polls;
            match c.behavior.health {
                FakeHealth::Exits(code) if reached => {
                    c.info.state = RunState::Exited;
                    c.info.exit_code = Some(code);
                    c.info.finished_at = Some(now);
                    c.logs.push(format!("fatal: exiting with code {code}"));
                }
                FakeHealth::Healthy if reached && c.has_healthcheck() => {
                    c.info.health = Health::Healthy
                }
                FakeHealth::Unhealthy if reached && c.has_healthcheck() => {
                    c.info.health = Health::Unhealthy
                }
                _ => {}
            }
        }
        Ok(c.info.clone())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let mut st = self.st();
        if st.find(&spec.name).is_some() {
            return Err(EngineError::api(
                "create container",
                spec.name.clone(),
                format!(
                    "Conflict. The container name \"/{}\" is already in use",
                    spec.name
                ),
            ));
        }
        if !st.images.contains(&spec.image) {
            return Err(EngineError::api(
                "create container",
                spec.name.clone(),
                format!("No such image: {}", spec.image),
            ));
        }
        if let Some(first) = spec.networks.first() {
            if !st.networks.contains_key(&first.network) {
                return Err(EngineError::NetworkNotFound(first.network.clone()));
            }
        }
        let id = st.id("c");
        let mut mounts = Vec::new();
        for m in &spec.mounts {
            let name_or_source = match m.kind {
                MountKind::Volume => {
                    let name = if m.source.is_empty() {
                        st.id("") // 64 hex digits, like an engine-made anonymous volume
                    } else {
                        m.source.clone()
                    };
                    if !st.volumes.contains_key(&name) {
                        let created_at = st.now();
                        st.volumes.insert(
                            name.clone(),
                            VolumeInfo {
                                name: name.clone(),
                                labels: Labels::new(),
                                created_at: Some(created_at),
                                mountpoint: format!("/var/lib/docker/volumes/{name}/_data"),
                                driver: "local".into(),
                            },
                        );
                    }
                    name
                }
                _ => m.source.clone(),
            };
            mounts.push(MountInfo {
                kind: m.kind.clone(),
                name_or_source,
                target: m.target.clone(),
            });
        }
        let behavior = st.behavior(&spec.image);
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            state: RunState::Created,
            health: Health::None,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            ports: Vec::new(),
            mounts,
            env: spec.env.clone(),
            stop_signal: spec.stop_signal.clone(),
            stop_timeout_secs: spec.stop_timeout_secs,
            networks: spec
                .networks
                .first()
                .map(|n| n.network.clone())
                .into_iter()
                .collect(),
            network_ids: spec
                .networks
                .first()
                .and_then(|n| Some((n.network.clone(), st.networks.get(&n.network)?.id.clone())))
                .into_iter()
                .collect(),
        };
        st.calls.push(format!("create_container {}", spec.name));
        st.containers.push(FakeContainer {
            info,
            spec: spec.clone(),
            behavior,
            polls: 0,
            logs: Vec::new(),
        });
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let delay = self.st().container(id)?.behavior.start_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut st = self.st();
        let now = st.now();
        let i = st
            .find(id)
            .ok_or_else(|| EngineError::ContainerNotFound(id.to_string()))?;
        // Like the engine, by ID: a network removed and created again under the same name is
        // not the one the container was attached to.
        let info = &st.containers[i].info;
        if let Some(missing) =
            info.networks
                .iter()
                .find(|n| match (st.networks.get(*n), info.network_ids.get(*n)) {
                    (None, _) => true,
                    (Some(now), Some(was)) => now.id != *was,
                    (Some(_), None) => false,
                })
        {
            let missing = info.network_ids.get(missing).unwrap_or(missing).clone();
            return Err(EngineError::NetworkNotFound(missing));
        }
        let mut next_port = st.next_port;
        let c = &mut st.containers[i];
        if c.info.state == RunState::Running {
            return Ok(()); // like the engine: 304 Not Modified
        }
        c.info.state = RunState::Running;
        c.info.exit_code = None;
        c.info.oom_killed = false;
        c.info.started_at = Some(now);
        c.info.finished_at = None;
        c.polls = 0;
        c.info.health = if c.has_healthcheck() {
            Health::Starting
        } else {
            Health::None
        };
        if let Some(l) = &c.behavior.start_log {
            c.logs.push(l.clone());
        }
        c.info.ports = c
            .spec
            .ports
            .iter()
            .map(|p| PublishedPort {
                container_port: p.container_port,
                protocol: p.protocol.clone(),
                host_ip: if p.host_ip.is_empty() {
                    "0.0.0.0".into()
                } else {
                    p.host_ip.clone()
                },
                host_port: p.host_port.unwrap_or_else(|| {
                    next_port += 1;
                    next_port - 1
                }),
            })
            .collect();
        let name = c.info.name.clone();
        st.next_port = next_port;
        st.calls.push(format!("start {name}"));
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        let delay = self.st().container(id)?.behavior.stop_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut st = self.st();
        let now = st.now();
        let c = st.container(id)?;
        let name = c.info.name.clone();
        if matches!(
            c.info.state,
            RunState::Running | RunState::Restarting | RunState::Paused
        ) {
            c.info.state = RunState::Exited;
            c.info.finished_at = Some(now);
            c.info.oom_killed = c.behavior.oom_on_stop;
            c.info.exit_code = Some(if c.behavior.oom_on_stop {
                137
            } else {
                c.behavior.stop_exit_code
            });
            if c.info.exit_code != Some(137) {
                if let Some(l) = &c.behavior.stop_log {
                    c.logs.push(l.clone());
                }
            }
        }
        st.stop_timeouts.push((name.clone(), timeout_secs));
        st.calls.push(format!("stop {name}"));
        Ok(())
    }

    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        let mut st = self.st();
        let i = st
            .find(id)
            .ok_or_else(|| EngineError::ContainerNotFound(id.to_string()))?;
        let c = &st.containers[i];
        if c.info.state == RunState::Running && !force {
            return Err(EngineError::api(
                "remove container",
                c.info.name.clone(),
                "You cannot remove a running container. Stop the container before attempting removal or force remove",
            ));
        }
        let c = st.containers.remove(i);
        st.calls.push(format!("remove_container {}", c.info.name));
        Ok(())
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<String> {
        let mut st = self.st();
        let c = st.container(id)?;
        let skip = c.logs.len().saturating_sub(tail);
        Ok(c.logs[skip..].iter().map(|l| format!("{l}\n")).collect())
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        _env: &[String],
        _user: Option<&str>,
    ) -> Result<ExecOutput> {
        self.run_exec(id, cmd)
    }

    async fn exec_stream(
        &self,
        id: &str,
        cmd: &[String],
        _env: &[String],
        _user: Option<&str>,
    ) -> Result<(String, ByteStream)> {
        let out = self.run_exec(id, cmd)?;
        let mut st = self.st();
        let exec_id = st.id("e");
        st.execs.insert(exec_id.clone(), out.exit_code);
        Ok((exec_id, bytes_stream(out.stdout)))
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>> {
        Ok(self.st().execs.get(exec_id).copied())
    }

    async fn download_archive(&self, id: &str, path: &str) -> Result<ByteStream> {
        let mut st = self.st();
        let name = st.container(id)?.info.name.clone();
        let tar = st
            .archives
            .get(&(name, path.to_string()))
            .cloned()
            .unwrap_or_else(empty_tar);
        Ok(bytes_stream(tar))
    }

    async fn upload_archive(&self, id: &str, path: &str, tar: ByteStream) -> Result<()> {
        let name = self.st().container(id)?.info.name.clone();
        let mut bytes = Vec::new();
        let mut tar = tar;
        while let Some(chunk) = tar.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        let mut st = self.st();
        st.calls.push(format!("upload_archive {name} {path}"));
        st.archives.insert((name, path.to_string()), bytes);
        Ok(())
    }

    async fn list_volumes(&self, labels: &Labels) -> Result<Vec<VolumeInfo>> {
        Ok(self
            .st()
            .volumes
            .values()
            .filter(|v| matches(&v.labels, labels))
            .cloned()
            .collect())
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>> {
        Ok(self.st().volumes.get(name).cloned())
    }

    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<VolumeInfo> {
        let mut st = self.st();
        if let Some(v) = st.volumes.get(name) {
            // The engine returns the existing volume (with its labels) for a name that exists.
            return Ok(v.clone());
        }
        let created_at = st.now();
        let v = VolumeInfo {
            name: name.to_string(),
            labels: labels.clone(),
            created_at: Some(created_at),
            mountpoint: format!("/var/lib/docker/volumes/{name}/_data"),
            driver: "local".into(),
        };
        st.volumes.insert(name.to_string(), v.clone());
        st.calls.push(format!("create_volume {name}"));
        Ok(v)
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        let mut st = self.st();
        if !st.volumes.contains_key(name) {
            return Err(EngineError::VolumeNotFound(name.to_string()));
        }
        if st.volume_in_use(name) {
            return Err(EngineError::api("remove volume", name, "volume is in use"));
        }
        st.volumes.remove(name);
        st.calls.push(format!("remove_volume {name}"));
        Ok(())
    }

    async fn list_networks(&self, labels: &Labels) -> Result<Vec<NetworkInfo>> {
        Ok(self
            .st()
            .networks
            .values()
            .filter(|n| matches(&n.labels, labels))
            .cloned()
            .collect())
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        Ok(self.st().networks.get(name).cloned())
    }

    async fn create_network(&self, name: &str, labels: &Labels) -> Result<String> {
        let mut st = self.st();
        if st.networks.contains_key(name) {
            return Err(EngineError::api(
                "create network",
                name,
                "network with name already exists",
            ));
        }
        let id = st.id("n");
        st.networks.insert(
            name.to_string(),
            NetworkInfo {
                id: id.clone(),
                name: name.to_string(),
                labels: labels.clone(),
            },
        );
        st.calls.push(format!("create_network {name}"));
        Ok(id)
    }

    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        _aliases: &[String],
    ) -> Result<()> {
        let mut st = self.st();
        let Some(net_id) = st.networks.get(network).map(|n| n.id.clone()) else {
            return Err(EngineError::NetworkNotFound(network.to_string()));
        };
        let c = st.container(container)?;
        if !c.info.networks.iter().any(|n| n == network) {
            c.info.networks.push(network.to_string());
            c.info
                .network_ids
                .insert(network.to_string(), net_id.clone());
        }
        let name = c.info.name.clone();
        st.calls.push(format!("connect_network {network} {name}"));
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        let mut st = self.st();
        if !st.networks.contains_key(name) {
            return Err(EngineError::NetworkNotFound(name.to_string()));
        }
        // Like the engine: a running container holds an endpoint on it; a stopped one does not
        // (it cannot start again until it is recreated).
        if st
            .containers
            .iter()
            .any(|c| c.info.state == RunState::Running && c.info.networks.iter().any(|n| n == name))
        {
            return Err(EngineError::api(
                "remove network",
                name,
                "network has active endpoints",
            ));
        }
        st.networks.remove(name);
        st.calls.push(format!("remove_network {name}"));
        Ok(())
    }

    async fn log_stream(&self, id: &str, opts: &LogOptions) -> Result<OutputStream> {
        let mut st = self.st();
        let c = st.container(id)?;
        let tail = opts.tail.map(|t| t as usize).unwrap_or(usize::MAX);
        let skip = c.logs.len().saturating_sub(tail);
        let chunks: Vec<Result<OutputChunk>> = c.logs[skip..]
            .iter()
            .map(|l| {
                Ok(OutputChunk {
                    kind: OutputKind::Stdout,
                    bytes: format!("{l}\n").into_bytes(),
                })
            })
            .collect();
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }

    async fn exec_attach(&self, id: &str, spec: &ExecSpec) -> Result<Attached> {
        let out = self.run_exec(id, &spec.cmd)?;
        let mut st = self.st();
        let exec_id = st.id("e");
        st.execs.insert(exec_id.clone(), out.exit_code);
        let chunks = vec![
            Ok(OutputChunk {
                kind: OutputKind::Stdout,
                bytes: out.stdout,
            }),
            Ok(OutputChunk {
                kind: OutputKind::Stderr,
                bytes: out.stderr,
            }),
        ];
        Ok(Attached {
            id: exec_id,
            output: Box::pin(futures_util::stream::iter(chunks)),
            input: Box::pin(tokio::io::sink()),
        })
    }

    async fn resize_exec(&self, exec_id: &str, _rows: u16, _cols: u16) -> Result<()> {
        if self.st().execs.contains_key(exec_id) {
            Ok(())
        } else {
            Err(EngineError::api("resize exec", exec_id, "no such exec"))
        }
    }

    async fn attach_container(&self, id: &str) -> Result<Attached> {
        let id = self.st().container(id)?.info.id.clone();
        Ok(Attached {
            id,
            output: Box::pin(futures_util::stream::empty()),
            input: Box::pin(tokio::io::sink()),
        })
    }

    async fn resize_container(&self, id: &str, _rows: u16, _cols: u16) -> Result<()> {
        self.st().container(id).map(|_| ())
    }

    /// A fake container's command ends at once: a running one exits 0.
    async fn wait_container(&self, id: &str) -> Result<i64> {
        let mut st = self.st();
        let now = st.now();
        let c = st.container(id)?;
        if c.info.state == RunState::Running {
            c.info.state = RunState::Exited;
            c.info.exit_code = Some(0);
            c.info.finished_at = Some(now);
        }
        Ok(c.info.exit_code.unwrap_or(0))
    }

    async fn top(&self, id: &str) -> Result<TopInfo> {
        let mut st = self.st();
        let c = st.container(id)?;
        if c.info.state != RunState::Running {
            return Err(EngineError::api(
                "top",
                c.info.name.clone(),
                "container is not running",
            ));
        }
        let cmd = c.spec.cmd.clone().unwrap_or_default().join(" ");
        Ok(TopInfo {
            titles: vec!["PID".into(), "CMD".into()],
            processes: vec![vec!["1".into(), cmd]],
        })
    }

    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>> {
        let st = self.st();
        if !st.images.contains(image) {
            return Ok(None);
        }
        Ok(Some(st.image_infos.get(image).cloned().unwrap_or_else(
            || ImageInfo {
                id: format!("sha256:{image}"),
                ..ImageInfo::default()
            },
        )))
    }

    async fn container_addresses(&self, id: &str) -> Result<Vec<(String, String)>> {
        let mut st = self.st();
        let i = st
            .find(id)
            .ok_or_else(|| EngineError::ContainerNotFound(id.to_string()))?;
        let c = &mut st.containers[i];
        if c.info.state != RunState::Running {
            return Ok(Vec::new());
        }
        // One address per network, derived from the container's position (stable in a test).
        Ok(c.info
            .networks
            .iter()
            .map(|n| (n.clone(), format!("172.18.0.{}", i + 2)))
            .collect())
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let mut st = self.st();
        let now = st.now();
        let c = st.container(id)?;
        let name = c.info.name.clone();
        if c.info.state == RunState::Running {
            c.info.state = RunState::Exited;
            c.info.finished_at = Some(now);
            c.info.exit_code = Some(137);
        }
        st.calls.push(format!("kill {name} {signal}"));
        Ok(())
    }
}

mod script;
#[cfg(test)]
mod tests;
