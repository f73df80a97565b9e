//! `nodus up [SERVICE...] [--timeout 120s]`

use super::hooks::SessionOptions;
use super::{parse_duration_arg, Ctx};
use crate::lifecycle::{ImagePull, Lifecycle, Report, Transition, UpOptions};
use crate::project::Project;

pub async fn run(ctx: &Ctx, args: crate::cli::UpArgs) -> anyhow::Result<()> {
    if !args.no_doctor {
        doctor_block(ctx).await;
    }
    // `-d/--detach` and `--wait` are compose habits: nodus always waits for health and returns.
    let _ = (args.detach, args.wait);
    let up = UpFlags {
        force_recreate: args.force_recreate,
        no_recreate: args.no_recreate,
        no_deps: args.no_deps,
        pull: match args.pull {
            crate::cli::PullPolicy::Always => ImagePull::Always,
            crate::cli::PullPolicy::Missing => ImagePull::Missing,
            crate::cli::PullPolicy::Never => ImagePull::Never,
        },
        remove_orphans: args.remove_orphans,
        build: if args.build {
            crate::build::Policy::Force
        } else if args.no_build {
            crate::build::Policy::Never
        } else {
            crate::build::Policy::Auto
        },
    };
    bring_up_with(
        ctx,
        Bring::Up,
        args.services,
        &args.timeout,
        SessionOptions::default(),
        up,
    )
    .await
}

/// `up`'s own flags (compose's).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UpFlags {
    pub force_recreate: bool,
    pub no_recreate: bool,
    pub no_deps: bool,
    pub pull: ImagePull,
    pub remove_orphans: bool,
    pub build: crate::build::Policy,
}

/// The commands that end with services running.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bring {
    Up,
    Start,
    Restart,
}

/// `up`, `start` and `restart`: the guarded session, the lifecycle operation, the closing line
/// and, after a detected loss, the restore offer.
pub(super) async fn bring_up(
    ctx: &Ctx,
    bring: Bring,
    services: Vec<String>,
    timeout: &str,
    opts: SessionOptions,
) -> anyhow::Result<()> {
    bring_up_with(ctx, bring, services, timeout, opts, UpFlags::default()).await
}

async fn bring_up_with(
    ctx: &Ctx,
    bring: Bring,
    services: Vec<String>,
    timeout: &str,
    opts: SessionOptions,
    flags: UpFlags,
) -> anyhow::Result<()> {
    let timeout = parse_duration_arg("--timeout", timeout)?;
    let (transition, what) = match bring {
        Bring::Up => (Transition::Up, "up"),
        Bring::Start => (Transition::Start, "start"),
        Bring::Restart => (Transition::Restart, "restart"),
    };
    let mut g = ctx
        .guarded(ctx.project()?, &services, transition, opts)
        .await?;
    if let Bring::Up = bring {
        // `up` creates resources under this project name: remember it.
        g.project.remember_name()?;
        // The generated compose file, so `docker compose -f .nodus/compose.yaml` works as a
        // fallback.
        crate::project::write_rendered(&g.project)?;
    }
    let lc = Lifecycle::for_project(&*g.engine, &g.project, &ctx.ui);
    let opts = UpOptions {
        services: selection(&g.project, services),
        timeout,
        force_recreate: flags.force_recreate,
        no_recreate: flags.no_recreate,
        no_deps: flags.no_deps,
        pull: flags.pull,
        remove_orphans: flags.remove_orphans,
        build: crate::build::Options {
            policy: flags.build,
            ..Default::default()
        },
    };
    if let Bring::Up = bring {
        adopt_data(ctx, &g.project, &lc, &opts.services, &mut g.session.chain).await?;
    }
    let chain = &mut g.session.chain;
    let report = match bring {
        Bring::Up => lc.up(&opts, chain).await?,
        Bring::Start => lc.start(&opts, chain).await?,
        Bring::Restart => lc.restart(&opts, chain).await?,
    };
    summary(ctx, &g.project, what, &report);
    g.session
        .finish_offering_restore(ctx, &report, g.lock)
        .await
}

