//! Command-line interface (clap). Definitions only: no logic.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The version `--version` shows: the crate version and, when built from a git checkout, the commit
/// (set by build.rs).
pub const VERSION: &str = match option_env!("NODUS_LONG_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

#[derive(Debug, Parser)]
#[command(
    name = "nodus",
    version = VERSION,
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
    /// Docker context to use (as `docker --context`; `docker context ls` lists them)
    /// [default: DOCKER_CONTEXT, else currentContext in ~/.docker/config.json]
    #[arg(long, global = true, conflicts_with = "host")]
    pub context: Option<String>,
    /// Engine address: unix:///path, tcp://host:port, ssh://[user@]host[:port] (as `docker -H`)
    /// [default: DOCKER_HOST]
    #[arg(short = 'H', long, global = true)]
    pub host: Option<String>,
    /// How long to wait for another nodus command holding the stack's lock, e.g. 120s
    #[arg(long, global = true, default_value = "300s")]
    pub lock_timeout: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the hardened compose file (default .nodus/compose.yaml; `-o -` prints it)
    Render(RenderArgs),
    /// Create and start the stack (or SERVICEs), wait until healthy, and check no data was lost
    #[command(
        after_help = "Examples:\n  nodus up                    start everything (always detached; -d is accepted)\n  nodus up db                 start db and what it depends on\n  nodus up --force-recreate   recreate every container (data volumes are kept)\n  nodus up --remove-orphans   also stop (guarded) and remove services deleted from the file"
    )]
    Up(UpArgs),
    /// Stop and remove the containers and network; volumes are kept
    #[command(
        after_help = "Examples:\n  nodus down                 stop and remove the stack (volumes and data stay)\n  nodus down --volumes --yes also delete the volumes (asks first on a terminal)"
    )]
    Down(DownArgs),
    /// Stop services (containers are kept)
    Stop(StopArgs),
    /// Start stopped services
    Start(StartArgs),
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
    /// Bring the stack up, then restart/recreate/sync services when their files change (guarded),
    /// with a live census between transitions
    Watch(WatchArgs),
    /// Name the persistence hazards of the stack (exit 1 when one is an error)
    Doctor(DoctorArgs),
    /// Write a nodus stack file from a compose file, hardening made explicit (never edits it)
    Import(ImportArgs),
    /// List the stack's containers (compose's columns; `status` adds the guard's view)
    #[command(
        after_help = "Examples:\n  nodus ps            running containers\n  nodus ps -a         stopped ones too\n  nodus -q ps         container IDs only (the global -q)\n  nodus ps --format json"
    )]
    Ps(PsArgs),
    /// Show container output; several services are interleaved with a service prefix
    #[command(
        after_help = "Examples:\n  nodus logs -f                 follow every service (Ctrl-C to stop)\n  nodus logs --tail 50 db       the last 50 lines of db\n  nodus logs --since 10m -t api api's last 10 minutes, with timestamps"
    )]
    Logs(LogsArgs),
    /// Run a command in a running service container (TTY when on a terminal; exit code passed through)
    #[command(
        after_help = "Examples:\n  nodus exec db bash\n  nodus exec -T db pg_dump -U app app > dump.sql\n  echo 'select 1' | nodus exec -T db psql -U app"
    )]
    Exec(ExecArgs),
    /// Run a one-off command in a new container of a service (never on a stateful service's data
    /// volume unless --with-data)
    #[command(
        after_help = "Examples:\n  nodus run --rm api ./manage.py migrate\n  nodus run --rm db psql --version"
    )]
    Run(RunArgs),
    /// Print the host address a service's port is published on
    #[command(after_help = "Example:\n  nodus port db 5432     prints e.g. 127.0.0.1:49153")]
    Port(PortArgs),
    /// Print the merged, interpolated stack model (like `docker compose config`)
    #[command(
        after_help = "Examples:\n  nodus config              the stack as written, merged and interpolated\n  nodus config --hardened   what nodus runs (named volumes, stop signals, health checks)\n  nodus config --services   service names, one per line"
    )]
    Config(ConfigArgs),
    /// Pull the services' images (a progress bar per image on a terminal)
    Pull(PullArgs),
    /// Build the images of `build:` services without starting anything
    #[command(
        after_help = "Examples:\n  nodus build                 build every `build:` service's image\n  nodus build api --no-cache  rebuild api's image from scratch\n  nodus build --dry-run       context size, hash and whether a build is needed, per image"
    )]
    Build(BuildArgs),
    /// Show the processes running in each service container
    Top(TopArgs),
    /// Open psql in a postgres service container as its configured user
    #[command(
        after_help = "Examples:\n  nodus psql                      interactive session on the postgres service\n  nodus psql -d app -- -c 'select count(*) from users'"
    )]
    Psql(PsqlArgs),
    /// Open redis-cli in a redis service container
    #[command(name = "redis-cli")]
    RedisCli(RedisCliArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    #[command(
        after_help = "Examples:\n  nodus completion bash > ~/.local/share/bash-completion/completions/nodus\n  nodus completion zsh > \"${fpath[1]}/_nodus\"\n  nodus completion fish > ~/.config/fish/completions/nodus.fish"
    )]
    Completion(CompletionArgs),
    /// Print the man page (roff; `nodus man | man -l -`)
    Man,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Services (default: all)
    pub services: Vec<String>,
    /// Show stopped containers too
    #[arg(short, long)]
    pub all: bool,
    /// Output format (`--json` is the same as `--format json`)
    #[arg(long, value_enum, default_value = "table")]
    pub format: PsFormat,
    /// Print service names only, one per line
    #[arg(long = "services", id = "print_services")]
    pub print_services: bool,
}

