//! Builds the lifecycle hooks (guard, snapshots) for a transition and turns their outcome into
//! output and an exit status; on a terminal, offers to restore what a transition lost.

use std::sync::Arc;

use crate::engine::Engine;
use crate::error::DataLossDetected;
use crate::guard::census::Census;
use crate::guard::compare;
use crate::guard::diff::ServiceDiff;
use crate::guard::verdict::{RestoreHint, Status, Verdict};
use crate::guard::{Guard, GuardConfig, Outcome, SharedOutcome};
use crate::lifecycle::{HookChain, Report, Transition};
use crate::project::Project;
use crate::snapshot::pick::{self, Pick};
use crate::snapshot::SnapshotEntry;
use crate::state::StackLock;

use super::Ctx;

#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// `--no-snapshot`.
    pub no_snapshot: bool,
    /// `restart --snapshot`: snapshot whatever `x-nodus.snapshots.on_restart` says.
    pub force_snapshot: bool,
    /// The services named on the command line (empty: the default selection); a restart
    /// snapshots when these start an application service (`on_restart: auto`).
    pub services: Vec<String>,
}

/// The hooks of one guarded transition.
pub struct Session {
    /// The guard first; further hooks (snapshots) are pushed after it, so their `before_stop`
    /// runs after the guard's census and CHECKPOINT, and they see its census in `pre_stop`.
    pub chain: HookChain,
    pub transition: Transition,
    /// The guard's outcome (its verdict), filled while the lifecycle runs.
    pub guard: SharedOutcome,
    pub project: Project,
}

/// The snapshots that can undo a loss of `service`, newest first: taken at or before `before`
/// (RFC 3339; any time when it does not parse) and, when `missing` lists databases, tables or
/// collections, recording a census that holds every one of them. Safety snapshots are left out;
/// unusable ones are included (see `snapshot::pick`).
fn loss_candidates(
    project: &Project,
    service: &str,
    before: &str,
    missing: Option<&ServiceDiff>,
) -> Vec<SnapshotEntry> {
    let before = chrono::DateTime::parse_from_rfc3339(before)
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc));
    pick::candidates(
        &project.state.snapshots_dir(project.name()),
        service,
        before,
        |m| match missing {
            Some(d) if !compare::structural_items(d).is_empty() => {
                crate::snapshot::restore::recorded_census(m.census.as_ref())
                    .is_ok_and(|c| compare::covers(&c, d))
            }
            _ => true,
        },
    )
}

/// "snapshot of db holding the missing tables" / "snapshot of cache".
fn loss_what(service: &str, missing: Option<&ServiceDiff>) -> String {
    match missing {
        Some(d) if !compare::structural_items(d).is_empty() => {
            format!("snapshot of {service} holding what is missing")
        }
        _ => format!("snapshot of {service} from before the loss"),
    }
}

/// The restore hint for a verdict's lost services: the newest snapshot from before `before`
/// (RFC 3339) whose census holds every missing table; a note when none does, or when the newest
/// such snapshot failed verification (then the command names the newest good one).
pub fn restore_lookup<'a>(
    ctx: &'a Ctx,
    project: &'a Project,
) -> impl Fn(&str, &str, Option<&ServiceDiff>) -> RestoreHint + 'a {
    move |service, before, missing| {
        let cmd = |id: &str| format!("{} snapshot restore {id}", super::nodus_cmd(ctx, project));
        let p = Pick::recorded(loss_candidates(project, service, before, missing));
        let mut note = p.refusal(&loss_what(service, missing), cmd);
        if p.newest.is_none() {
            if let Some(d) = missing.filter(|d| !compare::structural_items(d).is_empty()) {
                let any = loss_candidates(project, service, before, None);
                if let Some(newest) = any.first() {
                    note = Some(format!(
                        "no snapshot of {service} from before the loss holds every missing table ({}); the newest one, {}, lacks them",
                        compare::structural_items(d).join(", "),
                        newest.id
                    ));
                }
            }
        }
        RestoreHint {
            command: p.good.map(|g| cmd(&g.id)),
            note,
        }
    }
}

/// A session's conclusion: the guard's verdict (restore commands filled in).
pub struct Concluded {
    pub transition: Transition,
    pub verdict: Option<Verdict>,
}

impl Concluded {
    /// `{"transition", "report", "guard"}`: the document of a lifecycle command, nested in the
    /// documents of commands that run a transition on the way.
    pub fn json(&self, report: &Report) -> serde_json::Value {
        serde_json::json!({
            "transition": self.transition,
            "report": report,
            "guard": self.verdict,
        })
    }