/// Before `up`: stateful services whose data would otherwise stay behind in an old place (a
/// compose container's anonymous volume, the volume of `harden: false`) get it copied to their
/// new volume, after a confirmation (`--yes` without a terminal).
async fn adopt_data(
    ctx: &Ctx,
    project: &Project,
    lc: &Lifecycle<'_>,
    services: &[String],
    chain: &mut crate::lifecycle::HookChain,
) -> anyhow::Result<()> {
    let plan = lc.data_moves(services).await?;
    if plan.moves.is_empty() && plan.conflicts.is_empty() {
        return Ok(());
    }
    if plan.conflicts.is_empty() {
        for line in crate::adopt::describe(&plan) {
            ctx.ui.warn(line);
        }
        let names: Vec<&str> = plan.moves.iter().map(|m| m.service.as_str()).collect();
        ctx.ui.confirm(
            &format!(
                "Copy the data of {} to the new volume (the service is stopped and snapshotted first; the old volume is kept)?",
                names.join(", ")
            ),
            &rerun_with_yes(),
        )?;
    }
    // The guard's census before the stop is compared with the one after the start.
    crate::adopt::run(lc.engine, project, lc, &plan, chain, &ctx.ui).await?;
    Ok(())
}

/// The services named on the command line, or the default ones (profiles honoured).
pub(super) fn selection(project: &Project, named: Vec<String>) -> Vec<String> {
    project.selection(&named)
}

/// One closing status line.
pub(super) fn summary(ctx: &Ctx, project: &Project, what: &str, r: &Report) {
    let mut parts = Vec::new();
    let volumes = |n: usize| crate::guard::census::plural(n, "volume", "volumes");
    for (n, label) in [
        (
            r.built.len(),
            format!(
                "{} built",
                crate::guard::census::plural(r.built.len(), "image", "images")
            ),
        ),
        (r.created.len(), "created".to_string()),
        (r.recreated.len(), "recreated".into()),
        (r.started.len(), "started".into()),
        (r.unchanged.len(), "unchanged".into()),
        (r.stopped.len(), "stopped".into()),
        (r.removed.len(), "removed".into()),
        (
            r.volumes_created.len(),
            format!("{} created", volumes(r.volumes_created.len())),
        ),
        (
            r.volumes_removed.len(),
            format!("{} removed", volumes(r.volumes_removed.len())),
        ),
    ] {
        if n > 0 {
            parts.push(format!("{n} {label}"));
        }
    }
    let detail = if parts.is_empty() {
        "nothing to do".to_string()
    } else {
        parts.join(", ")
    };
    ctx.ui
        .status(format!("{} {what}: {detail}", ctx.ui.bold(project.name())));
}

/// The command line as run, plus `--yes` (for confirmations without a terminal).
pub(super) fn rerun_with_yes() -> String {
    let mut words: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            if a.is_empty()
                || a.contains(|c: char| c.is_whitespace() || "'\"$`\\;&|<>()*?".contains(c))
            {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect();
    words.insert(0, "nodus".into());
    words.push("--yes".into());
    words.join(" ")
}

/// The static checks of `nodus doctor`, as one short block of errors and warnings on stderr.
/// Never blocks: any problem loading or checking is left to the command itself.
pub(super) async fn doctor_block(ctx: &Ctx) {
    let Ok((project, sources)) = crate::project::read_only(&ctx.global) else {
        return;
    };
    // The engine the command uses (`--context`, `-H`), for the images' facts; none is fine.
    let engine = ctx.engine().await.ok();
    let mut report =
        crate::doctor::static_report(engine.as_deref(), &project.stack, &sources).await;
    let x = &project.stack.nodus;
    let fixed = report.without_hardened(|svc| {
        x.services
            .get(svc)
            .and_then(|o| o.harden)
            .unwrap_or(x.harden)
    });
    if fixed > 0 {
        ctx.ui.detail(format!(
            "nodus doctor: {fixed} hazard(s) of the stack as written are fixed by nodus' hardening (`nodus doctor` lists them)"
        ));
    }
    let lines = report.short_block();
    if lines.is_empty() {
        return;
    }
    let mut msg = format!(
        "nodus doctor: {} error(s), {} warning(s) in the stack as written (`nodus doctor` explains each and the fix; `--no-doctor` skips this):",
        report.errors(),
        report.count(crate::doctor::Severity::Warning)
    );
    for l in lines {
        msg.push_str("\n         ");
        msg.push_str(&l);
    }
    ctx.ui.warn(msg);
}
