//! Starting a container whose published port is taken: instead of the engine's "Bind for
//! 127.0.0.1:6543 failed: port is already allocated (HTTP 500)", say which service, which port,
//! which container holds it when it is one of the engine's, and how to fix it.

use super::{Lifecycle, LifecycleError};
use crate::engine::{ContainerInfo, Labels, RunState};
use crate::labels;

/// The published port an engine error says is taken: (host ip, port).
pub fn taken_port(message: &str) -> Option<(String, u16)> {
    let m = message;
    if !(m.contains("port is already allocated") || m.contains("address already in use")) {
        return None;
    }
    // "Bind for 127.0.0.1:6543 failed: port is already allocated"
    // "listen tcp4 0.0.0.0:6543: bind: address already in use"
    let addr = m
        .split_once("Bind for ")
        .map(|(_, r)| r.split(' ').next().unwrap_or_default())
        .or_else(|| {
            m.split_once("listen tcp")
                .and_then(|(_, r)| r.split_once(' '))
                .map(|(_, r)| r.split(": ").next().unwrap_or_default())
        })?;
    let (ip, port) = addr.rsplit_once(':')?;
    let port = port
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((ip.trim_matches(['[', ']']).to_string(), port))
}

/// The fix for a taken port, naming the holder when it is a container.
pub fn port_taken_message(
    service: &str,
    ip: &str,
    port: u16,
    holder: Option<&ContainerInfo>,
) -> String {
    let addr = if ip.is_empty() || ip == "0.0.0.0" {
        format!("port {port}")
    } else {
        format!("{ip}:{port}")
    };
    match holder {
        Some(c) => {
            let whose = match (
                c.labels.get(labels::PROJECT),
                c.labels.get(labels::SERVICE),
            ) {
                (Some(p), Some(s)) => format!(" (project {p}, service {s})"),
                _ => String::new(),
            };
            let stop = match c.labels.get(labels::PROJECT) {
                Some(p) if c.labels.contains_key(labels::MANAGED) => {
                    format!("`nodus -p {p} down` or `docker stop {}`", c.name)
                }
                Some(p) => format!("`docker compose -p {p} down` or `docker stop {}`", c.name),
                None => format!("`docker stop {}`", c.name),
            };
            format!(
                "service {service} cannot publish {addr}: container {}{whose} already holds it. Stop that container ({stop}), or publish {service} on another host port in the stack file (`ports:`)",
                c.name
            )
        }
        None => format!(
            "service {service} cannot publish {addr}: a program on the engine's host (not a container) already listens there. Find it with `ss -ltnp 'sport = :{port}'` and stop it, or publish {service} on another host port in the stack file (`ports:`)"
        ),
    }
}

impl Lifecycle<'_> {
    /// Starts `service`'s container; a taken published port becomes [`LifecycleError::PortTaken`].
    pub(super) async fn start_service(
        &self,
        service: &str,
        id: &str,
    ) -> Result<(), LifecycleError> {
        match self.engine.start_container(id).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let Some((ip, port)) = taken_port(&e.to_string()) else {
                    return Err(e.into());
                };
                let holder = self.port_holder(id, port).await;
                Err(LifecycleError::PortTaken {
                    service: service.to_string(),
                    port,
                    message: port_taken_message(service, &ip, port, holder.as_ref()),
                    engine: e,
                })
            }
        }
    }

    /// A running container other than `own` that publishes host port `port`.
    async fn port_holder(&self, own: &str, port: u16) -> Option<ContainerInfo> {
        let all = self.engine.list_containers(&Labels::new()).await.ok()?;
        all.into_iter().find(|c| {
            c.id != own
                && c.state == RunState::Running
                && c.ports.iter().any(|p| p.host_port == port)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_messages_give_the_port() {
        assert_eq!(
            taken_port("Bind for 127.0.0.1:6543 failed: port is already allocated (HTTP 500)"),
            Some(("127.0.0.1".to_string(), 6543))
        );
        assert_eq!(
            taken_port("driver failed programming external connectivity on endpoint x: Error starting userland proxy: listen tcp4 0.0.0.0:6543: bind: address already in use"),
            Some(("0.0.0.0".to_string(), 6543))
        );
        assert_eq!(taken_port("no such image"), None);
    }
}
