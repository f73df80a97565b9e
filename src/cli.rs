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
    /// Bring the stack up, then restart/recreate/sync services when their files change (guarded),
    /// with a live census between transitions
    Watch(WatchArgs),
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
pub struct WatchArgs {
    /// Services to watch (default: all)
    pub services: Vec<String>,
    /// Quiet period that batches a burst of changes into one action per service, e.g. 500ms
    #[arg(long, default_value = "500ms")]
    pub debounce: String,
    /// Poll for changes (for file systems without events: VM shares, network mounts) every
    /// INTERVAL [default when given without a value: 1s]
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "1s")]
    pub poll: Option<String>,
    /// Census of the running stack this often; a table or database that vanishes between two
    /// censuses is alerted at once (`off` disables it)
    #[arg(long, value_name = "DURATION|off", default_value = "30s")]
    pub verify_every: String,
    /// On Ctrl-C / SIGTERM run a guarded `down` instead of leaving the stack running
    #[arg(long)]
    pub down_on_exit: bool,
    /// How long to wait for each service to become healthy, e.g. 120s
    #[arg(long, default_value = "120s")]
    pub timeout: String,
}
