//! `nodus run [--rm] [-T] [-e K=V] [--with-data] SERVICE [CMD...]`: a one-off container.

use super::Ctx;
use crate::cli::RunArgs;
use crate::engine::RunState;
use crate::lifecycle::Lifecycle;
use crate::session::{self, oneoff, tty};

pub async fn run(ctx: &Ctx, a: RunArgs) -> anyhow::Result<()> {
    super::exec::refuse_json(ctx, "run")?;
    let project = ctx.project()?;
    project
        .stack
        .check_services(std::slice::from_ref(&a.service))?;
    let engine = ctx.engine().await?;
    let lc = Lifecycle::for_project(&*engine, &project, &ctx.ui);
    let built = lc.build_spec(&a.service)?;
    let running = session::containers(
        &*engine,
        project.name(),
        std::slice::from_ref(&a.service),
        false,
    )
    .await?
    .iter()
    .any(|c| c.container.state == RunState::Running);
    let o = oneoff::OneOff {
        name: a.name,
        command: a.command,
        entrypoint: a
            .entrypoint
            .map(|e| e.split_whitespace().map(str::to_string).collect()),
        user: a.user,
        workdir: a.workdir,
        env: session::env_args(&a.env),
        tty: tty::want_tty(a.no_tty),
        rm: a.rm,
        with_data: a.with_data,
        service_ports: a.service_ports,
    };
    let spec = oneoff::prepare(
        project.name(),
        &a.service,
        built.spec,
        project.hardened.stateful_service(&a.service),
        running,
        &o,
        &oneoff::random_suffix(),
    )?;
    ctx.ui.detail(format!("one-off container {}", spec.name));
    let code = oneoff::run(&*engine, &spec, o.rm).await?;
    super::exec::exit_with(code)
}
