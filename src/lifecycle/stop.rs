//! Stopping services: stop, down, stop evidence (clean postgres shutdown), volume removal.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;

use super::spec;
use super::wait::Spin;
use super::{
    by_service, is_running, DownOptions, Hooks, Lifecycle, LifecycleError, Release, Report,
    RunningService, StopEvidence, StoppedService, Transition,
};
use crate::engine::{ContainerInfo, EngineError, MountKind};
use crate::labels;
use crate::stack::{plan, ServiceKind};

const POSTGRES_SHUTDOWN: &str = "database system is shut down";
const POSTGRES_STARTUP: [&str; 2] = [
    "database system is ready to accept connections",
    "starting PostgreSQL",
];
const SHUTDOWN_LOG_LINES: usize = 50;

/// Whether the postgres log (tail) shows a clean shutdown after the last start; with the line.
pub fn postgres_shutdown(logs: &str) -> (bool, Option<String>) {
    let mut last_stop: Option<(usize, &str)> = None;
    let mut last_start: Option<usize> = None;
    for (i, line) in logs.lines().enumerate() {
        if line.contains(POSTGRES_SHUTDOWN) {
            last_stop = Some((i, line));
        } else if POSTGRES_STARTUP.iter().any(|m| line.contains(m)) {
            last_start = Some(i);
        }
    }
    match last_stop {
        Some((i, line)) if last_start.is_none_or(|s| s < i) => {
            (true, Some(line.trim().to_string()))
        }
        _ => (false, None),
    }
}

/// Not killed and, for postgres, its log shows the clean shutdown: it may start again before
/// the start waves (which read a killed one's last shutdown first).
fn stopped_cleanly(ev: &StopEvidence) -> bool {
    !ev.killed && ev.clean_shutdown != Some(false)
}

fn secs_ceil(d: Duration) -> i64 {
    d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0)
}

/// The hooks' `after_stop` (snapshots), when something stopped; `release` learns of the
/// services the hooks no longer hold stopped ([`Release::none`] outside a restart).
async fn after_stop(
    transition: Transition,
    hooks: &mut dyn Hooks,
    stopped: &[StoppedService],
    release: &Release,
) -> Result<(), LifecycleError> {
    if stopped.is_empty() {
        return Ok(());
    }
    let _t = crate::timing::span("snapshot");
    hooks
        .after_stop_releasing(transition, stopped, release)
        .await
        .map_err(LifecycleError::hook)
}

impl<'a> Lifecycle<'a> {
    /// Stops the running containers among `targets` (given in stop order), collecting evidence;
    /// calls `before_stop`/`after_stop` around it when `with_hooks`.
    pub(super) async fn stop_services(
        &self,
        targets: &[(String, ContainerInfo)],
        timeout: Option<Duration>,
        transition: Transition,
        hooks: &mut dyn Hooks,
        with_hooks: bool,
        report: &mut Report,
    ) -> Result<Vec<StoppedService>, LifecycleError> {
        let stopped = self
            .stop_without_after(targets, timeout, transition, hooks, with_hooks, report)
            .await?;
        if with_hooks {
            after_stop(transition, hooks, &stopped, &Release::none()).await?;
        }
        Ok(stopped)
    }

    /// [`Lifecycle::stop_services`] up to (not including) `after_stop`: `before_stop`, then the
    /// stops in waves like compose — dependents before their dependencies, services independent
    /// of each other together.
    pub(super) async fn stop_without_after(
        &self,
        targets: &[(String, ContainerInfo)],
        timeout: Option<Duration>,
        transition: Transition,
        hooks: &mut dyn Hooks,
        with_hooks: bool,
        report: &mut Report,
    ) -> Result<Vec<StoppedService>, LifecycleError> {
        let none = BTreeSet::new();
        self.stop_waves(
            targets, timeout, transition, hooks, with_hooks, &none, report,
        )
        .await
        .map(|(stopped, _)| stopped)
    }

