//! `nodus down [--volumes] [--timeout 30s] [--no-snapshot]`

use super::hooks::SessionOptions;
use super::{parse_duration_arg, Ctx};
use crate::lifecycle::{spec, DownOptions, Lifecycle, Transition};

pub async fn run(ctx: &Ctx, args: crate::cli::DownArgs) -> anyhow::Result<()> {
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| parse_duration_arg("--timeout", t))
        .transpose()?;
    let project = ctx.project()?;
    if !args.volumes && dash_v_after_down(std::env::args().skip(1)) {
        // compose's `down -v` removes the volumes; nodus' `-v` is --verbose. Say so, once.
        ctx.ui.warn(
            "`-v` is nodus' --verbose: the volumes are kept (compose's `down -v` is `nodus down --volumes`)",
        );
    }
    if args.volumes {
        // Asked before anything is touched; without a terminal this needs --yes.
        let names: Vec<String> = spec::stack_volumes(project.name(), &project.hardened.compose)
            .into_iter()
            .filter(|v| !v.external)
            .map(|v| v.name)
            .collect();
        if !names.is_empty() {
            ctx.ui.confirm(
                &format!("Remove volumes {} (all data in them)?", names.join(", ")),
                &super::up::rerun_with_yes(),
            )?;
        }
    }
    let opts = SessionOptions {
        no_snapshot: args.no_snapshot,
        ..Default::default()
    };
    let mut g = ctx.guarded(project, &[], Transition::Down, opts).await?;
    let lc = Lifecycle::for_project(&*g.engine, &g.project, &ctx.ui);
    let opts = DownOptions {
        remove_volumes: args.volumes,
        timeout,
    };
    if args.volumes {
        // Deleting the data on purpose: the next start is a new baseline, not a loss.
        g.session.removing_volumes();
    }
    let report = lc.down(&opts, &mut g.session.chain).await?;
    super::up::summary(ctx, &g.project, "down", &report);
    g.session.finish(ctx, &report)
}

/// Whether a bare `-v` follows the `down` command word among the command-line `args` (without
/// the program name): what compose users type for `down --volumes`.
fn dash_v_after_down(args: impl IntoIterator<Item = String>) -> bool {
    let mut after = false;
    for a in args {
        if a == "--" {
            return false;
        }
        if after && a == "-v" {
            return true;
        }
        if a == "down" {
            after = true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::dash_v_after_down;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn compose_habit_down_dash_v_is_noticed() {
        assert!(dash_v_after_down(argv("down -v")));
        assert!(dash_v_after_down(argv("-p x down --timeout 5s -v")));
        assert!(
            !dash_v_after_down(argv("-v down")),
            "verbose asked before the command"
        );
        assert!(!dash_v_after_down(argv("down --verbose")));
        assert!(
            dash_v_after_down(argv("-p down down -v")),
            "a project named down"
        );
        assert!(!dash_v_after_down(argv("down -- -v")));
        assert!(!dash_v_after_down(argv("down")));
    }
}
