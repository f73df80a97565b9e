//! One file per subcommand. Commands are thin: they load the project, take the lock, call the
//! domain modules and print. No business logic here.

pub mod backup;
pub mod build;
pub mod census;
pub mod doctor;
pub mod down;
pub mod hooks;
pub mod import;
pub mod init;
pub mod render;
pub mod restart;
pub mod snapshot;
pub mod start;
pub mod status;
pub mod stop;
pub mod test_persistence;
pub mod up;
pub mod verify;
// compose habits
pub mod completion;
pub mod config;
pub mod exec;
pub mod logs;
pub mod port;
pub mod ps;
pub mod psql;
pub mod pull;
pub mod run;
pub mod top;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::engine::{DockerEngine, Engine};
use crate::error::UsageError;
use crate::lifecycle::Transition;
use crate::output::Ui;
use crate::project::Project;
use crate::state::StackLock;
use hooks::{Session, SessionOptions};

/// What every command gets.
pub struct Ctx {
    pub global: GlobalArgs,
    pub ui: Ui,
    /// The engine connection, made once per command (see [`Ctx::engine`]).
    engine: tokio::sync::OnceCell<Arc<dyn Engine>>,
}

impl Ctx {
    pub fn new(global: GlobalArgs, ui: Ui) -> Ctx {
        Ctx {
            global,
            ui,
            engine: tokio::sync::OnceCell::new(),
        }
    }

    pub fn project(&self) -> anyhow::Result<Project> {
        let p = crate::project::load(&self.global, &self.ui)?;
        crate::interrupt::set_project(p.name());
        crate::guard::pg::route::init(p.state.root(), &self.ui);
        Ok(p)
    }

    /// Connects to the engine the docker CLI would use, honouring `--context` and `-H`.
    /// The engine of `--context`/`-H`: connected (version negotiation, ping) on the first call
    /// only; later calls of the same command share that connection (`up`'s doctor block and the
    /// transition use one engine). A failed connection is not kept: the next call tries again.
    pub async fn engine(&self) -> anyhow::Result<Arc<dyn Engine>> {
        let e = self
            .engine
            .get_or_try_init(|| async {
                let req = crate::engine::resolve::Request {
                    context: self.global.context.clone(),
                    host: self.global.host.clone(),
                };
                let engine = DockerEngine::connect_with(&req).await?;
                self.ui.detail(format!("engine: {}", engine.origin()));
                let e: Arc<dyn Engine> = Arc::new(engine);
                crate::interrupt::set_engine(e.clone());
                Ok::<_, anyhow::Error>(e)
            })
            .await?;
        Ok(e.clone())
    }

    /// Takes the stack's lifecycle lock, saying so when another command holds it.
    pub fn lock(&self, project: &Project) -> anyhow::Result<StackLock> {
        let timeout = parse_duration_arg("--lock-timeout", &self.global.lock_timeout)?;
        let path = project.state.lock_path();
        let ui = self.ui.clone();
        let lock = StackLock::acquire(&path, timeout, || {
            ui.status(format!(
                "waiting for another nodus command on this stack to finish (lock {}, up to {}s)...",
                path.display(),
                timeout.as_secs()
            ))
        })
        .context("taking the stack lock")?;
        Ok(lock)
    }

    /// [`Ctx::lock`] waiting on the async runtime (Ctrl-C works while waiting).
    pub async fn lock_async(&self, project: &Project) -> anyhow::Result<StackLock> {
        let timeout = parse_duration_arg("--lock-timeout", &self.global.lock_timeout)?;
        let path = project.state.lock_path();
        let ui = self.ui.clone();
        let lock = StackLock::acquire_async(&path, timeout, || {
            ui.status(format!(
                "waiting for another nodus command on this stack to finish (lock {}, up to {}s)...",
                path.display(),
                timeout.as_secs()
            ))
        })
        .await
        .context("taking the stack lock")?;
        Ok(lock)
    }

    /// The common start of a guarded lifecycle command: checks the named services (none = all),
    /// takes the stack lock, connects to the engine and opens the hook session (guard +
    /// snapshots) for `transition`.
    pub async fn guarded(
        &self,
        project: Project,
        services: &[String],
        transition: Transition,
        opts: SessionOptions,
    ) -> anyhow::Result<Guarded> {
        project.stack.check_services(services)?;
        if matches!(
            transition,
            Transition::Up | Transition::Start | Transition::Restart
        ) {
            check_environment(&project, services)?;
        }
        let lock = self.lock_async(&project).await?;
        let earlier = crate::state::journal::begin(
            &project.state,
            crate::guard::transition_name(transition),
            crate::interrupt::command_line(),
        )?;
        if let Some(r) = earlier {
            self.ui.warn(format!(
                "the last {}; this `{}` puts right what it left (the engine's state is read afresh)",
                r.describe(),
                crate::guard::transition_name(transition)
            ));
        }
        let engine = self.engine().await?;
        let session = Session::new(self, &project, engine.clone(), transition, opts)?;
        Ok(Guarded {
            project,
            engine,
            session,
            lock,
        })
    }
}

