//! Command-line interface (clap). Definitions only: no logic.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "nodus",
    version,
    about = "Run your Docker dev stack without ever losing data silently",
    long_about = "nodus replaces `docker compose up/down` for stacks with databases: it hardens the \
stack (named volumes, clean stop signals, health checks), records what every database holds before \
each transition and checks it after, and snapshots volumes so anything lost can be put back.",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 data loss detected, 4 engine unreachable."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Stack file(s); later files override earlier ones [default: nodus.yaml, compose.yaml,
    /// docker-compose.yml (+ docker-compose.override.yml)]
    #[arg(
        short = 'f',
        long = "stack",
        global = true,
        env = "NODUS_STACK",
        value_delimiter = ':'
    )]
    pub stack: Vec<PathBuf>,
    /// Project name [default: COMPOSE_PROJECT_NAME, `name:` in the stack, or the directory name]
    #[arg(short = 'p', long = "project-name", global = true)]
    pub project_name: Option<String>,
    /// State directory [default: .nodus beside the stack file]
    #[arg(long, global = true, env = "NODUS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Answer yes to confirmations (required without a terminal)
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,
    /// Only warnings and errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail (repeat for debug logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How long to wait for another nodus command holding the stack's lock, e.g. 120s
    #[arg(long, global = true, default_value = "300s")]
    pub lock_timeout: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the hardened compose file (default .nodus/compose.yaml; `-o -` prints it)
    Render(RenderArgs),
    /// Create and start the stack (or SERVICEs), wait until healthy, and check no data was lost
    Up(UpArgs),
    /// Stop and remove the containers and network; volumes are kept
    Down(DownArgs),
    /// Stop services (containers are kept)
    Stop(StopArgs),
    /// Start stopped services
    Start(UpArgs),
    /// Stop and start services
    Restart(RestartArgs),
    /// Show services, containers, state, health, image and volumes
    Status,
    /// Show what every database holds (tables and exact row counts)
    Census(CensusArgs),
    /// Compare what the databases hold now with the last recorded census; exit 3 on loss
    Verify(VerifyArgs),
    /// Volume snapshots
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Logical backups (pg_dumpall)
    Backup(BackupArgs),
    /// Assert that the data survives restarts: sentinels, N guarded cycles, JUnit/JSON reports;
    /// exit 3 on any loss
    TestPersistence(TestPersistenceArgs),
    /// Write a starter nodus.yaml (and a CI workflow) from the built-in templates
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Output file; `-` for stdout
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Services (default: all)
    pub services: Vec<String>,
    /// How long to wait for each service to become healthy, e.g. 120s, 2m
    #[arg(long, default_value = "120s")]
    pub timeout: String,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also remove the stack's volumes (asks first; `--yes` without a terminal)
    #[arg(long)]
    pub volumes: bool,
    /// Override every service's stop grace period, e.g. 30s
    #[arg(long)]
    pub timeout: Option<String>,
    /// Do not snapshot stateful volumes
    #[arg(long)]
    pub no_snapshot: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    pub services: Vec<String>,
    #[arg(long)]
    pub timeout: Option<String>,
    #[arg(long)]
    pub no_snapshot: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    pub services: Vec<String>,
    /// How long to wait for each service to become healthy
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    #[arg(long)]
    pub no_snapshot: bool,
}

#[derive(Debug, Args)]
pub struct CensusArgs {
    /// Only this service
    pub service: Option<String>,
    /// Use planner estimates instead of exact row counts
    #[arg(long)]
    pub fast: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Record the current census as the new baseline (intentional changes)
    #[arg(long)]
    pub accept: bool,
    #[arg(long)]
    pub fast: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stop services cleanly, snapshot their volumes, start them again
    Create { services: Vec<String> },
    /// List snapshots
    List,
    /// Show one snapshot's manifest
    Show { id: String },
    /// Recompute checksums and read archives to the end
    Verify {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete a snapshot
    Delete { id: String },
    /// Apply the retention policy (x-nodus.snapshots.keep)
    Prune {
        #[arg(long)]
        dry_run: bool,
    },
    /// Put a snapshot back into its volume (a safety snapshot is taken first)
    Restore {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        latest: bool,
        /// Restrict to these services
        #[arg(long = "service")]
        services: Vec<String>,
        /// Skip the safety snapshot of the current volume
        #[arg(long)]
        no_safety: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    /// Postgres service to back up (default: the only/first postgres service)
    pub service: Option<String>,
    /// Output file (default: the state dir's backups/)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Load a backup with psql and check the census afterwards
    Restore {
        file: PathBuf,
        #[arg(long)]
        service: Option<String>,
    },
    /// List backups
    List,
}

#[derive(Debug, Args)]
pub struct TestPersistenceArgs {
    /// Number of restart cycles after the initial up
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub cycles: u32,
    /// Start the whole stack each cycle (app services' start-up is part of the test); by default
    /// only stateful services are cycled
    #[arg(long)]
    pub with_services: bool,
    /// The transition of each cycle: guarded down then up, guarded restart, or SIGKILL of the
    /// database containers then up
    #[arg(long, value_enum, default_value_t = RestartKindArg::DownUp)]
    pub restart_kind: RestartKindArg,
    /// Write a JUnit XML report to FILE (a testsuite per cycle, a testcase per database and redis)
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Run on a throwaway project (name printed); its containers, network and volumes are removed
    /// at the end, also on failure or Ctrl-C
    #[arg(long)]
    pub ephemeral: bool,
    /// Do not snapshot volumes at each down
    #[arg(long)]
    pub no_snapshot: bool,
    /// How long to wait for each service to become healthy, e.g. 120s, 2m
    #[arg(long, default_value = "120s")]
    pub timeout: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartKindArg {
    /// Guarded down (snapshot unless --no-snapshot), then up
    DownUp,
    /// Guarded restart
    Restart,
    /// SIGKILL the database containers, then up (must report the unclean shutdown)
    Kill,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The stack template to start from
    #[arg(long, value_enum, default_value_t = TemplateArg::Dev)]
    pub template: TemplateArg,
    /// Also write a CI job running `nodus test-persistence`
    #[arg(long, value_enum)]
    pub ci: Option<CiArg>,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
    /// Directory to write into [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TemplateArg {
    /// PostgreSQL and Redis for development
    Dev,
    /// The nodus-adk stack
    NodusAdk,
    /// The zentoria stack
    Zentoria,
    /// The orquix stack
    Orquix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CiArg {
    /// .github/workflows/nodus-persistence.yml
    Github,
    /// .gitlab-ci.yml (JUnit under artifacts:reports:junit)
    Gitlab,
}
