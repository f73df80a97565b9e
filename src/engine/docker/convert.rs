//! Pure conversions between nodus's engine types and bollard's models (no I/O).

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings,
    HealthConfig, HealthStatusEnum, HostConfig, Mount, MountType, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum, Volume,
};

use super::STDERR_TAIL;
use crate::engine::*;

pub(super) fn label_filters(labels: &Labels) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    if !labels.is_empty() {
        filters.insert(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
    }
    filters
}

pub(super) fn to_hash(labels: &Labels) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn to_labels(labels: Option<HashMap<String, String>>) -> Labels {
    labels.unwrap_or_default().into_iter().collect()
}

/// Docker reports "0001-01-01T00:00:00Z" for "never".
pub(super) fn timestamp(s: Option<String>) -> Option<String> {
    s.filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}

pub(super) fn run_state(s: Option<ContainerStateStatusEnum>) -> RunState {
    match s {
        Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::STOPPING) => {
            RunState::Running
        }
        Some(ContainerStateStatusEnum::PAUSED) => RunState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => RunState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => RunState::Removing,
        Some(ContainerStateStatusEnum::EXITED) => RunState::Exited,
        Some(ContainerStateStatusEnum::DEAD) => RunState::Dead,
        _ => RunState::Unknown,
    }
}

pub(super) fn health(s: Option<HealthStatusEnum>) -> Health {
    match s {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    }
}

pub(super) fn container_info(r: ContainerInspectResponse) -> ContainerInfo {
    let config = r.config.unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let settings = r.network_settings.unwrap_or_default();
    let run = run_state(state.status);

    let mut ports = Vec::new();
    for (key, bindings) in settings.ports.unwrap_or_default() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        for b in bindings.unwrap_or_default() {
            let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            ports.push(PublishedPort {
                container_port,
                protocol: proto.to_string(),
                host_ip: b.host_ip.unwrap_or_default(),
                host_port,
            });
        }
    }
    // Stable order: by port, IPv4 before IPv6 (so `published()` gives the IPv4 binding).
    ports.sort_by(|a, b| {
        (
            a.container_port,
            &a.protocol,
            a.host_ip.contains(':'),
            &a.host_ip,
            a.host_port,
        )
            .cmp(&(
                b.container_port,
                &b.protocol,
                b.host_ip.contains(':'),
                &b.host_ip,
                b.host_port,
            ))
    });

    let mounts = r
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let target = m.destination.unwrap_or_default();
            match m.typ.as_deref() {
                Some("volume") => Some(MountInfo {
                    kind: MountKind::Volume,
                    name_or_source: m.name.unwrap_or_default(),
                    target,
                }),
                Some("bind") => Some(MountInfo {
                    kind: MountKind::Bind,
                    name_or_source: m.source.unwrap_or_default(),
                    target,
                }),
                Some("tmpfs") => Some(MountInfo {
                    kind: MountKind::Tmpfs,
                    name_or_source: String::new(),
                    target,
                }),
                _ => None,
            }
        })
        .collect();

    let attached = settings.networks.unwrap_or_default();
    let network_ids = attached
        .iter()
        .filter_map(|(name, e)| {
            let id = e.network_id.as_deref().filter(|id| !id.is_empty())?;
            Some((name.clone(), id.to_string()))
        })
        .collect();
    let mut networks: Vec<String> = attached.into_keys().collect();
    networks.sort();

    ContainerInfo {
        id: r.id.unwrap_or_default(),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.or(r.image).unwrap_or_default(),
        labels: to_labels(config.labels),
        state: run,
        health: health(state.health.and_then(|h| h.status)),
        exit_code: matches!(run, RunState::Exited | RunState::Dead)
            .then_some(state.exit_code)
            .flatten(),
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at: timestamp(state.started_at),
        finished_at: timestamp(state.finished_at),
        ports,
        mounts,
        env: config.env.unwrap_or_default(),
        stop_signal: config.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout_secs: config.stop_timeout,
        networks,
        network_ids,
    }
}

pub(super) fn volume_info(v: Volume) -> VolumeInfo {
    VolumeInfo {
        name: v.name,
        labels: v.labels.into_iter().collect(),
        created_at: v.created_at.filter(|t| !t.is_empty()),
        mountpoint: v.mountpoint,
        driver: v.driver,
    }
}

