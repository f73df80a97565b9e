//! `nodus watch [SERVICE...] [--debounce 500ms] [--poll [INTERVAL]] [--verify-every 30s|off]
//! [--down-on-exit]`: parses the flags and lends the watch (`src/watch/`) the guarded
//! transitions of the other lifecycle commands.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::hooks::{Session, SessionOptions};
use super::{parse_duration_arg, Ctx, Guarded};
use crate::engine::Engine;
use crate::lifecycle::{DownOptions, Lifecycle, Transition, UpOptions};
use crate::output::Ui;
use crate::project::Project;
use crate::state::StackLock;
use crate::watch::{Done, Driver, Op, Options};

pub async fn run(ctx: &Ctx, args: crate::cli::WatchArgs) -> anyhow::Result<()> {
    let verify_every = match args.verify_every.as_str() {
        "off" | "0" | "none" => None,
        v => Some(parse_duration_arg("--verify-every", v)?),
    };
    let opts = Options {
        services: args.services,
        debounce: parse_duration_arg("--debounce", &args.debounce)?,
        poll: args
            .poll
            .as_deref()
            .map(|p| parse_duration_arg("--poll", p))
            .transpose()?
            .map(|d| d.max(Duration::from_millis(10))),
        verify_every: verify_every.filter(|d| !d.is_zero()),
        down_on_exit: args.down_on_exit,
    };
    let driver = CommandDriver {
        ctx,
        timeout: parse_duration_arg("--timeout", &args.timeout)?,
        engine: std::cell::RefCell::new(None),
    };
    crate::watch::run(&driver, opts).await
}

struct CommandDriver<'a> {
    ctx: &'a Ctx,
    timeout: Duration,
    /// One engine connection for the whole watch (connecting negotiates the API version).
    engine: std::cell::RefCell<Option<Arc<dyn Engine>>>,
}

#[async_trait(?Send)]
impl Driver for CommandDriver<'_> {
    fn ui(&self) -> &Ui {
        &self.ctx.ui
    }

    fn load(&self) -> anyhow::Result<Project> {
        self.ctx.project()
    }

    async fn engine(&self) -> anyhow::Result<Arc<dyn Engine>> {
        if let Some(e) = self.engine.borrow().as_ref() {
            return Ok(e.clone());
        }
        let e = self.ctx.engine().await?;
        *self.engine.borrow_mut() = Some(e.clone());
        Ok(e)
    }

    async fn transition(&self, project: &Project, op: Op) -> anyhow::Result<Done> {
        let (transition, services) = match &op {
            Op::Up(s) | Op::Recreate(s) => (Transition::Up, s.clone()),
            Op::Restart(s) => (Transition::Restart, s.clone()),
            Op::Down => (Transition::Down, Vec::new()),
        };
        // What `Ctx::guarded` does, on the watch's engine connection.
        project.stack.check_services(&services)?;
        let lock = self.ctx.lock(project)?;
        let engine = self.engine().await?;
        let session = Session::new(
            self.ctx,
            project,
            engine.clone(),
            transition,
            SessionOptions {
                services: services.clone(),
                ..Default::default()
            },
        )?;
        let mut g = Guarded {
            project: project.clone(),
            engine,
            session,
            lock,
        };
        let ui = &self.ctx.ui;
        let lc = Lifecycle::for_project(&*g.engine, &g.project, ui);
        let up = UpOptions {
            services,
            timeout: self.timeout,
            ..UpOptions::default()
        };
        let chain = &mut g.session.chain;
        let report = match op {
            Op::Up(_) => lc.up(&up, chain).await?,
            Op::Recreate(_) => lc.recreate(&up, chain).await?,
            Op::Restart(_) => lc.restart(&up, chain).await?,
            Op::Down => {
                let down = DownOptions {
                    remove_volumes: false,
                    timeout: None,
                };
                lc.down(&down, chain).await?
            }
        };
        let c = g.session.conclude(self.ctx, &report);
        drop(g.lock);
        let lost = c
            .verdict
            .as_ref()
            .map(|v| {
                v.services
                    .iter()
                    .filter(|(_, s)| s.status == crate::guard::verdict::Status::Loss)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Done {
            json: c.json(&report),
            loss: c.loss(),
            lost,
            report,
        })
    }

    fn try_lock(&self, project: &Project) -> Option<StackLock> {
        StackLock::acquire(&project.state.lock_path(), Duration::ZERO, || {}).ok()
    }

    fn restore_command(
        &self,
        project: &Project,
        service: &str,
        before: &str,
        missing: Option<&crate::guard::diff::ServiceDiff>,
    ) -> Option<String> {
        super::hooks::restore_lookup(self.ctx, project)(service, before, missing).command
    }
}
