//! `nodus verify`: the census now against the ledger, optionally accepted as the new baseline.

use std::collections::BTreeMap;

use super::census::{self, CensusOptions, ServiceCensus};
use super::ledger::{Entry, Phase};
use super::verdict::{self, BaselineRef, Judge, Status, Verdict};
use super::{identity, new_session_id, open_ledger, update_outstanding, GuardConfig};
use crate::engine::Engine;
use crate::lifecycle::RunningService;
use crate::output::Ui;
use crate::stack::{ServiceKind, StatefulService};

/// `nodus verify`: the census now against the latest recorded census of each service (any
/// phase; every difference counts). With `accept`, the census is recorded as the new baseline.
pub async fn verify(
    engine: &dyn Engine,
    cfg: &GuardConfig,
    ui: &Ui,
    accept: bool,
    fast: bool,
) -> anyhow::Result<Verdict> {
    let path = cfg.ledger_path();
    let mut ledger = open_ledger(&path, &cfg.project, ui)?;
    let opts = CensusOptions {
        fast,
        ..Default::default()
    };
    let countable: Vec<StatefulService> = cfg
        .stateful
        .iter()
        .filter(|s| census::supports(s.kind))
        .cloned()
        .collect();
    let spinner = ui.spinner("census");
    let running = census::running_stateful(engine, &cfg.project, &countable).await?;
    let live: Vec<RunningService> = running.values().flatten().cloned().collect();
    let mut now = census::take_many(engine, &live, &opts).await;
    spinner.finish_and_clear();
    for (name, rs) in &running {
        if rs.is_none() {
            now.services.insert(
                name.clone(),
                ServiceCensus::Unavailable {
                    reason: "not running (start the stack with `nodus up`)".into(),
                },
            );
        }
    }
    let mut ids = BTreeMap::new();
    for s in &live {
        if let Some(id) = identity::identify(engine, s, now.services.get(&s.service)).await {
            ids.insert(s.service.clone(), id);
        }
    }
    let mut v = Verdict::new(
        "verify",
        now.totals(),
        path.display().to_string(),
        census::now_rfc3339(),
    );
    let mut baselines = BTreeMap::new();
    for (name, c) in &now.services {
        let kind = countable
            .iter()
            .find(|s| &s.service == name)
            .map(|s| s.kind)
            .unwrap_or(ServiceKind::Other);
        let entry = ledger.baseline(name, None);
        if let Some(e) = &entry {
            baselines.insert(name.clone(), e.clone());
        }
        let entry = entry.as_ref();
        let sv = verdict::judge(Judge {
            service: name,
            kind,
            baseline: entry.and_then(|e| {
                Some((
                    BaselineRef {
                        phase: e.phase,
                        time: e.time.clone(),
                        transition: e.transition.clone(),
                        guarded: e.phase == Phase::Pre,
                    },
                    e.census_of(name)?,
                    e.services.get(name),
                    e.project.as_str(),
                ))
            }),
            now: c,
            early: None,
            current_identity: ids.get(name),
            current_project: &cfg.project,
            started_after_early: &[],
            strict: true,
        });
        let mut sv = sv;
        if let Some(base) = entry {
            // The data was there at the baseline and until the services started after it: a
            // snapshot from before that start can undo the loss.
            sv.restore_before = ledger
                .entries()
                .iter()
                .find(|e| {
                    e.time > base.time && e.phase != Phase::Pre && e.census_of(name).is_some()
                })
                .map(|e| e.time.clone());
        }
        v.services.insert(name.clone(), sv);
    }
    v.conclude();
    if !accept {
        let notes = update_outstanding(&mut ledger, &mut v, &baselines, false);
        v.notes.extend(notes);
    }
    if accept {
        let unavailable: Vec<&String> = now
            .services
            .iter()
            .filter(|(_, c)| !c.is_available())
            .map(|(n, _)| n)
            .collect();
        if !unavailable.is_empty() {
            anyhow::bail!(
                "cannot accept a census in which {} could not be counted; start the stack first",
                unavailable
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let entry = Entry {
            session: new_session_id(),
            transition: "verify".into(),
            phase: Phase::Accepted,
            time: now.taken_at.clone(),
            project: cfg.project.clone(),
            nodus_version: env!("CARGO_PKG_VERSION").to_string(),
            engine_id: engine.info().await.ok().map(|i| i.id),
            volumes_removed: false,
            census: now.clone(),
            services: ids,
        };
        ledger.push(entry);
        ledger.mark_trusted();
        for name in now.services.keys() {
            ledger.clear_outstanding(name);
        }
        ledger.save()?;
        if v.verdict == Status::Loss {
            v.notes
                .push(format!("accepted these differences: {}", v.loss_summary()));
        }
        for s in v.services.values_mut() {
            s.status = Status::Accepted;
        }
        v.verdict = Status::Accepted;
    } else {
        if ledger.entries().is_empty() {
            v.notes.push(format!(
                "no census recorded for project {} yet; run `nodus verify --accept` to record one",
                cfg.project
            ));
        }
        ledger.save()?;
    }
    Ok(v)
}