/// Everything the services to start need from the environment (role passwords of `x-nodus`),
/// checked before anything is created: all that is missing, in one error.
fn check_environment(project: &Project, services: &[String]) -> anyhow::Result<()> {
    let wanted = crate::stack::plan::start_order(&project.stack.compose, services)?;
    let missing =
        crate::guard::provision::missing_passwords(&project.stack.nodus, &project.env, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the stack needs environment variables that are not set; nothing was created or started:\n  {}",
        missing.join("\n  ")
    )
}

/// What [`Ctx::guarded`] sets up. Hold `lock` until the command is done.
pub struct Guarded {
    pub project: Project,
    pub engine: Arc<dyn Engine>,
    pub session: Session,
    pub lock: StackLock,
}

/// `nodus` plus the global flags needed to address this stack again (`-f`, `-p`, `--state-dir`),
/// for commands printed to the user.
pub fn nodus_cmd(ctx: &Ctx, project: &Project) -> String {
    let mut s = String::from("nodus");
    for f in &ctx.global.stack {
        s.push_str(&format!(" -f {}", shell_word(&f.display().to_string())));
    }
    if project.stack.project_source == crate::stack::ProjectSource::Flag {
        s.push_str(&format!(" -p {}", project.name()));
    }
    if let Some(c) = &ctx.global.context {
        s.push_str(&format!(" --context {}", shell_word(c)));
    }
    if let Some(h) = &ctx.global.host {
        s.push_str(&format!(" -H {}", shell_word(h)));
    }
    if let Some(d) = &ctx.global.state_dir {
        s.push_str(&format!(
            " --state-dir {}",
            shell_word(&d.display().to_string())
        ));
    }
    s
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// Parses a user-supplied duration flag, as a usage error when malformed.
pub fn parse_duration_arg(flag: &str, value: &str) -> anyhow::Result<Duration> {
    crate::stack::duration::parse_duration(value)
        .map_err(|e| UsageError(format!("{flag}: {e}")).into())
}

pub async fn dispatch(cli: Cli, ui: Ui) -> anyhow::Result<()> {
    let ctx = Ctx::new(cli.global, ui);
    match cli.command {
        Command::Render(a) => render::run(&ctx, a).await,
        Command::Up(a) => up::run(&ctx, a).await,
        Command::Down(a) => down::run(&ctx, a).await,
        Command::Stop(a) => stop::run(&ctx, a).await,
        Command::Start(a) => start::run(&ctx, a).await,
        Command::Restart(a) => restart::run(&ctx, a).await,
        Command::Status => status::run(&ctx).await,
        Command::Census(a) => census::run(&ctx, a).await,
        Command::Verify(a) => verify::run(&ctx, a).await,
        Command::Snapshot(c) => snapshot::run(&ctx, c).await,
        Command::Backup(a) => backup::run(&ctx, a).await,
        Command::Ps(a) => ps::run(&ctx, a).await,
        Command::Logs(a) => logs::run(&ctx, a).await,
        Command::Exec(a) => exec::run(&ctx, a).await,
        Command::Run(a) => run::run(&ctx, a).await,
        Command::Port(a) => port::run(&ctx, a).await,
        Command::Config(a) => config::run(&ctx, a).await,
        Command::Pull(a) => pull::run(&ctx, a).await,
        Command::Build(a) => build::run(&ctx, a).await,
        Command::Top(a) => top::run(&ctx, a).await,
        Command::Psql(a) => psql::psql(&ctx, a).await,
        Command::RedisCli(a) => psql::redis_cli(&ctx, a).await,
        Command::Completion(a) => completion::completion(&ctx, a),
        Command::Man => completion::man(&ctx),
        Command::Doctor(a) => doctor::run(&ctx, a).await,
        Command::Import(a) => import::run(&ctx, a).await,
        Command::Watch(a) => watch::run(&ctx, a).await,
        Command::TestPersistence(a) => test_persistence::run(&ctx, a).await,
        Command::Init(a) => init::run(&ctx, a),
    }
}
