//! The [`Engine`] implementation: one method per Engine API call.

use std::sync::{Arc, Mutex};

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    EndpointSettings, NetworkConnectRequest, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    InspectContainerOptions, InspectNetworkOptions, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, StartContainerOptions,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::{stream, StreamExt};

use super::convert::{
    container_info, create_body, keep_tail, label_filters, split_image_ref, to_hash, to_labels,
    volume_info,
};
use super::{
    describe, is_connection_error, missing_network, server_message, status, DockerEngine, Obj,
    API_TIMEOUT_SECS, UPLOAD_TIMEOUT_SECS,
};
use crate::engine::*;

#[async_trait]
impl Engine for DockerEngine {
    async fn info(&self) -> Result<EngineInfo> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.err("info", Obj::Other("engine"), e))?;
        Ok(EngineInfo {
            id: info.id.unwrap_or_default(),
            server_version: info.server_version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
            endpoint: self.endpoint.clone(),
            operating_system: info.operating_system.unwrap_or_default(),
        })
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.err("inspect image", Obj::Other(image), e)),
        }
    }

    async fn build_image(
        &self,
        opts: &BuildOptions,
        context: ContextStream,
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<String> {
        self.build(opts, context, progress).await
    }

    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()> {
        let (name, tag) = split_image_ref(image);
        let mut opts = CreateImageOptionsBuilder::new().from_image(name);
        if !tag.is_empty() {
            opts = opts.tag(tag);
        }
        let mut pull = self.docker.create_image(Some(opts.build()), None, None);
        while let Some(item) = pull.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(EngineError::ImageUnavailable {
                            image: image.to_string(),
                            reason: detail,
                        });
                    }
                    let status = match (info.id, info.status) {
                        (Some(id), Some(s)) => format!("{id}: {s}"),
                        (None, Some(s)) => s,
                        (Some(id), None) => id,
                        (None, None) => continue,
                    };
                    let detail = info.progress_detail.unwrap_or_default();
                    progress(PullProgress {
                        status,
                        current: detail.current.and_then(|c| u64::try_from(c).ok()),
                        total: detail.total.and_then(|t| u64::try_from(t).ok()),
                    });
                }
                Err(e) if is_connection_error(&e) => {
                    return Err(self.err("pull", Obj::Image(image), e))
                }
                Err(e) => {
                    let reason = match &e {
                        BollardError::DockerStreamError { error } => error.clone(),
                        other => describe(other),
                    };
                    return Err(EngineError::ImageUnavailable {
                        image: image.to_string(),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    async fn list_containers(&self, labels: &Labels) -> Result<Vec<ContainerInfo>> {
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&label_filters(labels))
            .build();
        let summaries = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.err("list containers", Obj::Other("containers"), e))?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let Some(id) = s.id else { continue };
            match self.inspect_container(&id).await {
                Ok(info) => out.push(info),
                // Removed between list and inspect.
                Err(EngineError::ContainerNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn inspect_container(&self, id_or_name: &str) -> Result<ContainerInfo> {
        let r = self
            .docker
            .inspect_container(id_or_name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.err("inspect", Obj::Container(id_or_name), e))?;
        Ok(container_info(r))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let body = create_body(spec).map_err(|reason| {
            EngineError::api("create", format!("container {}", spec.name), reason)
        })?;
        let mut opts = CreateContainerOptionsBuilder::new();
        if !spec.name.is_empty() {
            opts = opts.name(&spec.name);
        }
        let object = if spec.name.is_empty() {
            spec.image.as_str()
        } else {
            spec.name.as_str()
        };
        match self.docker.create_container(Some(opts.build()), body).await {
            Ok(r) => {
                for w in r.warnings.iter().filter(|w| !w.is_empty()) {
                    tracing::warn!(container = %object, "engine warning on create: {w}");
                }
                Ok(r.id)
            }
            // A 404 on create means the image (or a network) is missing, not the container.
            Err(e) if status(&e) == Some(404) => {
                let msg = server_message(&e).unwrap_or_default().to_string();
                if msg.contains("network") {
                    let net = spec
                        .networks
                        .first()
                        .map(|n| n.network.clone())
                        .unwrap_or_default();
                    Err(EngineError::NetworkNotFound(net))
                } else {
                    Err(EngineError::ImageUnavailable {
                        image: spec.image.clone(),
                        reason: msg,
                    })
                }
            }
            Err(e) => Err(self.err("create", Obj::Container(object), e)),
        }
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        match self
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            // Already running.
            Err(e) if status(&e) == Some(304) => Ok(()),
            // "network 7193… not found": a network it was attached to was removed since (its
            // 404 is not the container's).
            Err(e) if status(&e) == Some(404) => match server_message(&e).and_then(missing_network)
            {
                Some(net) => Err(EngineError::NetworkNotFound(net)),
                None => Err(self.err("start", Obj::Container(id), e)),
            },
            Err(e) => Err(self.err("start", Obj::Container(id), e)),
        }
    }

    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        let mut opts = StopContainerOptionsBuilder::new();
        // Without `t`, the engine uses the container's StopTimeout (default 10 s).
        let wait = match timeout_secs {
            Some(t) => {
                let t = t.clamp(0, i64::from(i32::MAX));
                opts = opts.t(t as i32);
                t as u64
            }
            None => match self.inspect_container(id).await {
                Ok(info) => info.stop_timeout_secs.unwrap_or(10).max(0) as u64,
                Err(_) => 10,
            },
        };
        // The answer only comes once the container has stopped: allow the grace period and more.
        let docker = self.with_timeout(wait + API_TIMEOUT_SECS);
        match docker.stop_container(id, Some(opts.build())).await {
            Ok(()) => Ok(()),
            // Already stopped.
            Err(e) if status(&e) == Some(304) => Ok(()),
            Err(e) => Err(self.err("stop", Obj::Container(id), e)),
        }
    }

    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        // v=false: anonymous volumes are never removed implicitly.
        let opts = RemoveContainerOptionsBuilder::new()
            .force(force)
            .v(false)
            .build();
        self.docker
            .remove_container(id, Some(opts))
            .await
            .map_err(|e| self.err("remove", Obj::Container(id), e))
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<String> {
        let tail = if tail == usize::MAX {
            "all".to_string()
        } else {
            tail.to_string()
        };
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .tail(&tail)
            .build();
        let mut logs = self.docker.logs(id, Some(opts));
        let mut out = Vec::new();
        while let Some(item) = logs.next().await {
            let item = item.map_err(|e| self.err("logs", Obj::Container(id), e))?;
            out.extend_from_slice(item.as_ref());
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput> {
        let (exec_id, mut output) = self.start_exec(id, cmd, env, user).await?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(item) = output.next().await {
            match item.map_err(|e| self.err("exec", Obj::Container(id), e))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    stdout.extend_from_slice(&message)
                }
                LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
        let exit_code = Self::exit_code_of(&self.docker, &exec_id)
            .await
            .map_err(|e| self.err("exec", Obj::Container(id), e))?
            .ok_or_else(|| {
                EngineError::api(
                    "exec",
                    format!("container {id}"),
                    "the command's exit code is unknown",
                )
            })?;
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// Streams stdout. stderr is logged (debug) and its tail kept: when the command ends with a
    /// non-zero exit code, the stream's last item is an error carrying that code and the stderr
    /// tail (so a failing dump never looks like a short, successful one). The exit code can still
    /// be read with `exec_exit_code` afterwards.
    async fn exec_stream(
        &self,
        id: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
    ) -> Result<(String, ByteStream)> {
        let (exec_id, output) = self.start_exec(id, cmd, env, user).await?;
        let docker = self.docker.clone();
        let endpoint = self.endpoint.clone();
        let container = id.to_string();
        let exec_id2 = exec_id.clone();
        let program = cmd.first().cloned().unwrap_or_default();
        let stderr_tail = Arc::new(Mutex::new(Vec::<u8>::new()));
        let tail_in = stderr_tail.clone();
        let endpoint_in = endpoint.clone();
        let container_in = container.clone();

        let body = output.filter_map(move |item| {
            let tail = tail_in.clone();
            let endpoint = endpoint_in.clone();
            let container = container_in.clone();
            async move {
                match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => Some(Ok(message)),
                    Ok(LogOutput::StdErr { message }) => {
                        tracing::debug!(container = %container, "exec stderr: {}", String::from_utf8_lossy(&message).trim_end());
                        keep_tail(&mut tail.lock().unwrap_or_else(|p| p.into_inner()), &message);
                        None
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) if is_connection_error(&e) => Some(Err(EngineError::Unreachable {
                        endpoint,
                        reason: describe(&e),
                    })),
                    Err(e) => Some(Err(EngineError::api("exec", format!("container {container}"), describe(&e)))),
                }
            }
        });
        // After the output ended: a non-zero exit becomes a final error item.
        let end = stream::once(async move {
            match DockerEngine::exit_code_of(&docker, &exec_id2).await {
                Ok(Some(0)) | Ok(None) => None,
                Ok(Some(code)) => {
                    let tail = stderr_tail
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    let tail = String::from_utf8_lossy(&tail).trim().to_string();
                    Some(Err(EngineError::api(
                        "exec",
                        format!("container {container}"),
                        if tail.is_empty() {
                            format!("{program} exited with code {code}")
                        } else {
                            format!("{program} exited with code {code}: {tail}")
                        },
                    )))
                }
                Err(e) => Some(Err(EngineError::api(
                    "exec",
                    format!("container {container}"),
                    format!("cannot read the exit code: {}", describe(&e)),
                ))),
            }
        })
        .filter_map(|x| async move { x });
        Ok((exec_id, Box::pin(body.chain(end))))
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>> {
        Self::exit_code_of(&self.docker, exec_id)
            .await
            .map_err(|e| self.err("inspect exec", Obj::Other(exec_id), e))
    }

    async fn download_archive(&self, id: &str, path: &str) -> Result<ByteStream> {
        let opts = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut archive = Box::pin(self.docker.download_from_container(id, Some(opts)));
        // Poll the first chunk now, so a missing container or path fails here, not mid-stream.
        let object = format!("container {id}:{path}");
        let archive_err = |e: BollardError| self.archive_err("download archive", id, &object, e);
        let first = match archive.next().await {
            None => None,
            Some(Ok(b)) => Some(Ok(b)),
            Some(Err(e)) => return Err(archive_err(e)),
        };
        let endpoint = self.endpoint.clone();
        let rest = archive.map(move |item| {
            item.map_err(|e| {
                if is_connection_error(&e) {
                    EngineError::Unreachable {
                        endpoint: endpoint.clone(),
                        reason: describe(&e),
                    }
                } else {
                    EngineError::api("download archive", object.clone(), describe(&e))
                }
            })
        });
        Ok(Box::pin(stream::iter(first).chain(rest)))
    }

    async fn upload_archive(&self, id: &str, path: &str, tar: ByteStream) -> Result<()> {
        let opts = UploadToContainerOptionsBuilder::new().path(path).build();
        // Keep the source's own error: hyper only reports "body error".
        let source_err: Arc<Mutex<Option<EngineError>>> = Arc::new(Mutex::new(None));
        let slot = source_err.clone();
        let body = tar.map(move |item| match item {
            Ok(chunk) => Ok(chunk),
            Err(e) => {
                let msg = e.to_string();
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Err(std::io::Error::other(msg))
            }
        });
        let docker = self.with_timeout(UPLOAD_TIMEOUT_SECS);
        let result = docker
            .upload_to_container(id, Some(opts), bollard::body_try_stream(body))
            .await;
        if let Some(e) = source_err.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        result.map_err(|e| {
            self.archive_err("upload archive", id, &format!("container {id}:{path}"), e)
        })
    }

    async fn list_volumes(&self, labels: &Labels) -> Result<Vec<VolumeInfo>> {
        let opts = ListVolumesOptionsBuilder::new()
            .filters(&label_filters(labels))
            .build();
        let r = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(|e| self.err("list volumes", Obj::Other("volumes"), e))?;
        let mut out: Vec<VolumeInfo> = r
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(volume_info)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(volume_info(v))),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("inspect", Obj::Volume(name), e)),
        }
    }

    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<VolumeInfo> {
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(to_hash(labels)),
            ..Default::default()
        };
        let v = self
            .docker
            .create_volume(req)
            .await
            .map_err(|e| self.err("create", Obj::Volume(name), e))?;
        // The engine returns an existing volume of that name as if it had created it.
        let info = volume_info(v);
        if let Some((k, want)) = labels.iter().find(|(k, v)| info.labels.get(*k) != Some(*v)) {
            return Err(EngineError::api(
                "create",
                format!("volume {name}"),
                format!(
                    "a volume of that name already exists without label {k}={want}; not adopting it (inspect it with `docker volume inspect {name}`)"
                ),
            ));
        }
        Ok(info)
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
            .map_err(|e| self.err("remove", Obj::Volume(name), e))
    }

    async fn list_networks(&self, labels: &Labels) -> Result<Vec<NetworkInfo>> {
        let opts = ListNetworksOptionsBuilder::new()
            .filters(&label_filters(labels))
            .build();
        let nets = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| self.err("list networks", Obj::Other("networks"), e))?;
        let mut out: Vec<NetworkInfo> = nets
            .into_iter()
            .map(|n| NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: to_labels(n.labels),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(n) => Ok(Some(NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: to_labels(n.labels),
            })),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("inspect", Obj::Network(name), e)),
        }
    }

    async fn create_network(&self, name: &str, labels: &Labels) -> Result<String> {
        // Older engines (API < 1.44) happily create a second network with the same name.
        if let Some(existing) = self.inspect_network(name).await? {
            if existing.name == name {
                if labels
                    .iter()
                    .all(|(k, v)| existing.labels.get(k) == Some(v))
                {
                    return Ok(existing.id);
                }
                return Err(EngineError::api(
                    "create",
                    format!("network {name}"),
                    "a network of that name already exists without our labels; not adopting it",
                ));
            }
        }
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            labels: Some(to_hash(labels)),
            ..Default::default()
        };
        let r = self
            .docker
            .create_network(req)
            .await
            .map_err(|e| self.err("create", Obj::Other(&format!("network {name}")), e))?;
        if !r.warning.is_empty() {
            tracing::warn!(network = %name, "engine warning on create: {}", r.warning);
        }
        Ok(r.id)
    }

    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<()> {
        let req = NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: Some(EndpointSettings {
                aliases: Some(aliases.to_vec()).filter(|a| !a.is_empty()),
                ..Default::default()
            }),
        };
        match self.docker.connect_network(network, req).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => {
                if server_message(&e).is_some_and(|m| m.contains("No such container")) {
                    Err(EngineError::ContainerNotFound(container.to_string()))
                } else {
                    Err(EngineError::NetworkNotFound(network.to_string()))
                }
            }
            // Already attached.
            Err(e)
                if server_message(&e).is_some_and(|m| m.contains("already exists in network")) =>
            {
                Ok(())
            }
            Err(e) => Err(self.err(
                "connect",
                Obj::Other(&format!("container {container} to network {network}")),
                e,
            )),
        }
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        self.docker
            .remove_network(name)
            .await
            .map_err(|e| self.err("remove", Obj::Network(name), e))
    }

    fn origin(&self) -> String {
        self.origin.clone()
    }

    fn remote_host(&self) -> Option<String> {
        self.remote_host.clone()
    }

    async fn log_stream(&self, id: &str, opts: &LogOptions) -> Result<OutputStream> {
        self.session_log_stream(id, opts).await
    }

    async fn exec_attach(&self, id: &str, spec: &ExecSpec) -> Result<Attached> {
        self.session_exec_attach(id, spec).await
    }

    async fn resize_exec(&self, exec_id: &str, rows: u16, cols: u16) -> Result<()> {
        self.session_resize_exec(exec_id, rows, cols).await
    }

    async fn attach_container(&self, id: &str) -> Result<Attached> {
        self.session_attach_container(id).await
    }

    async fn resize_container(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        self.session_resize_container(id, rows, cols).await
    }

    async fn wait_container(&self, id: &str) -> Result<i64> {
        self.session_wait_container(id).await
    }

    async fn top(&self, id: &str) -> Result<TopInfo> {
        self.session_top(id).await
    }

    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>> {
        let r = match self.docker.inspect_image(image).await {
            Ok(r) => r,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.err("inspect image", Obj::Other(image), e)),
        };
        let cfg = r.config.unwrap_or_default();
        let mut volumes = cfg.volumes.unwrap_or_default();
        volumes.sort();
        Ok(Some(ImageInfo {
            id: r.id.unwrap_or_default(),
            env: cfg.env.unwrap_or_default(),
            volumes,
            entrypoint: cfg.entrypoint.unwrap_or_default(),
            cmd: cfg.cmd.unwrap_or_default(),
            labels: cfg.labels.unwrap_or_default().into_iter().collect(),
        }))
    }

    async fn container_addresses(&self, id: &str) -> Result<Vec<(String, String)>> {
        let r = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.err("inspect", Obj::Container(id), e))?;
        let mut out: Vec<(String, String)> = r
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(net, ep)| {
                let ip = ep.ip_address.filter(|ip| !ip.is_empty())?;
                Some((net, ip))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let opts = bollard::query_parameters::KillContainerOptionsBuilder::new()
            .signal(signal)
            .build();
        self.docker
            .kill_container(id, Some(opts))
            .await
            .map_err(|e| self.err("kill", Obj::Container(id), e))
    }
}