/// `ps --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PsFormat {
    /// Aligned columns
    Table,
    /// One JSON document
    Json,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Services (default: all)
    pub services: Vec<String>,
    /// Follow the output until Ctrl-C (`-f` after `logs` means follow, as in compose)
    #[arg(long)]
    pub follow: bool,
    /// Number of lines from the end of each service's log, or `all`
    #[arg(long, default_value = "all")]
    pub tail: String,
    /// Only lines since a time: a duration ago (10m, 2h) or a timestamp (2024-01-02T15:04:05Z)
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines until a time (same forms as --since)
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    /// No service prefix
    #[arg(long)]
    pub no_log_prefix: bool,
    /// No colours in the prefix
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Do not allocate a TTY (default: a TTY when stdin and stdout are terminals)
    #[arg(short = 'T', long = "no-tty")]
    pub no_tty: bool,
    /// Run as this user (name or uid[:gid])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Set an environment variable (KEY=VALUE; KEY alone takes it from your environment)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Service to run the command in
    pub service: String,
    /// Command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when the command ends
    #[arg(long)]
    pub rm: bool,
    /// Do not allocate a TTY (default: a TTY when stdin and stdout are terminals)
    #[arg(short = 'T', long = "no-tty")]
    pub no_tty: bool,
    /// Run as this user (name or uid[:gid])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Set an environment variable (KEY=VALUE; KEY alone takes it from your environment)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Override the image's entrypoint
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container name (default: PROJECT-SERVICE-run-RANDOM)
    #[arg(long)]
    pub name: Option<String>,
    /// Mount a stateful service's data volume too (refused while the service is running: two
    /// database servers on one data directory corrupt it)
    #[arg(long)]
    pub with_data: bool,
    /// Publish the service's ports as well (off by default, as in compose)
    #[arg(long)]
    pub service_ports: bool,
    /// Service whose image and configuration the container uses
    pub service: String,
    /// Command and its arguments (default: the service's command)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// Service
    pub service: String,
    /// Container port
    pub private_port: u16,
    /// Protocol
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print what nodus runs (the hardened model) instead of the stack as written
    #[arg(long)]
    pub hardened: bool,
    /// Print service names only, one per line
    #[arg(long)]
    pub services: bool,
    /// Print volume names only, one per line
    #[arg(long)]
    pub volumes: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: ConfigFormat,
}

