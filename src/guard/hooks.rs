//! [`Guard`]'s [`Hooks`]: the census (and CHECKPOINT) before stops, provisioning and the early
//! census as each service becomes ready, the settled census and the verdict once all are ready.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::census::{self, Census, CensusOptions, ServiceCensus};
use super::ledger::Phase;
use super::ledger::{Ledger, ServiceIdentity};
use super::verdict::{self, BaselineRef, Judge, Status, Verdict};
use super::{
    compare, countable, diff, pg, provision, transition_name, Early, Guard, READY_CONNECT_RETRY,
};
use crate::lifecycle::{Hooks, RunningService, StopEvidence, StoppedService, Transition};
use crate::stack::ServiceKind;

impl Guard {
    /// UNLOGGED tables (from the census before stopping).
    fn warn_unlogged(&self, svc: &RunningService, c: Option<&ServiceCensus>) {
        let name = &svc.service;
        if let Some(ServiceCensus::Postgres(p)) = c {
            let unlogged: Vec<String> = p
                .databases
                .iter()
                .flat_map(|(db, d)| {
                    d.tables
                        .iter()
                        .filter(|(_, t)| t.persistence == census::Persistence::Unlogged)
                        .map(move |(t, tc)| {
                            format!(
                                "{db}.{t} ({} {})",
                                tc.rows,
                                census::plural(tc.rows as usize, "row", "rows")
                            )
                        })
                })
                .collect();
            if !unlogged.is_empty() {
                self.ui.warn(format!(
                    "{name}: UNLOGGED tables (emptied by crash recovery if postgres is killed): {}",
                    unlogged.join(", ")
                ));
            }
        }
    }

