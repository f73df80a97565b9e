//! `run`: a one-off container of a service, attached, removed afterwards with `--rm`.
//!
//! A one-off container never mounts a stateful service's data volume unless asked
//! (`with_data`), and never while the service's own container runs (two database servers on one
//! data directory corrupt it): its data directory is a tmpfs instead.

use crate::engine::{ContainerSpec, Engine, EngineError, MountKind, MountSpec};
use crate::labels;
use crate::stack::StatefulService;

use super::attach::{self, PumpOptions, ResizeTarget};
use super::SessionError;

/// What the user asked of the one-off container.
#[derive(Debug, Clone, Default)]
pub struct OneOff {
    pub name: Option<String>,
    pub command: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// KEY=VALUE
    pub env: Vec<String>,
    pub tty: bool,
    pub rm: bool,
    pub with_data: bool,
    pub service_ports: bool,
}

/// Turns the service's container spec into the one-off's. `service_running`: the service's own
/// container is running (then `with_data` is refused for a stateful service).
pub fn prepare(
    project: &str,
    service: &str,
    mut spec: ContainerSpec,
    stateful: Option<&StatefulService>,
    service_running: bool,
    o: &OneOff,
    suffix: &str,
) -> Result<ContainerSpec, SessionError> {
    spec.name = o
        .name
        .clone()
        .unwrap_or_else(|| format!("{project}-{service}-run-{suffix}"));
    spec.labels
        .insert(labels::ONEOFF.to_string(), "True".to_string());
    spec.labels.remove(labels::CONTAINER_NUMBER);
    if !o.command.is_empty() {
        spec.cmd = Some(o.command.clone());
    }
    if let Some(ep) = &o.entrypoint {
        spec.entrypoint = Some(ep.clone());
    }
    if o.user.is_some() {
        spec.user = o.user.clone();
    }
    if o.workdir.is_some() {
        spec.working_dir = o.workdir.clone();
    }
    for kv in &o.env {
        let key = kv.split('=').next().unwrap_or_default();
        spec.env.retain(|e| e.split('=').next() != Some(key));
        spec.env.push(kv.clone());
    }
    if !o.service_ports {
        spec.ports.clear();
    }
    // Not reachable under the service's name: connections meant for the service must not land
    // on the one-off.
    for n in &mut spec.networks {
        n.aliases.clear();
    }
    spec.restart = None;
    spec.hostname = None;
    spec.tty = o.tty;
    // compose's `run` is interactive by default (`-i`): local stdin goes to the process, with or
    // without a TTY (`nodus run -T db psql -U app < dump.sql`), and its end closes the process'
    // stdin.
    spec.stdin_open = true;
    spec.stdin_once = true;
    if let Some(st) = stateful {
        let data = st.data_dir.trim_end_matches('/');
        if o.with_data {
            if service_running {
                return Err(SessionError::Refused(format!(
                    "service {service} is running: a one-off container on its data volume would run a second server on the same data directory; stop it first (`nodus stop {service}`)"
                )));
            }
        } else {
            spec.mounts
                .retain(|m| m.target.trim_end_matches('/') != data);
            spec.mounts.push(MountSpec {
                kind: MountKind::Tmpfs,
                source: String::new(),
                target: st.data_dir.clone(),
                read_only: false,
            });
        }
    }
    Ok(spec)
}

/// Creates, attaches, starts and waits for the one-off container; removes it (and the anonymous
/// volumes it created) with `rm`. Returns its exit code.
pub async fn run(engine: &dyn Engine, spec: &ContainerSpec, rm: bool) -> anyhow::Result<i64> {
    for n in &spec.networks {
        if engine.inspect_network(&n.network).await?.is_none() {
            return Err(SessionError::Refused(format!(
                "network {} does not exist yet; run `nodus up` first",
                n.network
            ))
            .into());
        }
    }
    if !engine.image_exists(&spec.image).await? {
        engine
            .pull_image(&spec.image, &|_| {})
            .await
            .map_err(|e| match e {
                e @ (EngineError::Unreachable { .. } | EngineError::ImageUnavailable { .. }) => e,
                e => EngineError::ImageUnavailable {
                    image: spec.image.clone(),
                    reason: e.to_string(),
                },
            })?;
    }
    let id = engine.create_container(spec).await?;
    let result = attach_and_wait(engine, spec, &id).await;
    if rm {
        let anonymous: Vec<String> = match engine.inspect_container(&id).await {
            Ok(info) => info
                .mounts
                .iter()
                .filter(|m| m.kind == MountKind::Volume)
                .filter(|m| {
                    !spec
                        .mounts
                        .iter()
                        .any(|s| s.kind == MountKind::Volume && s.source == m.name_or_source)
                })
                .map(|m| m.name_or_source.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        engine.remove_container(&id, true).await?;
        for v in anonymous {
            // Only unlabelled volumes no other container uses (the engine refuses those in use).
            if let Ok(Some(info)) = engine.inspect_volume(&v).await {
                if info.labels.is_empty() {
                    let _ = engine.remove_volume(&v).await;
                }
            }
        }
    }
    result
}

async fn attach_and_wait(
    engine: &dyn Engine,
    spec: &ContainerSpec,
    id: &str,
) -> anyhow::Result<i64> {
    for att in spec.networks.iter().skip(1) {
        engine
            .connect_network(&att.network, id, &att.aliases)
            .await?;
    }
    let attached = engine.attach_container(id).await?;
    engine.start_container(id).await?;
    let opts = PumpOptions {
        tty: spec.tty,
        stdin: spec.stdin_open,
    };
    if spec.tty {
        // Ctrl-C goes to the container through the raw terminal.
        attach::pump(engine, attached, ResizeTarget::Container(id), opts).await?;
    } else {
        tokio::select! {
            r = attach::pump(engine, attached, ResizeTarget::Container(id), opts) => r?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: stopping the one-off container");
                engine.stop_container(id, Some(10)).await?;
            }
        }
    }
    Ok(engine.wait_container(id).await?)
}

/// A short random suffix for one-off container names.
pub fn random_suffix() -> String {
    use sha2::Digest;
    let seed = format!(
        "{}-{:?}-{}",
        std::process::id(),
        std::time::SystemTime::now(),
        std::thread::current().name().unwrap_or("")
    );
    hex::encode(&sha2::Sha256::digest(seed.as_bytes())[..6])
}