/// `config --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    /// YAML (compose's default)
    Yaml,
    /// JSON
    Json,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Services (default: all)
    pub services: Vec<String>,
    /// Continue with the other images when one cannot be pulled
    #[arg(long)]
    pub ignore_pull_failures: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Services (default: every service with `build:`)
    pub services: Vec<String>,
    /// Do not use the engine's build cache
    #[arg(long)]
    pub no_cache: bool,
    /// Pull newer versions of the base images
    #[arg(long)]
    pub pull: bool,
    /// Print per image the context (files, bytes, hash) and whether a build is needed; build
    /// nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Services (default: all running)
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsqlArgs {
    /// Postgres service (default: the only/first postgres service)
    pub service: Option<String>,
    /// Database to connect to (default: the service's POSTGRES_DB, else its user)
    #[arg(short = 'd', long)]
    pub dbname: Option<String>,
    /// Role to connect as (default: the service's POSTGRES_USER)
    #[arg(short = 'U', long)]
    pub username: Option<String>,
    /// Run one command and exit (psql -c)
    #[arg(short = 'c', long)]
    pub command: Option<String>,
    /// Do not allocate a TTY (default: a TTY when stdin and stdout are terminals)
    #[arg(short = 'T', long = "no-tty")]
    pub no_tty: bool,
    /// Arguments passed to psql (after `--`)
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RedisCliArgs {
    /// Redis service (default: the only/first redis service)
    pub service: Option<String>,
    /// Do not allocate a TTY (default: a TTY when stdin and stdout are terminals)
    #[arg(short = 'T', long = "no-tty")]
    pub no_tty: bool,
    /// Arguments passed to redis-cli (after `--`)
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to generate the script for
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// Shells `nodus completion` supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// Bash
    Bash,
    /// Zsh
    Zsh,
    /// Fish
    Fish,
    /// PowerShell
    Powershell,
    /// Elvish
    Elvish,
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
    /// Accepted for compose habits: nodus always returns once the stack is up (detached)
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Accepted for compose habits: nodus always waits until services are healthy
    #[arg(long)]
    pub wait: bool,
    /// Also stop (guarded, with a census first) and remove containers of services no longer in
    /// the stack file
    #[arg(long)]
    pub remove_orphans: bool,
    /// Recreate containers even if their configuration did not change (volumes are kept)
    #[arg(long, conflicts_with = "no_recreate")]
    pub force_recreate: bool,
    /// Never recreate existing containers, even if their configuration changed
    #[arg(long)]
    pub no_recreate: bool,
    /// Do not start the services the named SERVICEs depend on
    #[arg(long)]
    pub no_deps: bool,
    /// When to pull images: missing (default, only absent ones), always, never
    #[arg(long, value_enum, default_value = "missing")]
    pub pull: PullPolicy,
    /// Skip the static checks of `nodus doctor` printed before starting
    #[arg(long)]
    pub no_doctor: bool,
    /// Build the images of `build:` services even when they are up to date
    #[arg(long, conflicts_with = "no_build")]
    pub build: bool,
    /// Never build images; a `build:` service whose image is missing is an error
    #[arg(long)]
    pub no_build: bool,
}

/// `up --pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull every image before creating containers
    Always,
    /// Pull only images not present locally
    Missing,
    /// Never pull; fail when an image is missing
    Never,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Services (default: all)
    pub services: Vec<String>,
    /// How long to wait for each service to become healthy, e.g. 120s, 2m
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    /// Skip the static checks of `nodus doctor` printed before starting
    #[arg(long)]
    pub no_doctor: bool,
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
    /// Accepted for compose habits: `down` always removes (guarded) containers of services no
    /// longer in the stack file
    #[arg(long)]
    pub remove_orphans: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Services (default: all)
    pub services: Vec<String>,
    /// Override every service's stop grace period, e.g. 30s
    #[arg(long)]
    pub timeout: Option<String>,
    /// Do not snapshot stateful volumes
    #[arg(long)]
    pub no_snapshot: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Services (default: all)
    pub services: Vec<String>,
    /// How long to wait for each service to become healthy
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    /// Do not snapshot stateful volumes
    #[arg(long, conflicts_with = "snapshot")]
    pub no_snapshot: bool,
    /// Snapshot stateful volumes even when only databases restart (see
    /// `x-nodus.snapshots.on_restart`)
    #[arg(long)]
    pub snapshot: bool,
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
    /// Use planner estimates instead of exact row counts
    #[arg(long)]
    pub fast: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stop services cleanly, snapshot their volumes, start them again
    Create {
        /// Stateful services to snapshot (default: all)
        services: Vec<String>,
    },
    /// List snapshots
    List,
    /// Show one snapshot's manifest
    Show {
        /// Snapshot ID (as `snapshot list` shows it)
        id: String,
    },
    /// Recompute checksums and read archives to the end
    Verify {
        /// Snapshot ID (default: the latest)
        id: Option<String>,
        /// Verify every snapshot
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Store-backed snapshots: also decompress and re-hash every chunk and read the tar to
        /// the end (default: chunk presence and pack checksums)
        #[arg(long)]
        read_data: bool,
    },
    /// Snapshot store: total size, dedup ratio, reclaimable bytes
    Stats,
    /// Delete a snapshot
    Delete {
        /// Snapshot ID
        id: String,
    },
    /// Apply the retention policy (x-nodus.snapshots.keep)
    Prune {
        /// Show what would be removed without removing anything
        #[arg(long)]
        dry_run: bool,
    },
    /// Put a snapshot back into its volume (a safety snapshot is taken first)
    Restore {
        /// Snapshot ID to restore
        id: Option<String>,
        /// Restore the latest snapshot of each service
        #[arg(long, conflicts_with = "id")]
        latest: bool,
        /// Restrict to these services
        #[arg(long = "service")]
        services: Vec<String>,
        /// Skip the safety snapshot of the current volume
        #[arg(long)]
        no_safety: bool,
    },
    /// Write a snapshot to a standalone .tar.zst (+ .sha256), optionally age-encrypted
    #[command(
        after_help = "Examples:\n  nodus snapshot export 20250101T000000Z-db-abc123 -o db.tar.zst\n  nodus snapshot export ID -o db.tar.zst --age-recipient age1...   writes db.tar.zst.age"
    )]
    Export(SnapshotExportArgs),
    /// Bring an exported snapshot back as a snapshot of this project
    Import(SnapshotImportArgs),
    /// Move snapshots of the single-file format into the deduplicating store
    Migrate,
}