    /// CHECKPOINT, sessions idle in transaction.
    async fn pg_before_stop(&self, svc: &RunningService) {
        let engine = self.engine.as_ref();
        let name = &svc.service;
        let mut target = match pg::target_for(engine, name, &svc.container).await {
            Ok(t) => t,
            Err(e) => {
                self.ui.warn(format!(
                    "{name}: cannot connect for CHECKPOINT: {}",
                    e.message
                ));
                return;
            }
        };
        let session =
            match pg::connect_maintenance(engine, &mut target, Duration::from_secs(5)).await {
                Ok((s, _)) => s,
                Err(e) => {
                    self.ui.warn(format!(
                        "{name}: cannot connect for CHECKPOINT: {}",
                        e.message
                    ));
                    return;
                }
            };
        match session.query(pg::IDLE_IN_TX_QUERY).await {
            Ok(rows) if !rows.is_empty() => {
                self.ui.warn(format!(
                    "{name}: {} {} idle in transaction; their uncommitted work will be rolled back:",
                    rows.len(),
                    census::plural(rows.len(), "session is", "sessions are")
                ));
                for r in rows {
                    let f = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
                    let app = if f(2).is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", f(2))
                    };
                    eprintln!(
                        "    {}@{} from {}{app}, idle since {}: {}",
                        f(1),
                        f(0),
                        f(3),
                        f(4),
                        f(5)
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("{name}: pg_stat_activity: {}", e.message),
        }
        let spinner = self.ui.spinner(format!("{name}: CHECKPOINT"));
        let r = session.execute("CHECKPOINT").await;
        spinner.finish_and_clear();
        match r {
            Ok(()) => self.ui.detail(format!("{name}: CHECKPOINT done")),
            Err(e) => self
                .ui
                .warn(format!("{name}: CHECKPOINT failed: {}", e.message)),
        }
    }

    fn started_after(&self, service: &str, started: &[RunningService]) -> Vec<String> {
        let Some(e) = self.early.get(service) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self.ready_order.iter().skip(e.position).cloned().collect();
        for s in started {
            if self.started_now(&s.container)
                && !self.ready_order.contains(&s.service)
                && !out.contains(&s.service)
            {
                out.push(s.service.clone());
            }
        }
        out.retain(|s| s != service);
        out
    }
}

#[async_trait]
impl Hooks for Guard {
    async fn before_stop(
        &mut self,
        t: Transition,
        running: &[RunningService],
    ) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        let svcs: Vec<RunningService> = running.iter().filter(|s| countable(s)).cloned().collect();
        if svcs.is_empty() {
            return Ok(BTreeMap::new());
        }
        let names: Vec<&str> = svcs.iter().map(|s| s.service.as_str()).collect();
        let spinner = self
            .ui
            .spinner(format!("census of {} before stopping", names.join(", ")));
        // The engine's identity (for the ledger entry) is asked, and the postgres services
        // CHECKPOINTed (all together), while the census runs.
        let engine = self.engine.clone();
        let is_pg = |s: &&RunningService| {
            s.stateful.as_ref().map(|st| st.kind) == Some(ServiceKind::Postgres)
        };
        let (census, info, _) = futures_util::future::join3(
            census::take_many(self.engine.as_ref(), &svcs, &self.opts),
            async {
                match self.engine_id {
                    Some(_) => None,
                    None => Some(engine.info().await),
                }
            },
            futures_util::future::join_all(
                svcs.iter().filter(is_pg).map(|s| self.pg_before_stop(s)),
            ),
        )
        .await;
        if let Some(info) = info {
            self.engine_id = Some(info.ok().map(|i| i.id));
        }
        spinner.finish_and_clear();
        for (name, c) in &census.services {
            if let ServiceCensus::Unavailable { reason } = c {
                self.ui.warn(format!(
                    "{name}: no census before stopping ({reason}); a loss at the next start cannot be told apart from earlier changes"
                ));
            }
        }
        for s in svcs.iter().filter(is_pg) {
            self.warn_unlogged(s, census.services.get(&s.service));
        }
        let ids = self.identities(&svcs, &census).await;
        let remove_volumes = self
            .shared
            .lock()
            .map(|o| o.remove_volumes)
            .unwrap_or(false);
        let mut entry = self
            .new_entry(Phase::Pre, census.clone(), ids.clone())
            .await;
        entry.volumes_removed = remove_volumes && t == Transition::Down;
        let wipe = entry.volumes_removed;
        let project = self.cfg.project.clone();
        let session = self.session.clone();
        let mut compared = None;
        if let Some(l) = self.ledger() {
            if wipe {
                // Deleting the data on purpose supersedes losses not accepted yet.
                for s in &svcs {
                    l.clear_outstanding(&s.service);
                }
            } else {
                // What vanished while the stack ran (before this census is recorded).
                compared = Some(running_comparison(
                    l, t, &svcs, &census, &ids, &project, &session,
                ));
            }
            l.push(entry);
        }
        self.save_ledger();

        let mut v = match compared {
            Some((v, notes)) => {
                self.notes.extend(notes);
                v
            }
            None => Verdict::new(
                transition_name(t),
                census.totals(),
                self.cfg.ledger_path().display().to_string(),
                census::now_rfc3339(),
            ),
        };
        v.notes = self.notes.clone();
        if !v.is_loss() {
            // Nothing vanished: this census is only recorded.
            v.verdict = Status::Recorded;
        }
        self.publish(v);

        Ok(census
            .services
            .iter()
            .filter_map(|(k, c)| serde_json::to_value(c).ok().map(|v| (k.clone(), v)))
            .collect())
    }

    async fn after_stop(
        &mut self,
        _t: Transition,
        stopped: &[StoppedService],
    ) -> anyhow::Result<()> {
        let session = self.session.clone();
        let mut changed = false;
        if let Some(l) = self.ledger() {
            if let Some(e) = l.find_mut(&session, Phase::Pre) {
                for s in stopped {
                    if let Some(id) = e.services.get_mut(&s.service) {
                        id.stop_evidence = Some(s.evidence.clone());
                        changed = true;
                    }
                }
            }
        }
        for s in stopped {
            let killed = s.evidence.killed || s.evidence.oom_killed;
            if killed
                && s.stateful
                    .as_ref()
                    .is_some_and(|st| st.kind == ServiceKind::Postgres)
            {
                self.ui.warn(format!(
                    "{}: postgres did not shut down cleanly (killed); it will run crash recovery at the next start, which empties UNLOGGED tables",
                    s.service
                ));
            }
        }
        if changed {
            self.save_ledger();
        }
        Ok(())
    }

    async fn service_ready(&mut self, t: Transition, svc: &RunningService) -> anyhow::Result<()> {
        self.wave_ready(t, std::slice::from_ref(svc)).await
    }

    /// Provisioning and the early census of every service of the wave run together (each
    /// on its own connections); what they found is then judged and recorded in the wave's order,
    /// as if the services had become ready one after the other, with one ledger write.
    async fn wave_ready(&mut self, _t: Transition, svcs: &[RunningService]) -> anyhow::Result<()> {
        if self.start_time.is_none() {
            self.start_time = Some(census::now_rfc3339());
        }
        // Bookkeeping in order: the position of each service's early census among the
        // services ready so far is what it would be one service at a time.
        let mut todo: Vec<(&RunningService, bool, usize)> = Vec::new();
        for svc in svcs {
            if self.started_now(&svc.container) {
                self.ready_order.push(svc.service.clone());
            }
            if !countable(svc) {
                continue;
            }
            let kept_running = self.baseline_for(&svc.service).is_some_and(|b| {
                b.identity.as_ref().is_some_and(|id| {
                    id.container_id.as_deref() == Some(svc.container.id.as_str())
                        && id.started_at.is_some()
                        && id.started_at == svc.container.started_at
                })
            });
            todo.push((svc, kept_running, self.ready_order.len()));
        }
        if todo.is_empty() {
            return Ok(());
        }
        let engine = self.engine.clone();
        let opts = CensusOptions {
            connect_retry: READY_CONNECT_RETRY,
            ..self.opts
        };
        let this = &*self;
        let opts = &opts;
        let counting = todo.iter().map(|&(svc, kept_running, _)| {
            let engine = engine.clone();
            async move {
                let kind = svc.stateful.as_ref().map(|s| s.kind);
                let mut created = Vec::new();
                if kind == Some(ServiceKind::Postgres) {
                    if let Some(spec) = this.cfg.nodus.services.get(&svc.service) {
                        created = provision::provision(
                            engine.as_ref(),
                            svc,
                            spec,
                            &this.cfg.env,
                            READY_CONNECT_RETRY,
                        )
                        .await?;
                    }
                }
                if kept_running {
                    return Ok::<_, anyhow::Error>((created, None));
                }
                let c = match census::take_service(engine.as_ref(), svc, opts).await {
                    Ok(c) => c,
                    Err(e) => ServiceCensus::Unavailable {
                        reason: e.to_string(),
                    },
                };
                Ok((created, Some((c, census::now_rfc3339()))))
            }
        });
        // The engine's identity (for the ledger entry) is asked while the censuses run.
        let (results, info) =
            futures_util::future::join(futures_util::future::join_all(counting), async {
                match self.engine_id {
                    Some(_) => None,
                    None => Some(engine.info().await),
                }
            })
            .await;
        if let Some(info) = info {
            self.engine_id = Some(info.ok().map(|i| i.id));
        }

        let mut wave = Census {
            taken_at: census::now_rfc3339(),
            services: BTreeMap::new(),
        };
        let mut counted: Vec<RunningService> = Vec::new();
        let mut early: Vec<(String, Early)> = Vec::new();
        let mut failed = None;
        for ((svc, _, position), r) in todo.into_iter().zip(results) {
            let (created, census) = match r {
                Ok(x) => x,
                Err(e) => {
                    // As one at a time: the first failure ends the wave's hook.
                    failed = Some(e);
                    break;
                }
            };
            for c in created {
                self.ui.success(format!("{}: {c}", svc.service));
            }
            let Some((c, taken_at)) = census else {
                self.kept_running.insert(svc.service.clone());
                continue;
            };
            if let ServiceCensus::Unavailable { reason } = &c {
                self.ui.warn(format!(
                    "{}: no census right after start: {reason}",
                    svc.service
                ));
            }
            let diff = self
                .baseline_for(&svc.service)
                .map(|b| diff::compare(&b.census, &c));
            if let (Some(d), Some(b)) = (&diff, self.baseline_for(&svc.service)) {
                if d.is_loss() && (b.guarded || d.is_structural_loss()) {
                    self.ui.warn(format!(
                        "{}: right after start, {} compared with the census {} at {} (details when all services are up)",
                        svc.service,
                        d.summary(),
                        b.entry.phase.describe(),
                        b.entry.time
                    ));
                }
            }
            wave.services.insert(svc.service.clone(), c.clone());
            early.push((
                svc.service.clone(),
                Early {
                    diff,
                    census: c,
                    taken_at,
                    position,
                },
            ));
            counted.push(svc.clone());
        }
        if !counted.is_empty() {
            let ids = self.identities(&counted, &wave).await;
            self.record(Phase::PostReady, wave, ids).await;
            self.early.extend(early);
            for svc in counted {
                self.ready.retain(|r| r.service != svc.service);
                self.ready.push(svc);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn unclean_stop_found(
        &mut self,
        _t: Transition,
        service: &str,
        evidence: &StopEvidence,
    ) -> anyhow::Result<()> {
        self.unclean_start
            .insert(service.to_string(), evidence.clone());
        Ok(())
    }

    async fn all_ready(&mut self, t: Transition, started: &[RunningService]) -> anyhow::Result<()> {
        let mut check: Vec<RunningService> = self.ready.clone();
        for s in started {
            if countable(s)
                && !self.kept_running.contains(&s.service)
                && !check.iter().any(|c| c.service == s.service)
            {
                check.push(s.clone());
            }
        }
        if check.is_empty() {
            return Ok(());
        }
        let apps: Vec<&str> = started
            .iter()
            .filter(|s| s.stateful.is_none() && self.started_now(&s.container))
            .map(|s| s.service.as_str())
            .collect();
        let settled = self.settled_census(&check, &apps).await;
        let ids = self.identities(&check, &settled).await;
        let restore_point = self.start_time.clone().unwrap_or_else(census::now_rfc3339);

        let mut v = Verdict::new(
            transition_name(t),
            settled.totals(),
            self.cfg.ledger_path().display().to_string(),
            restore_point,
        );
        let mut baselines = BTreeMap::new();
        for s in &check {
            let Some(now) = settled.services.get(&s.service) else {
                continue;
            };
            let kind = s
                .stateful
                .as_ref()
                .map(|st| st.kind)
                .unwrap_or(ServiceKind::Other);
            let baseline = self.baseline_for(&s.service);
            if let Some(b) = &baseline {
                baselines.insert(s.service.clone(), b.entry.clone());
            }
            let early = self.early.get(&s.service).and_then(|e| e.diff.clone());
            let after = self.started_after(&s.service, started);
            let sv = verdict::judge(Judge {
                service: &s.service,
                kind,
                baseline: baseline.as_ref().map(|b| {
                    (
                        BaselineRef {
                            phase: b.entry.phase,
                            time: b.entry.time.clone(),
                            transition: b.entry.transition.clone(),
                            guarded: b.guarded,
                        },
                        &b.census,
                        b.identity.as_ref(),
                        b.entry.project.as_str(),
                    )
                }),
                now,
                early,
                current_identity: ids.get(&s.service),
                current_project: &self.cfg.project,
                started_after_early: &after,
                strict: false,
                running_until: None,
                unclean_start: self.unclean_start.get(&s.service),
            });
            v.services.insert(s.service.clone(), sv);
        }
        v.conclude();
        if v.verdict == Status::Baseline {
            let first = self
                .ledger
                .as_ref()
                .is_some_and(|l| l.entries().iter().all(|e| e.session == self.session));
            if first
                && self
                    .ledger
                    .as_ref()
                    .is_some_and(|l| l.untrusted().is_none())
            {
                self.notes
                    .push("first census of this stack: recorded as the baseline".into());
            }
        }
        let fresh = t == Transition::Restore
            && self
                .shared
                .lock()
                .map(|o| o.expected.is_none())
                .unwrap_or(true);
        if let Some(l) = self.ledger.as_mut() {
            let notes = compare::update_outstanding(l, &mut v, &settled, &baselines, fresh);
            self.notes.extend(notes);
        }
        // What the census before this transition's stop found stays in its verdict: a loss of a
        // service not compared again, and informational notes.
        let before_stop = self.shared.lock().ok().and_then(|o| o.verdict.clone());
        for (name, prev) in before_stop.map(|b| b.services).unwrap_or_default() {
            match v.services.get_mut(&name) {
                Some(sv) => sv.info.extend(prev.info),
                None if prev.status == Status::Loss => {
                    v.services.insert(name, prev);
                }
                None => {}
            }
        }
        v.conclude();
        v.notes = self.notes.clone();
        self.record(Phase::PostSettled, settled, ids).await;
        self.publish(v);
        Ok(())
    }
}

/// Compares the census taken before a stop with the ledger ([`compare::Mode::Running`]: what
/// vanished while the stack ran) and records what is lost as outstanding. Returns the verdict
/// and notes for the user.
fn running_comparison(
    l: &mut Ledger,
    t: Transition,
    svcs: &[RunningService],
    census: &Census,
    ids: &BTreeMap<String, ServiceIdentity>,
    project: &str,
    session: &str,
) -> (Verdict, Vec<String>) {
    let kinds: BTreeMap<String, ServiceKind> = svcs
        .iter()
        .filter_map(|s| Some((s.service.clone(), s.stateful.as_ref()?.kind)))
        .collect();
    // A service that could not be counted was warned about; nothing to compare.
    let mut counted = census.clone();
    counted.services.retain(|_, c| c.is_available());
    let compared = compare::with_ledger(
        l,
        &counted,
        &compare::Context {
            transition: transition_name(t),
            project,
            kinds: &kinds,
            identities: ids,
            session: Some(session),
            mode: compare::Mode::Running,
        },
    );
    let mut v = compared.verdict;
    v.totals = census.totals();
    let notes = compare::update_outstanding(l, &mut v, &counted, &compared.baselines, false);
    v.conclude();
    (v, notes)
}
