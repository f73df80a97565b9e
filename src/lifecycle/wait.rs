//! Waiting for containers: readiness verdicts, polling, spinners, failure logs.

use std::time::{Duration, Instant};

use super::probe::{self, Answer, Probe};
use super::{Lifecycle, LifecycleError};
use crate::engine::{ContainerInfo, Health, RunState};
use crate::output::Ui;

/// What a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// Healthy when the container has a healthcheck, else running (or exited 0: a one-shot).
    Ready,
    /// `service_started`: running (or exited 0).
    Started,
    /// `service_healthy`.
    Healthy,
    /// `service_completed_successfully`: exited 0.
    Completed,
}

impl Want {
    fn describe(self) -> &'static str {
        match self {
            Want::Ready => "ready",
            Want::Started => "started",
            Want::Healthy => "healthy",
            Want::Completed => "completed",
        }
    }
}

enum Verdict {
    Done,
    /// `service_healthy` on a container without a healthcheck: accepted with a warning.
    NoHealthcheck,
    Wait,
    Unhealthy,
    Exited(i64),
}

fn judge(want: Want, info: &ContainerInfo) -> Verdict {
    match info.state {
        RunState::Running => match (want, info.health) {
            (Want::Completed, _) => Verdict::Wait,
            (Want::Started, _) => Verdict::Done,
            (_, Health::Starting) => Verdict::Wait,
            (_, Health::Unhealthy) => Verdict::Unhealthy,
            (_, Health::Healthy) => Verdict::Done,
            (Want::Ready, Health::None) => Verdict::Done,
            (Want::Healthy, Health::None) => Verdict::NoHealthcheck,
        },
        RunState::Exited | RunState::Dead => match (want, info.exit_code.unwrap_or(-1)) {
            (Want::Healthy, code) => Verdict::Exited(code),
            (_, 0) => Verdict::Done,
            (_, code) => Verdict::Exited(code),
        },
        _ => Verdict::Wait,
    }
}

/// Clears a spinner however the wait ends.
pub(super) struct Spin(pub(super) indicatif::ProgressBar);
impl Drop for Spin {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A spinner that appears on the first `show()` (a service ready at once shows none) and is
/// cleared when dropped; its message can change while it spins.
struct Spinner<'a> {
    ui: &'a Ui,
    msg: std::sync::Mutex<String>,
    pb: std::sync::OnceLock<indicatif::ProgressBar>,
}

impl<'a> Spinner<'a> {
    fn new(ui: &'a Ui, msg: String) -> Self {
        Spinner {
            ui,
            msg: std::sync::Mutex::new(msg),
            pb: std::sync::OnceLock::new(),
        }
    }
    fn show(&self) {
        self.pb.get_or_init(|| {
            let msg = self.msg.lock().unwrap_or_else(|e| e.into_inner()).clone();
            self.ui.spinner(msg)
        });
    }
    fn set(&self, msg: String) {
        if let Some(pb) = self.pb.get() {
            pb.set_message(msg.clone());
        }
        *self.msg.lock().unwrap_or_else(|e| e.into_inner()) = msg;
    }
}

impl Drop for Spinner<'_> {
    fn drop(&mut self) {
        if let Some(pb) = self.pb.get() {
            pb.finish_and_clear();
        }
    }
}

const FAILURE_LOG_LINES: usize = 30;

impl<'a> Lifecycle<'a> {
    /// Waits until the container of `service` is what `want` asks, up to `timeout`; fails fast
    /// when it exits or becomes unhealthy. Shows a spinner while it waits.
    pub(super) async fn wait_until(
        &self,
        service: &str,
        id: &str,
        want: Want,
        timeout: Duration,
    ) -> Result<ContainerInfo, LifecycleError> {
        let spin = Spinner::new(
            self.ui,
            format!("{service}: waiting until {}", want.describe()),
        );
        self.poll_until(service, id, want, timeout, Some(&spin))
            .await
    }

