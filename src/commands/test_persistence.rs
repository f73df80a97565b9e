//! `nodus test-persistence [--cycles N] [--with-services] [--restart-kind ...] [--junit FILE]
//! [--ephemeral] [--no-snapshot]`: the guarded transitions for `persistence::run`, the throwaway
//! project of `--ephemeral`, Ctrl-C, the reports and the exit status.

use std::path::PathBuf;
use std::time::Duration;

use super::hooks::SessionOptions;
use super::{parse_duration_arg, Ctx};
use crate::cli::{RestartKindArg, TestPersistenceArgs};
use crate::error::DataLossDetected;
use crate::lifecycle::{DownOptions, Lifecycle, NoHooks, Transition, UpOptions};
use crate::persistence::{self, sentinel, Driver, Plan, RestartKind, Step};
use crate::project::Project;

pub async fn run(ctx: &Ctx, args: TestPersistenceArgs) -> anyhow::Result<()> {
    let timeout = parse_duration_arg("--timeout", &args.timeout)?;
    let kind = match args.restart_kind {
        RestartKindArg::DownUp => RestartKind::DownUp,
        RestartKindArg::Restart => RestartKind::Restart,
        RestartKindArg::Kill => RestartKind::Kill,
    };
    // --ephemeral: a project of its own, with its own state dir (ledger, snapshots).
    let (ctx, scratch) = if args.ephemeral {
        let base = ctx.project()?;
        let name = format!(
            "{}-ptest-{:x}",
            base.name(),
            std::process::id() ^ (chrono::Utc::now().timestamp_subsec_micros())
        );
        let dir = std::env::temp_dir().join(format!("nodus-{name}"));
        let mut global = ctx.global.clone();
        global.project_name = Some(name.clone());
        global.state_dir = Some(dir.clone());
        ctx.ui.status(format!(
            "ephemeral project {} (removed at the end)",
            ctx.ui.bold(&name)
        ));
        (Ctx::new(global, ctx.ui.clone()), Some(dir))
    } else {
        (Ctx::new(ctx.global.clone(), ctx.ui.clone()), None)
    };
    let project = ctx.project()?;
    if scratch.is_some() {
        persistence::check_isolated(&project)?;
    }
    let services = if args.with_services {
        super::up::selection(&project, vec![])
    } else {
        project
            .hardened
            .stateful
            .iter()
            .map(|s| s.service.clone())
            .collect()
    };
    if services.is_empty() {
        return Err(crate::error::UsageError(
            "the stack has no stateful service to test (and --with-services was not given)".into(),
        )
        .into());
    }
    let plan = Plan {
        project: project.name().to_string(),
        cycles: args.cycles,
        kind,
        stateful: project.hardened.stateful.clone(),
    };
    let engine = ctx.engine().await?;
    let mut driver = Guarded {
        ctx: &ctx,
        project: project.clone(),
        services,
        timeout,
        no_snapshot: args.no_snapshot,
    };
    let token = sentinel::new_token();
    let mut places = Vec::new();
    let result = {
        let work = persistence::run(&*engine, &ctx.ui, &plan, &mut driver, &token, &mut places);
        tokio::select! {
            r = work => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    };
    if result.is_none() {
        ctx.ui.warn("interrupted: cleaning up");
    }

    // Cleanup: the throwaway project goes entirely; otherwise the sentinels go and the census
    // without them becomes the baseline.
    let cleanup = match &scratch {
        Some(dir) => remove_project(&ctx, &project, dir).await,
        None => remove_sentinels(&ctx, &project, &plan, &places).await,
    };

    let outcome = match result {
        None => anyhow::bail!("interrupted (Ctrl-C)"),
        Some(r) => r?,
    };
    let junit = args.junit.as_ref().map(|p| absolute(p));
    if let Some(path) = &junit {
        let xml = persistence::report::junit(&outcome)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        crate::state::atomic_write(path, xml.as_bytes(), 0o644)
            .map_err(|e| anyhow::anyhow!("writing the JUnit report {}: {e}", path.display()))?;
        ctx.ui
            .status(format!("JUnit report written to {}", path.display()));
    }
    if ctx.ui.json {
        let p = junit.as_ref().map(|p| p.display().to_string());
        ctx.ui
            .json_out(&persistence::report::json(&outcome, p.as_deref(), &cleanup));
    }
    if outcome.passed {
        let checked: usize = outcome.cycles.iter().map(|c| c.cases.len()).sum();
        ctx.ui.success(format!(
            "{}: {} of {} cycles ({}) passed; {checked} sentinel checks, nothing lost",
            ctx.ui.bold(project.name()),
            outcome.cycles.len().saturating_sub(1),
            outcome.cycles_requested,
            kind.name()
        ));
        Ok(())
    } else {
        Err(DataLossDetected {
            summary: outcome.loss.clone().unwrap_or_default(),
            // an ephemeral project is gone with its snapshots: nothing to restore there
            restore_command: outcome
                .restore_command
                .clone()
                .filter(|_| scratch.is_none()),
            fix: outcome.fix.clone(),
        }
        .into())
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Removes the sentinels and records the census without them as the baseline (they were
/// nodus' own; their removal is not a loss).
async fn remove_sentinels(
    ctx: &Ctx,
    project: &Project,
    plan: &Plan,
    places: &[sentinel::Place],
) -> serde_json::Value {
    if places.is_empty() {
        return serde_json::json!({"sentinels_removed": true});
    }
    let r = async {
        let _lock = ctx.lock(project)?;
        let engine = ctx.engine().await?;
        let failed = sentinel::remove(&*engine, &plan.project, &plan.stateful, places).await;
        if failed.is_empty() {
            let cfg = crate::guard::GuardConfig::from_project(project);
            crate::guard::verify(&*engine, &cfg, &ctx.ui, true, false).await?;
        }
        anyhow::Ok(failed)
    }
    .await;
    match r {
        Ok(failed) if failed.is_empty() => {
            ctx.ui.detail("sentinels removed");
            serde_json::json!({"sentinels_removed": true})
        }
        Ok(failed) => {
            for f in &failed {
                ctx.ui.warn(format!(
                    "could not remove the sentinel {f}; drop table/key {} by hand",
                    sentinel::NAME
                ));
            }
            serde_json::json!({"sentinels_removed": false, "failed": failed})
        }
        Err(e) => {
            ctx.ui
                .warn(format!("could not remove the sentinels: {e:#}"));
            serde_json::json!({"sentinels_removed": false, "error": format!("{e:#}")})
        }
    }
}

/// `--ephemeral`: removes the throwaway project's containers, network and volumes (only those
/// with its labels) and its state dir.
async fn remove_project(ctx: &Ctx, project: &Project, dir: &std::path::Path) -> serde_json::Value {
    let r = async {
        let engine = ctx.engine().await?;
        let lc = Lifecycle::for_project(&*engine, project, &ctx.ui);
        let opts = DownOptions {
            remove_volumes: true,
            timeout: Some(Duration::from_secs(10)),
        };
        lc.down(&opts, &mut NoHooks).await?;
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(dir);
    match r {
        Ok(()) => {
            ctx.ui.status(format!(
                "ephemeral project {} removed (containers, network, volumes)",
                project.name()
            ));
            serde_json::json!({"project_removed": project.name()})
        }
        Err(e) => {
            ctx.ui.error(format!(
                "could not remove ephemeral project {}: {e:#}; remove it with: {} -p {} down --volumes --yes",
                project.name(),
                "nodus",
                project.name()
            ));
            serde_json::json!({"project_removed": null, "error": format!("{e:#}")})
        }
    }
}

/// The guarded lifecycle commands, as `up`/`down`/`restart` run them.
struct Guarded<'a> {
    ctx: &'a Ctx,
    project: Project,
    services: Vec<String>,
    timeout: Duration,
    no_snapshot: bool,
}

impl Guarded<'_> {
    fn opts(&self) -> SessionOptions {
        SessionOptions {
            no_snapshot: self.no_snapshot,
            services: self.services.clone(),
            ..Default::default()
        }
    }

    async fn start(&mut self, transition: Transition) -> anyhow::Result<Step> {
        let ctx = self.ctx;
        let mut g = ctx
            .guarded(self.project.clone(), &[], transition, self.opts())
            .await?;
        let lc = Lifecycle::for_project(&*g.engine, &g.project, &ctx.ui);
        let opts = UpOptions {
            services: self.services.clone(),
            timeout: self.timeout,
            ..UpOptions::default()
        };
        let chain = &mut g.session.chain;
        let (report, name) = match transition {
            Transition::Restart => (lc.restart(&opts, chain).await?, "restart"),
            _ => (lc.up(&opts, chain).await?, "up"),
        };
        super::up::summary(ctx, &g.project, name, &report);
        let c = g.session.conclude(ctx, &report);
        Ok(Step {
            transition: name,
            verdict: c.verdict.clone(),
            doc: c.json(&report),
        })
    }
}

#[async_trait::async_trait(?Send)]
impl Driver for Guarded<'_> {
    async fn up(&mut self) -> anyhow::Result<Step> {
        self.start(Transition::Up).await
    }

    async fn restart(&mut self) -> anyhow::Result<Step> {
        self.start(Transition::Restart).await
    }

    async fn down(&mut self) -> anyhow::Result<Step> {
        let ctx = self.ctx;
        let mut g = ctx
            .guarded(self.project.clone(), &[], Transition::Down, self.opts())
            .await?;
        let lc = Lifecycle::for_project(&*g.engine, &g.project, &ctx.ui);
        let opts = DownOptions {
            remove_volumes: false,
            timeout: None,
        };
        let report = lc.down(&opts, &mut g.session.chain).await?;
        super::up::summary(ctx, &g.project, "down", &report);
        let c = g.session.conclude(ctx, &report);
        Ok(Step {
            transition: "down",
            verdict: c.verdict.clone(),
            doc: c.json(&report),
        })
    }
}