pub(super) fn restart_policy(s: &str) -> Result<RestartPolicy, String> {
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (n, Some(c)),
        None => (s, None),
    };
    let name = match name {
        "" | "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        other => return Err(format!("unknown restart policy {other:?}")),
    };
    let maximum_retry_count = match count {
        Some(c) if name == RestartPolicyNameEnum::ON_FAILURE => Some(
            c.parse::<i64>()
                .map_err(|_| format!("bad retry count in restart policy {s:?}"))?,
        ),
        Some(_) => return Err(format!("only on-failure takes a retry count: {s:?}")),
        None => None,
    };
    Ok(RestartPolicy {
        name: Some(name),
        maximum_retry_count,
    })
}

/// The create body for a [`ContainerSpec`].
pub(super) fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, String> {
    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: match m.kind {
                MountKind::Tmpfs => None,
                _ => Some(m.source.clone()).filter(|s| !s.is_empty()),
            },
            typ: Some(match m.kind {
                MountKind::Volume => MountType::VOLUME,
                MountKind::Bind => MountType::BIND,
                MountKind::Tmpfs => MountType::TMPFS,
            }),
            read_only: m.read_only.then_some(true),
            ..Default::default()
        })
        .collect();
    if let Some(m) = spec
        .mounts
        .iter()
        .find(|m| m.kind == MountKind::Bind && m.source.is_empty())
    {
        return Err(format!("bind mount on {} has no source path", m.target));
    }

    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed: Vec<String> = Vec::new();
    for p in &spec.ports {
        let proto = if p.protocol.is_empty() {
            "tcp"
        } else {
            p.protocol.as_str()
        };
        let key = format!("{}/{}", p.container_port, proto);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()).filter(|s| !s.is_empty()),
                host_port: Some(p.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }

    let tmpfs: HashMap<String, String> = spec
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((path, opts)) => (path.to_string(), opts.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();

    let restart = spec.restart.as_deref().map(restart_policy).transpose()?;

    let healthcheck = spec.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()).filter(|t| !t.is_empty()),
        interval: (h.interval_ns > 0).then_some(h.interval_ns),
        timeout: (h.timeout_ns > 0).then_some(h.timeout_ns),
        retries: (h.retries > 0).then_some(h.retries),
        start_period: (h.start_period_ns > 0).then_some(h.start_period_ns),
        start_interval: None,
    });

    let first_network = spec.networks.first();
    let networking_config = first_network.map(|n| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            n.network.clone(),
            EndpointSettings {
                aliases: Some(n.aliases.clone()).filter(|a| !a.is_empty()),
                ..Default::default()
            },
        )])),
    });

    let host_config = HostConfig {
        mounts: Some(mounts).filter(|m| !m.is_empty()),
        port_bindings: Some(port_bindings).filter(|p| !p.is_empty()),
        restart_policy: restart,
        extra_hosts: Some(spec.extra_hosts.clone()).filter(|h| !h.is_empty()),
        tmpfs: Some(tmpfs).filter(|t| !t.is_empty()),
        shm_size: spec.shm_size,
        privileged: spec.privileged.then_some(true),
        cap_add: Some(spec.cap_add.clone()).filter(|c| !c.is_empty()),
        init: spec.init,
        network_mode: first_network.map(|n| n.network.clone()),
        ..Default::default()
    };

    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: spec.hostname.clone(),
        env: Some(spec.env.clone()).filter(|e| !e.is_empty()),
        cmd: spec.cmd.clone(),
        entrypoint: spec.entrypoint.clone(),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        labels: Some(to_hash(&spec.labels)).filter(|l| !l.is_empty()),
        exposed_ports: Some(exposed).filter(|e| !e.is_empty()),
        healthcheck,
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec.stop_timeout_secs,
        tty: spec.tty.then_some(true),
        open_stdin: spec.stdin_open.then_some(true),
        stdin_once: spec.stdin_once.then_some(true),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    })
}