    /// A restart's stops ([`Lifecycle::stop_services`] with its hooks), with early starts: each
    /// service of `first` (the first start wave: it depends on nothing) that stopped cleanly
    /// (postgres: its log shows the clean shutdown; nothing killed) starts again at once — as
    /// soon as its own stop ended when no hook holds it ([`Hooks::holds_stopped`]), else as soon
    /// as the hooks release it ([`Hooks::after_stop_releasing`]: its snapshot ended). Returns the
    /// services started.
    pub(super) async fn stop_then_start(
        &self,
        targets: &[(String, ContainerInfo)],
        transition: Transition,
        hooks: &mut dyn Hooks,
        first: &BTreeSet<String>,
        report: &mut Report,
    ) -> Result<BTreeSet<String>, LifecycleError> {
        let (early, held): (BTreeSet<String>, BTreeSet<String>) = first
            .iter()
            .cloned()
            .partition(|s| !hooks.holds_stopped(transition, s));
        let (stopped, mut started) = self
            .stop_waves(targets, None, transition, hooks, true, &early, report)
            .await?;
        if stopped.is_empty() {
            return Ok(started);
        }
        let startable: BTreeMap<&str, &StoppedService> = stopped
            .iter()
            .filter(|s| held.contains(&s.service) && stopped_cleanly(&s.evidence))
            .map(|s| (s.service.as_str(), s))
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let release = Release::new(tx);
        let stopped = &stopped;
        let mut seen = BTreeSet::new();
        // Each released service starts at once, while others are still starting; the stream
        // of releases ends when the hooks are done (the last `Release` is dropped).
        let starts = futures_util::stream::poll_fn(|cx| rx.poll_recv(cx))
            .filter_map(|service: String| {
                let id = startable
                    .get(service.as_str())
                    .filter(|_| seen.insert(service.clone()))
                    .map(|s| (service, s.container.id.clone()));
                std::future::ready(id)
            })
            .map(|(service, id)| async move {
                let _t = crate::timing::span("start");
                self.start_service(&service, &id).await.map(|()| service)
            })
            .buffer_unordered(startable.len().max(1))
            .collect::<Vec<_>>();
        let (done, starts) = futures_util::future::join(
            async move {
                let r = after_stop(transition, hooks, stopped, &release).await;
                drop(release);
                r
            },
            starts,
        )
        .await;
        // What started is reported even when a hook failed (it is running).
        let mut first_err = done.err();
        for r in starts {
            match r {
                Ok(service) => {
                    started.insert(service);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(started),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn stop_waves(
        &self,
        targets: &[(String, ContainerInfo)],
        timeout: Option<Duration>,
        transition: Transition,
        hooks: &mut dyn Hooks,
        with_hooks: bool,
        early: &BTreeSet<String>,
        report: &mut Report,
    ) -> Result<(Vec<StoppedService>, BTreeSet<String>), LifecycleError> {
        // Fresh, complete information (a listing may lack env and mounts).
        let live: Vec<&(String, ContainerInfo)> =
            targets.iter().filter(|(_, c)| is_running(c)).collect();
        let infos = futures_util::future::try_join_all(
            live.iter()
                .map(|(_, c)| self.engine.inspect_container(&c.id)),
        )
        .await?;
        let running: Vec<RunningService> = live
            .iter()
            .zip(infos)
            .map(|((service, _), container)| {
                // An orphan database is counted too (from what its container says).
                let stateful = self
                    .stateful(service)
                    .or_else(|| self.orphan_stateful(service, &container));
                RunningService {
                    service: service.clone(),
                    container,
                    stateful,
                }
            })
            .collect();
        if running.is_empty() {
            return Ok((Vec::new(), BTreeSet::new()));
        }
        let pre = if with_hooks {
            let _t = crate::timing::span("census");
            hooks
                .before_stop(transition, &running)
                .await
                .map_err(LifecycleError::hook)?
        } else {
            BTreeMap::new()
        };
        let names: Vec<String> = running.iter().map(|r| r.service.clone()).collect();
        let width = self.width(&names);
        let _t = crate::timing::span("stop");
        let mut stopped = Vec::new();
        let mut started = BTreeSet::new();
        for wave in plan::stop_waves(self.compose(), &names) {
            let members: Vec<&RunningService> = wave
                .iter()
                .filter_map(|n| running.iter().find(|r| &r.service == n))
                .collect();
            let grace =
                |rs: &RunningService| timeout.map(secs_ceil).or(rs.container.stop_timeout_secs);
            let longest = members
                .iter()
                .map(|rs| grace(rs).unwrap_or(10))
                .max()
                .unwrap_or(10);
            crate::interrupt::set_step(format!("stopping {}", wave.join(", ")));
            let results = {
                let _spin = Spin(self.ui.spinner(format!(
                    "stopping {} (grace period {longest}s)",
                    wave.join(", ")
                )));
                futures_util::future::join_all(members.iter().map(|rs| async move {
                    self.engine
                        .stop_container(&rs.container.id, grace(rs))
                        .await?;
                    let (container, evidence) = self.evidence(rs).await?;
                    let again = stopped_cleanly(&evidence) && early.contains(&rs.service);
                    if again {
                        let _t = crate::timing::span("start");
                        self.start_service(&rs.service, &container.id).await?;
                    }
                    Ok::<_, LifecycleError>((container, evidence, again))
                }))
                .await
            };
            for (rs, r) in members.into_iter().zip(results) {
                let (container, evidence, again) = r?;
                if again {
                    started.insert(rs.service.clone());
                }
                let clean = match evidence.clean_shutdown {
                    Some(true) if !evidence.killed => ", postgres shut down cleanly",
                    _ => "",
                };
                self.ui.success(format!(
                    "{:<width$}  stopped (exit {}{clean})",
                    rs.service,
                    evidence
                        .exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "?".into())
                ));
                report.stopped.push(rs.service.clone());
                report.evidence.insert(rs.service.clone(), evidence.clone());
                stopped.push(StoppedService {
                    pre_stop: pre.get(&rs.service).cloned(),
                    service: rs.service.clone(),
                    container,
                    stateful: rs.stateful.clone(),
                    evidence,
                });
            }
        }
        Ok((stopped, started))
    }

    /// How a container stopped (and a warning when it was not clean).
    async fn evidence(
        &self,
        rs: &RunningService,
    ) -> Result<(ContainerInfo, StopEvidence), LifecycleError> {
        let info = self.engine.inspect_container(&rs.container.id).await?;
        let mut ev = StopEvidence {
            exit_code: info.exit_code,
            oom_killed: info.oom_killed,
            killed: info.exit_code == Some(137) || info.oom_killed,
            ..StopEvidence::default()
        };
        let postgres = rs
            .stateful
            .as_ref()
            .is_some_and(|s| s.kind == ServiceKind::Postgres);
        let reason = if info.oom_killed {
            "OOM-killed".to_string()
        } else if ev.killed {
            "exit 137: killed after the grace period".to_string()
        } else {
            format!("exit {}", info.exit_code.unwrap_or(-1))
        };
        if postgres {
            match self.engine.logs(&info.id, SHUTDOWN_LOG_LINES).await {
                Ok(logs) => {
                    let (clean, line) = postgres_shutdown(&logs);
                    ev.clean_shutdown = Some(clean);
                    ev.log_line = line;
                }
                Err(e) => self
                    .ui
                    .warn(format!("cannot read the log of {}: {e}", info.name)),
            }
            if ev.killed || ev.clean_shutdown == Some(false) {
                let why = if ev.killed {
                    reason
                } else {
                    format!("{reason}, and its log does not say \"{POSTGRES_SHUTDOWN}\"")
                };
                self.ui.warn(format!(
                    "postgres in {} did not shut down cleanly ({why}); it will run crash recovery on next start; committed data is safe, UNLOGGED tables will be emptied",
                    info.name
                ));
            }
        } else if ev.killed {
            self.ui.warn(format!(
                "{} ({}) did not stop within its grace period or was killed ({reason}); a larger stop_grace_period may be needed",
                rs.service, info.name
            ));
        }
        Ok((info, ev))
    }

    /// Containers in stop order: orphans first, then the stack's services in reverse dependency
    /// order.
    fn in_stop_order(
        &self,
        containers: Vec<ContainerInfo>,
        order: &[String],
    ) -> Vec<(String, ContainerInfo)> {
        let mut by = by_service(containers);
        let mut out: Vec<(String, ContainerInfo)> = Vec::new();
        let orphans: Vec<String> = by
            .keys()
            .filter(|s| !self.compose().services.contains_key(*s))
            .cloned()
            .collect();
        for s in orphans {
            if let Some(c) = by.remove(&s) {
                self.ui.status(format!(
                    "container {} belongs to service {s}, which is no longer in the stack (orphan); removing it too",
                    c.name
                ));
                out.push((s, c));
            }
        }
        for s in order {
            if let Some(c) = by.remove(s) {
                out.push((s.clone(), c));
            }
        }
        out
    }

    pub async fn down(
        &self,
        opts: &DownOptions,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        let mut report = Report::default();
        let order = plan::stop_order(self.compose(), &[])?;
        let containers = self.project_containers().await?;
        let targets = self.in_stop_order(containers, &order);
        let stopped = self
            .stop_without_after(
                &targets,
                opts.timeout,
                Transition::Down,
                hooks,
                true,
                &mut report,
            )
            .await?;
        let width = self.width(&targets.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>());
        // Containers that hold no data (no stateful service, no volume) are removed while the
        // snapshots of the others are taken; those are removed once their snapshot is done.
        let (dataless, holding): (Vec<_>, Vec<_>) = targets.iter().partition(|(s, c)| {
            self.stateful(s).is_none() && !c.mounts.iter().any(|m| m.kind == MountKind::Volume)
        });
        // The networks go meanwhile too: no container of the project runs any more, and the
        // engine removes a network that only stopped containers are attached to (the next `up`
        // recreates such a container if this `down` is interrupted before removing it).
        let (snapshots, removed, networks) = futures_util::future::join3(
            async {
                if stopped.is_empty() {
                    return Ok(());
                }
                let _t = crate::timing::span("snapshot");
                hooks.after_stop(Transition::Down, &stopped).await
            },
            self.remove_all(&dataless, opts.remove_volumes, width),
            self.remove_networks(),
        )
        .await;
        snapshots.map_err(LifecycleError::hook)?;
        networks?;
        let mut done = removed?;
        done.extend(
            self.remove_all(&holding, opts.remove_volumes, width)
                .await?,
        );
        let mut anonymous = Vec::new();
        for (service, anon) in done {
            report.removed.push(service);
            anonymous.extend(anon);
        }
        for v in anonymous {
            self.engine.remove_volume(&v).await?;
            self.ui.success(format!("removed anonymous volume {v}"));
            report.volumes_removed.push(v);
        }
        if opts.remove_volumes {
            for v in self.removable_volumes().await? {
                self.engine.remove_volume(&v).await?;
                self.ui.success(format!("removed volume {v}"));
                report.volumes_removed.push(v);
            }
        }
        Ok(self.timed(report))
    }

    /// Removes the project's networks (ours). One that something else still uses is left with a
    /// warning: the stack is down all the same.
    async fn remove_networks(&self) -> Result<(), LifecycleError> {
        let _t = crate::timing::span("networks");
        for n in self
            .engine
            .list_networks(&labels::project_filter(self.project))
            .await?
        {
            match self.engine.remove_network(&n.name).await {
                Ok(()) => self.ui.detail(format!("removed network {}", n.name)),
                // Something else is still attached: leave the network, the stack is down.
                Err(e @ EngineError::Api { .. }) => self
                    .ui
                    .warn(format!("network {} was left in place: {e}", n.name)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Removes the containers of `targets` together; returns, per service, the anonymous volumes
    /// to remove with them (`--volumes`). Warns about a data dir left on an anonymous volume.
    async fn remove_all(
        &self,
        targets: &[&(String, ContainerInfo)],
        remove_volumes: bool,
        width: usize,
    ) -> Result<Vec<(String, Vec<String>)>, LifecycleError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let _t = crate::timing::span("remove");
        let declared: Vec<String> = spec::stack_volumes(self.project, self.compose())
            .into_iter()
            .map(|v| v.name)
            .collect();
        let declared = &declared;
        crate::interrupt::set_step(format!(
            "removing the containers of {}",
            targets
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        futures_util::future::try_join_all(targets.iter().map(|(service, c)| async move {
            self.engine.remove_container(&c.id, false).await?;
            self.ui
                .success(format!("{service:<width$}  removed ({})", c.name));
            let mut anonymous = Vec::new();
            // Anonymous volumes outlive their container and are never mounted again: say so, and
            // remove them with --volumes (as `docker compose down -v` does).
            for m in &c.mounts {
                if m.kind != MountKind::Volume || declared.contains(&m.name_or_source) {
                    continue;
                }
                let Some(info) = self.engine.inspect_volume(&m.name_or_source).await? else {
                    continue;
                };
                if !info.labels.is_empty() {
                    continue;
                }
                if remove_volumes {
                    anonymous.push(info.name);
                } else if self.hardened.stateful_service(service).is_some_and(|st| {
                    st.data_dir.trim_end_matches('/') == m.target.trim_end_matches('/')
                }) {
                    self.ui.warn(format!(
                        "{service}: its data dir {} was on anonymous volume {}, which no container will mount again: the next `up` starts with an EMPTY data dir. Put it on a named volume (remove `harden: false`) and copy the data over.",
                        m.target, info.name
                    ));
                }
            }
            Ok::<_, LifecycleError>((service.clone(), anonymous))
        }))
        .await
    }

    /// The stack's volumes `down --volumes` removes: declared, not external, existing, and
    /// carrying the project's label. Others are left alone (with a warning for foreign ones).
    pub async fn removable_volumes(&self) -> Result<Vec<String>, LifecycleError> {
        let mut out = Vec::new();
        for v in spec::stack_volumes(self.project, self.compose()) {
            if v.external {
                continue;
            }
            match self.engine.inspect_volume(&v.name).await? {
                Some(info)
                    if info.labels.get(labels::PROJECT).map(String::as_str)
                        == Some(self.project) =>
                {
                    out.push(v.name)
                }
                Some(_) => self.ui.warn(format!(
                    "volume {} does not carry the labels of project {}; not removing it",
                    v.name, self.project
                )),
                None => {}
            }
        }
        Ok(out)
    }

    pub async fn stop(
        &self,
        services: &[String],
        timeout: Option<Duration>,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        let mut report = Report::default();
        let order = plan::stop_order(self.compose(), services)?;
        let mut by = by_service(self.project_containers().await?);
        let targets: Vec<(String, ContainerInfo)> = order
            .iter()
            .filter_map(|s| by.remove(s).map(|c| (s.clone(), c)))
            .collect();
        let stopped = self
            .stop_services(
                &targets,
                timeout,
                Transition::Stop,
                hooks,
                true,
                &mut report,
            )
            .await?;
        if stopped.is_empty() {
            self.ui.status("nothing to stop: no service is running");
        }
        Ok(self.timed(report))
    }
}
