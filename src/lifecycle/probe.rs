//! Readiness from the service itself, not from the engine's health status.
//!
//! The engine runs a health check first only after its `interval` (API 1.41 has no
//! `start_interval`), so a postgres that accepts connections after one second is reported healthy
//! after two or more. While nodus waits for a service it asks the service directly, every
//! [`PROBE_MIN`]..[`PROBE_MAX`]:
//!
//! - postgres: a connection and `SELECT 1` over the published loopback port; `pg_isready -h
//!   127.0.0.1` through exec when the port is not published here (remote engine). Both reach the
//!   real server only: the official image's init-time server listens on its socket alone.
//! - redis: `PING` over the published loopback port (`PONG`, or an `NOAUTH` answer: the server
//!   answers); `redis-cli ping` through exec when that does not answer as redis.
//! - other services with a health check in the stack: the health command itself, through exec,
//!   as the engine would run it (with its timeout).
//!
//! A probe that cannot tell (wrong password, no `pg_isready`/`redis-cli` in the image, exec
//! refused) is turned off for the rest of the wait: the engine's health status decides, as before.
//! The engine's status is always read too (an exit or `unhealthy` ends the wait at once, and
//! `healthy` is ready whatever the probe says). The health check stays in the generated compose
//! file.

use std::time::Duration;

use crate::engine::{ContainerInfo, Engine, HealthSpec};
use crate::guard::pg;
use crate::stack::{Service, ServiceKind, StatefulService};

/// First delay between polls of a waiting service.
pub(super) const PROBE_MIN: Duration = Duration::from_millis(25);
/// Bound of the back-off: a service that became ready is seen within this much.
pub(super) const PROBE_MAX: Duration = Duration::from_millis(50);
/// How long a redis probe relies on its published port alone (see [`Probe::Redis`]).
pub(super) const REDIS_TCP_ONLY: Duration = Duration::from_secs(1);
/// A probe taking longer than this counts as "not ready yet" (the engine is read again).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How to ask one service whether it is ready.
#[derive(Debug, Clone)]
pub(super) enum Probe {
    Postgres,
    /// `PING` over the published port; with `tcp_only`, a network failure is "not yet" (the
    /// engine's proxy accepts and closes while redis starts) without an exec; after
    /// [`REDIS_TCP_ONLY`] of that, `redis-cli ping` through exec is asked too.
    Redis {
        tcp_only: bool,
    },
    /// The health check's test (`CMD ...` / `CMD-SHELL ...`) run through exec.
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
    /// Only the engine's status.
    None,
}

/// What a probe said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    Ready,
    NotYet,
    /// The probe cannot tell (credentials, tool missing...): use the engine's status only.
    Unusable(String),
}

/// The probe of a service: by its kind when nodus knows it, else its health check's command.
pub(super) fn probe_for(service: &Service, stateful: Option<&StatefulService>) -> Probe {
    match stateful.map(|s| s.kind) {
        Some(ServiceKind::Postgres) => return Probe::Postgres,
        Some(ServiceKind::Redis) => return Probe::Redis { tcp_only: true },
        _ => {}
    }
    let Some(h) = service
        .healthcheck
        .as_ref()
        .and_then(|h| super::spec::health_spec(h).ok())
    else {
        return Probe::None;
    };
    command_of(&h).map_or(Probe::None, |argv| Probe::Command {
        argv,
        timeout: if h.timeout_ns > 0 {
            Duration::from_nanos(h.timeout_ns as u64).min(PROBE_TIMEOUT)
        } else {
            PROBE_TIMEOUT
        },
    })
}

/// The command line of a health check's test (None: inherited from the image, or disabled).
pub(super) fn command_of(h: &HealthSpec) -> Option<Vec<String>> {
    match h.test.first().map(String::as_str) {
        Some("CMD") if h.test.len() > 1 => Some(h.test[1..].to_vec()),
        Some("CMD-SHELL") if h.test.len() > 1 => {
            Some(vec!["/bin/sh".into(), "-c".into(), h.test[1..].join(" ")])
        }
        _ => None,
    }
}

/// Asks the service once.
pub(super) async fn ask(
    engine: &dyn Engine,
    probe: &Probe,
    service: &str,
    c: &ContainerInfo,
) -> Answer {
    let fut = async {
        match probe {
            Probe::None => Answer::Unusable("no probe".into()),
            Probe::Postgres => postgres(engine, service, c).await,
            Probe::Redis { tcp_only } => redis(engine, c, *tcp_only).await,
            Probe::Command { argv, .. } => command(engine, c, argv).await,
        }
    };
    let limit = match probe {
        Probe::Command { timeout, .. } => *timeout,
        _ => PROBE_TIMEOUT,
    };
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Answer::NotYet)
}