    /// The loss, when data went missing.
    pub fn loss(&self) -> Option<DataLossDetected> {
        self.verdict.as_ref().filter(|v| v.is_loss()).map(loss_of)
    }

    /// `DataLossDetected` when data went missing.
    pub fn result(&self) -> anyhow::Result<()> {
        match self.loss() {
            Some(l) => Err(l.into()),
            None => Ok(()),
        }
    }
}

fn loss_of(v: &Verdict) -> DataLossDetected {
    DataLossDetected {
        summary: v.loss_summary(),
        restore_command: v.restore_command.clone(),
        fix: v.fix(),
    }
}

impl Session {
    pub fn new(
        ctx: &Ctx,
        project: &Project,
        engine: Arc<dyn Engine>,
        transition: Transition,
        opts: SessionOptions,
    ) -> anyhow::Result<Session> {
        let shared: SharedOutcome = Arc::new(std::sync::Mutex::new(Outcome::default()));
        let guard = Guard::new(
            engine.clone(),
            ctx.ui.clone(),
            GuardConfig::from_project(project),
            transition,
            shared.clone(),
        );
        // Snapshots come after the guard: they store its `pre_stop` census in the manifest.
        let mut chain = HookChain(vec![Box::new(guard)]);
        if let Some(h) = crate::snapshot::SnapshotHook::for_transition(
            project,
            engine,
            &ctx.ui,
            transition,
            &crate::snapshot::SnapshotChoice {
                no_snapshot: opts.no_snapshot,
                force: opts.force_snapshot,
                services: opts.services.clone(),
            },
        ) {
            chain.0.push(Box::new(h));
        }
        Ok(Session {
            chain,
            transition,
            guard: shared,
            project: project.clone(),
        })
    }

    /// `nodus down --volumes`: the data is removed on purpose, so the next start records a new
    /// baseline instead of reporting a loss. Call before running the transition.
    pub fn removing_volumes(&self) {
        if let Ok(mut o) = self.guard.lock() {
            o.remove_volumes = true;
        }
    }

    /// A restore: compare the settled census with what the snapshot held instead of the ledger.
    /// Returned as a function so it can be called while the chain is borrowed.
    pub fn expect_census(&self) -> impl FnOnce(Census) {
        let guard = self.guard.clone();
        move |census| {
            if let Ok(mut o) = guard.lock() {
                o.expected = Some(census);
            }
        }
    }

    /// The guard's verdict so far (None before anything was counted).
    pub fn verdict(&self) -> Option<Verdict> {
        self.guard.lock().ok().and_then(|o| o.verdict.clone())
    }

    /// Takes the guard's verdict, fills in the restore commands and prints it for humans
    /// (nothing with --json: the caller puts [`Concluded::json`] into its one document).
    pub fn conclude(self, ctx: &Ctx, report: &Report) -> Concluded {
        let mut verdict = self.guard.lock().ok().and_then(|mut o| o.verdict.take());
        if let Some(v) = verdict.as_mut() {
            v.fill_restore(restore_lookup(ctx, &self.project));
            v.note_created_volumes(&report.volumes_created);
            if !ctx.ui.json {
                v.print(&ctx.ui);
            }
        }
        Concluded {
            transition: self.transition,
            verdict,
        }
    }

    /// The end of a lifecycle command: prints the report and verdict (one JSON document with
    /// --json); returns `DataLossDetected` when data went missing.
    pub fn finish(self, ctx: &Ctx, report: &Report) -> anyhow::Result<()> {
        let c = self.conclude(ctx, report);
        if ctx.ui.json {
            ctx.ui.json_out(&c.json(report));
        }
        c.result()
    }

    /// [`Session::finish`] for commands that start services (`up`, `start`, `restart`): on a
    /// terminal, a loss with a snapshot from before it is offered for restore; accepting
    /// releases `lock` and runs the restore.
    pub async fn finish_offering_restore(
        self,
        ctx: &Ctx,
        report: &Report,
        lock: StackLock,
    ) -> anyhow::Result<()> {
        let project = self.project.clone();
        let c = self.conclude(ctx, report);
        if ctx.ui.json {
            ctx.ui.json_out(&c.json(report));
        }
        match &c.verdict {
            Some(v) if v.is_loss() => offer_restore(ctx, &project, v, lock).await,
            _ => Ok(()),
        }
    }
}