#[derive(Debug, Args)]
pub struct SnapshotExportArgs {
    /// Snapshot ID (or a unique prefix)
    pub id: String,
    /// Output file or directory [default: ./<ID>.tar.zst]; `.age` is appended when encrypting
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Encrypt to this age X25519 recipient (`age1…`); repeatable
    #[arg(long = "age-recipient", value_name = "KEY")]
    pub age_recipients: Vec<String>,
    /// Encrypt to the recipients listed in FILE (one `age1…` per line, # comments); repeatable
    #[arg(long = "age-recipients-file", value_name = "FILE")]
    pub age_recipients_files: Vec<PathBuf>,
    /// Replace FILE and FILE.sha256 if they exist
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotImportArgs {
    /// The exported file (.tar.zst or .tar.zst.age); FILE.sha256 is checked when present
    pub file: PathBuf,
    /// age identity file to decrypt an encrypted export (as age-keygen writes it)
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Import it as a snapshot of this stateful service (same kind and data dir name)
    #[arg(long)]
    pub service: Option<String>,
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
        /// Backup file (.sql or .sql.gz)
        file: PathBuf,
        /// Postgres service to load it into (default: the only/first postgres service)
        #[arg(long)]
        service: Option<String>,
    },
    /// List backups
    List,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also write the findings as SARIF 2.1.0 to FILE (for code scanning UIs)
    #[arg(long, value_name = "FILE")]
    pub sarif: Option<PathBuf>,
    /// Explain the most recent loss the guard recorded instead of checking the stack
    #[arg(long)]
    pub last_loss: bool,
    /// Only the static checks of the stack files (no engine, containers or servers)
    #[arg(long)]
    pub no_live: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The compose file to import (it is only read)
    pub compose_file: PathBuf,
    /// The stack file to write [default: nodus.yaml beside the compose file]
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Copy the data of bind mounts and anonymous volumes into the new named volumes (the
    /// service is stopped; a census before and after must match)
    #[arg(long)]
    pub migrate_data: bool,
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