    /// Waits for the services of a wave together, (service, container ID, _, want) each; one
    /// spinner names those still pending. The first failure ends the wait and is returned.
    pub(super) async fn wait_all(
        &self,
        wave: &[(String, String, &'static str, Want)],
        timeout: Duration,
    ) -> Result<Vec<ContainerInfo>, LifecycleError> {
        if let [(service, id, _, want)] = wave {
            return Ok(vec![self.wait_until(service, id, *want, timeout).await?]);
        }
        let names: Vec<&str> = wave.iter().map(|(n, ..)| n.as_str()).collect();
        let spin = Spinner::new(
            self.ui,
            format!("{}: waiting until ready", names.join(", ")),
        );
        let pending = std::sync::Mutex::new(names.clone());
        futures_util::future::try_join_all(wave.iter().map(|(service, id, _, want)| {
            let spin = &spin;
            let pending = &pending;
            async move {
                let info = self
                    .poll_until(service, id, *want, timeout, Some(spin))
                    .await?;
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                p.retain(|n| n != service);
                if !p.is_empty() {
                    spin.set(format!("{}: waiting until ready", p.join(", ")));
                }
                Ok(info)
            }
        }))
        .await
    }

    /// Polls the container until `want` (see [`Lifecycle::wait_until`]); `spin` is shown once
    /// the first poll says to wait.
    async fn poll_until(
        &self,
        service: &str,
        id: &str,
        want: Want,
        timeout: Duration,
        spin: Option<&Spinner<'_>>,
    ) -> Result<ContainerInfo, LifecycleError> {
        let started = Instant::now();
        let mut delay = probe::PROBE_MIN;
        // Ready/healthy: the service is asked itself (see probe.rs); the engine's status is read
        // every time too.
        let mut probe = match want {
            Want::Ready | Want::Healthy => self.probe_of(service),
            Want::Started | Want::Completed => Probe::None,
        };
        loop {
            let info = self.engine.inspect_container(id).await?;
            let mut verdict = judge(want, &info);
            if matches!(verdict, Verdict::Wait)
                && info.state == RunState::Running
                && !matches!(probe, Probe::None)
            {
                match probe::ask(self.engine, &probe, service, &info).await {
                    Answer::Ready => {
                        tracing::debug!("{service}: answered the readiness probe");
                        verdict = Verdict::Done;
                    }
                    Answer::NotYet => {
                        if matches!(probe, Probe::Redis { tcp_only: true })
                            && started.elapsed() >= probe::REDIS_TCP_ONLY
                        {
                            probe = Probe::Redis { tcp_only: false };
                        }
                    }
                    Answer::Unusable(why) => {
                        tracing::debug!(
                            "{service}: readiness probe unusable ({why}); waiting for the engine's health status"
                        );
                        probe = Probe::None;
                    }
                }
            }
            match verdict {
                Verdict::Done => return Ok(info),
                Verdict::NoHealthcheck => {
                    self.ui.warn(format!(
                        "a service waits for {service} to be healthy, but {service} has no healthcheck; going on since it is running"
                    ));
                    return Ok(info);
                }
                Verdict::Unhealthy => {
                    return Err(LifecycleError::NotHealthy {
                        service: service.to_string(),
                        container: info.name.clone(),
                        waited_secs: started.elapsed().as_secs(),
                        logs: self.tail_logs(id).await,
                    })
                }
                Verdict::Exited(code) => {
                    return Err(LifecycleError::Exited {
                        service: service.to_string(),
                        container: info.name.clone(),
                        exit_code: code,
                        logs: self.tail_logs(id).await,
                    })
                }
                Verdict::Wait => {}
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(LifecycleError::NotHealthy {
                    service: service.to_string(),
                    container: info.name.clone(),
                    waited_secs: timeout.as_secs(),
                    logs: self.tail_logs(id).await,
                });
            }
            if let Some(s) = spin {
                s.show();
            }
            tokio::time::sleep(delay.min(timeout - elapsed)).await;
            delay = (delay * 2).min(probe::PROBE_MAX);
        }
    }

    /// How to ask `service` whether it is ready (see probe.rs).
    fn probe_of(&self, service: &str) -> Probe {
        match self.compose().services.get(service) {
            Some(svc) => probe::probe_for(svc, self.stateful(service).as_ref()),
            None => Probe::None,
        }
    }

    async fn tail_logs(&self, id: &str) -> String {
        match self.engine.logs(id, FAILURE_LOG_LINES).await {
            Ok(l) if l.trim().is_empty() => "(no output)".to_string(),
            Ok(l) => l.trim_end().to_string(),
            Err(e) => format!("(logs unavailable: {e})"),
        }
    }
}