/// Splits an image reference into (name, tag) for a pull, so that a reference without a tag pulls
/// `latest` instead of every tag. Digests stay in the name.
pub(super) fn split_image_ref(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

pub(super) fn keep_tail(buf: &mut Vec<u8>, more: &[u8]) {
    buf.extend_from_slice(more);
    if buf.len() > STDERR_TAIL {
        let cut = buf.len() - STDERR_TAIL;
        buf.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        assert_eq!(split_image_ref("postgres"), ("postgres", "latest"));
        assert_eq!(split_image_ref("postgres:15"), ("postgres", "15"));
        assert_eq!(
            split_image_ref("localhost:5000/pg"),
            ("localhost:5000/pg", "latest")
        );
        assert_eq!(
            split_image_ref("localhost:5000/pg:16-alpine"),
            ("localhost:5000/pg", "16-alpine")
        );
        assert_eq!(split_image_ref("pg@sha256:abcd"), ("pg@sha256:abcd", ""));
    }

    #[test]
    fn restart_policies() {
        assert_eq!(
            restart_policy("always").unwrap().name,
            Some(RestartPolicyNameEnum::ALWAYS)
        );
        assert_eq!(
            restart_policy("no").unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        let p = restart_policy("on-failure:3").unwrap();
        assert_eq!(p.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(p.maximum_retry_count, Some(3));
        assert!(restart_policy("always:3").is_err());
        assert!(restart_policy("sometimes").is_err());
    }

    #[test]
    fn create_body_maps_the_spec() {
        let spec = ContainerSpec {
            name: "p-db-1".into(),
            image: "nodus/postgres-standin:15".into(),
            env: vec!["POSTGRES_PASSWORD=x".into()],
            mounts: vec![
                MountSpec {
                    kind: MountKind::Volume,
                    source: "p_data".into(),
                    target: "/var/lib/postgresql/data".into(),
                    read_only: false,
                },
                MountSpec {
                    kind: MountKind::Volume,
                    source: String::new(),
                    target: "/anon".into(),
                    read_only: false,
                },
                MountSpec {
                    kind: MountKind::Bind,
                    source: "/host/init".into(),
                    target: "/docker-entrypoint-initdb.d".into(),
                    read_only: true,
                },
            ],
            ports: vec![
                PortSpec {
                    container_port: 5432,
                    protocol: "tcp".into(),
                    host_ip: "127.0.0.1".into(),
                    host_port: None,
                },
                PortSpec {
                    container_port: 5432,
                    protocol: String::new(),
                    host_ip: String::new(),
                    host_port: Some(15432),
                },
            ],
            networks: vec![NetworkAttachment {
                network: "p_default".into(),
                aliases: vec!["db".into()],
            }],
            stop_signal: Some("SIGINT".into()),
            stop_timeout_secs: Some(60),
            tmpfs: vec!["/run:size=64m".into()],
            restart: Some("unless-stopped".into()),
            ..Default::default()
        };
        let body = create_body(&spec).unwrap();
        assert_eq!(body.exposed_ports, Some(vec!["5432/tcp".to_string()]));
        assert_eq!(body.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(body.stop_timeout, Some(60));
        let hc = body.host_config.unwrap();
        let bindings = hc.port_bindings.unwrap()["5432/tcp"].clone().unwrap();
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(bindings[0].host_port.as_deref(), Some(""));
        assert_eq!(bindings[1].host_port.as_deref(), Some("15432"));
        let mounts = hc.mounts.unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("p_data"));
        assert_eq!(mounts[1].source, None);
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[2].read_only, Some(true));
        assert_eq!(hc.network_mode.as_deref(), Some("p_default"));
        assert_eq!(hc.tmpfs.unwrap()["/run"], "size=64m");
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let eps = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(eps["p_default"].aliases, Some(vec!["db".to_string()]));
    }

    #[test]
    fn bind_without_source_is_rejected() {
        let spec = ContainerSpec {
            mounts: vec![MountSpec {
                kind: MountKind::Bind,
                source: String::new(),
                target: "/x".into(),
                read_only: false,
            }],
            ..Default::default()
        };
        assert!(create_body(&spec).is_err());
    }

    #[test]
    fn stderr_tail_is_bounded() {
        let mut buf = Vec::new();
        keep_tail(&mut buf, &vec![b'a'; STDERR_TAIL]);
        keep_tail(&mut buf, b"end");
        assert_eq!(buf.len(), STDERR_TAIL);
        assert!(buf.ends_with(b"aend"));
    }
}