async fn postgres(engine: &dyn Engine, service: &str, c: &ContainerInfo) -> Answer {
    let target = match pg::target_for(engine, service, c).await {
        Ok(t) => t,
        Err(e) => return Answer::Unusable(e.message),
    };
    match &target.endpoint {
        pg::PgEndpoint::Tcp { .. } => {
            let mut last = None;
            for db in [target.auth.default_db.as_str(), "postgres"] {
                // One attempt (no retry): the poll loop is the retry.
                match pg::connect(engine, &target, db, Duration::ZERO).await {
                    Ok(s) => {
                        return match s.execute("SELECT 1").await {
                            Ok(()) => Answer::Ready,
                            Err(e) if e.transient => Answer::NotYet,
                            Err(e) => Answer::Unusable(e.message),
                        }
                    }
                    Err(e) if e.is_missing_database() => last = Some(e),
                    Err(e) if e.transient => return Answer::NotYet,
                    Err(e) => return Answer::Unusable(e.message),
                }
            }
            Answer::Unusable(last.map(|e| e.message).unwrap_or_default())
        }
        pg::PgEndpoint::Exec => {
            let cmd: Vec<String> = [
                "pg_isready",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                "5432",
                "-U",
                &target.auth.user,
                "-d",
                &target.auth.default_db,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            match engine.exec(&c.id, &cmd, &[], None).await {
                Ok(o) if o.exit_code == 0 => Answer::Ready,
                // 1: rejecting (starting up), 2: no response.
                Ok(o) if o.exit_code == 1 || o.exit_code == 2 => Answer::NotYet,
                Ok(o) => Answer::Unusable(format!("pg_isready exited with {}", o.exit_code)),
                Err(e) => Answer::Unusable(e.to_string()),
            }
        }
    }
}

async fn redis(engine: &dyn Engine, c: &ContainerInfo, tcp_only: bool) -> Answer {
    use crate::guard::redis::{self as r, Reply};
    // PING over the published port; an answer that is not PONG/NOAUTH/LOADING (protected mode,
    // not redis), or a port not published here, asks redis-cli in the container.
    if let Some((host, port)) = r::endpoint(engine, c) {
        match r::run(&host, port, None, &[&["PING"]]).await {
            Ok(replies) => match replies.first() {
                Some(Reply::Status(s)) if s == "PONG" => return Answer::Ready,
                Some(Reply::Error(e)) if e.starts_with("NOAUTH") => return Answer::Ready,
                Some(Reply::Error(e)) if e.starts_with("LOADING") => return Answer::NotYet,
                _ => {}
            },
            Err(_) if tcp_only => return Answer::NotYet,
            Err(_) => {}
        }
    }
    let cmd = vec!["redis-cli".to_string(), "ping".to_string()];
    match engine.exec(&c.id, &cmd, &[], None).await {
        Ok(o) => {
            let out = String::from_utf8_lossy(&o.stdout);
            let out = out.trim();
            if out == "PONG" || out.starts_with("NOAUTH") {
                Answer::Ready
            } else if o.exit_code == 126 || o.exit_code == 127 {
                Answer::Unusable("redis-cli is not in the image".into())
            } else {
                // LOADING, connection refused...
                Answer::NotYet
            }
        }
        Err(e) => Answer::Unusable(e.to_string()),
    }
}

async fn command(engine: &dyn Engine, c: &ContainerInfo, argv: &[String]) -> Answer {
    match engine.exec(&c.id, argv, &[], None).await {
        Ok(o) if o.exit_code == 0 => Answer::Ready,
        // Like the engine: 126/127 mean the command cannot run at all.
        Ok(o) if o.exit_code == 126 || o.exit_code == 127 => {
            Answer::Unusable(format!("health command exited with {}", o.exit_code))
        }
        Ok(_) => Answer::NotYet,
        Err(e) => Answer::Unusable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(test: &[&str]) -> HealthSpec {
        HealthSpec {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval_ns: 0,
            timeout_ns: 0,
            retries: 0,
            start_period_ns: 0,
        }
    }

    #[test]
    fn health_tests_become_command_lines() {
        assert_eq!(
            command_of(&hs(&["CMD", "redis-cli", "ping"])),
            Some(vec!["redis-cli".to_string(), "ping".to_string()])
        );
        assert_eq!(
            command_of(&hs(&["CMD-SHELL", "curl -f localhost || exit 1"])),
            Some(vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                "curl -f localhost || exit 1".to_string()
            ])
        );
        assert_eq!(command_of(&hs(&["NONE"])), None);
        assert_eq!(command_of(&hs(&[])), None);
    }
}