/// Whether the user can be asked: a terminal, no --json, no --yes (which must not put data
/// back unasked).
fn can_offer(ctx: &Ctx) -> bool {
    ctx.ui.interactive && !ctx.ui.json && !ctx.ui.assume_yes
}

/// A loss was found: returns `DataLossDetected` (exit 3; the restore command is the hint).
/// On a terminal, first offers each lost service's newest snapshot from before the loss that
/// holds what is missing, verified first; when that one fails verification it is not offered
/// and an older one is not offered in its place: the refusal names both and the command to
/// restore the good one. The accepted ones are restored in-process — `lock` released, then the
/// same path as `nodus snapshot restore <id> --yes`, which takes the lock again. Succeeds only
/// when every lost service was restored.
pub async fn offer_restore(
    ctx: &Ctx,
    project: &Project,
    v: &Verdict,
    lock: StackLock,
) -> anyhow::Result<()> {
    if !can_offer(ctx) || v.restore_command.is_none() {
        return Err(loss_of(v).into());
    }
    let mut accepted: Vec<(String, SnapshotEntry)> = Vec::new();
    let store = crate::snapshot::SnapshotStore::for_project(project);
    let mut refused: std::collections::BTreeMap<String, RestoreHint> = Default::default();
    for (service, s) in v.services.iter().filter(|(_, s)| s.status == Status::Loss) {
        let before = s
            .restore_before
            .as_deref()
            .unwrap_or(&v.restore_point_before);
        let missing = s.diff.as_ref();
        let candidates = loss_candidates(project, service, before, missing);
        let p = Pick::verified(&store, candidates, &ctx.ui).await;
        let cmd = |id: &str| format!("{} snapshot restore {id}", super::nodus_cmd(ctx, project));
        if let Some(why) = p.refusal(&loss_what(service, missing), cmd) {
            ctx.ui
                .error(format!("{service}: not offering a restore: {why}"));
            refused.insert(
                service.clone(),
                RestoreHint {
                    command: p.good.as_ref().map(|g| cmd(&g.id)),
                    note: Some(why),
                },
            );
            continue;
        }
        let Some(entry) = p.good else {
            continue;
        };
        let taken = pick::taken(&entry);
        let ok = dialoguer::Confirm::new()
            .with_prompt(format!(
                "Restore {service} from snapshot {} taken {taken}?",
                entry.id
            ))
            .default(false)
            .interact()
            .unwrap_or(false);
        if ok {
            accepted.push((service.clone(), entry));
        }
    }
    let mut v = v.clone();
    if !refused.is_empty() {
        // The hint names the newest good snapshot, not the one that failed verification.
        let keep: std::collections::BTreeMap<String, RestoreHint> = v
            .services
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    RestoreHint {
                        command: s.restore_command.clone(),
                        note: s.restore_note.clone(),
                    },
                )
            })
            .collect();
        v.fill_restore(|service, _, _| {
            refused
                .get(service)
                .or_else(|| keep.get(service))
                .cloned()
                .unwrap_or_default()
        });
    }
    let v = &v;
    if accepted.is_empty() {
        return Err(loss_of(v).into());
    }

    drop(lock);
    let yes = Ctx::new(ctx.global.clone(), ctx.ui.assuming_yes());
    let mut restored: Vec<String> = Vec::new();
    for (service, entry) in accepted {
        let args = super::snapshot::RestoreArgs {
            selection: crate::snapshot::ops::restore::Selection::Id(entry.id.clone()),
            services: vec![],
            no_safety: false,
        };
        match super::snapshot::restore(&yes, args).await {
            Ok(()) => restored.push(service),
            Err(e) => ctx.ui.error(format!(
                "restoring {service} from snapshot {} failed: {e:#}",
                entry.id
            )),
        }
    }
    let mut rest = v.clone();
    rest.services
        .retain(|name, s| s.status == Status::Loss && !restored.contains(name));
    if rest.services.is_empty() {
        // The restore said how it went (and the guard that the data is back).
        return Ok(());
    }
    let mut cmds: Vec<String> = Vec::new();
    for c in rest
        .services
        .values()
        .filter_map(|s| s.restore_command.clone())
    {
        if !cmds.contains(&c) {
            cmds.push(c);
        }
    }
    Err(DataLossDetected {
        summary: rest.loss_summary(),
        restore_command: (!cmds.is_empty()).then(|| cmds.join(" && ")),
        fix: rest.fix(),
    }
    .into())
}
