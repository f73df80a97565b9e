//! One file per subcommand. Commands are thin: they load the project, take the lock, call the
//! domain modules and print. No business logic here.

pub mod backup;
pub mod census;
pub mod down;
pub mod hooks;
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
}

impl Ctx {
    pub fn project(&self) -> anyhow::Result<Project> {
        crate::project::load(&self.global, &self.ui)
    }

    pub async fn engine(&self) -> anyhow::Result<Arc<dyn Engine>> {
        Ok(Arc::new(DockerEngine::connect().await?))
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
        let lock = self.lock(&project)?;
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
    let ctx = Ctx {
        global: cli.global,
        ui,
    };
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
        Command::TestPersistence(a) => test_persistence::run(&ctx, a).await,
        Command::Init(a) => init::run(&ctx, a),
    }
}
