//! Which services are database servers: the kind guessed from the image, and whether the service
//! actually runs the image's server (a `postgres:15` service whose command is `psql …` or
//! `sh -c …` is a client, not a database).

use super::model::{Service, StringOrList};
use super::xnodus::ServiceKind;

/// Guesses the kind of a service from its image: the repository's last path segment without tag
/// or digest, matched exactly or as `<known>-...` (`nodus/postgres-standin:15`).
pub fn guess_kind(image: &str) -> Option<ServiceKind> {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let name = last.split(':').next().unwrap_or(last).to_ascii_lowercase();
    const KNOWN: &[(&str, ServiceKind)] = &[
        ("postgres", ServiceKind::Postgres),
        ("postgresql", ServiceKind::Postgres),
        ("pgvector", ServiceKind::Postgres),
        ("timescaledb", ServiceKind::Postgres),
        ("timescaledb-ha", ServiceKind::Postgres),
        ("postgis", ServiceKind::Postgres),
        ("redis", ServiceKind::Redis),
        ("redis-stack", ServiceKind::Redis),
        ("redis-stack-server", ServiceKind::Redis),
        ("valkey", ServiceKind::Redis),
        ("qdrant", ServiceKind::Qdrant),
        ("mariadb", ServiceKind::Mariadb),
        ("mysql", ServiceKind::Mysql),
        ("mongo", ServiceKind::Mongo),
        ("mongodb", ServiceKind::Mongo),
    ];
    KNOWN
        .iter()
        .find(|(k, _)| name == *k)
        .or_else(|| {
            // longest known prefix followed by `-`
            KNOWN
                .iter()
                .filter(|(k, _)| {
                    name.strip_prefix(k)
                        .is_some_and(|rest| rest.starts_with('-'))
                })
                .max_by_key(|(k, _)| k.len())
        })
        .map(|(_, kind)| *kind)
}

/// What a service built from a database image runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runs {
    /// The image's server (default entrypoint/command, the image's entrypoint script, the server
    /// binary, or only flags for it).
    Server,
    /// A known client tool or a shell script that never starts the server (migrations, psql).
    Client(String),
    /// Something else (a custom program): not treated as the server, with a warning.
    Other(String),
}

/// Server binaries per kind (file names).
fn server_binaries(kind: ServiceKind) -> &'static [&'static str] {
    match kind {
        ServiceKind::Postgres => &["postgres", "postmaster"],
        ServiceKind::Redis => &[
            "redis-server",
            "redis-stack-server",
            "valkey-server",
            "keydb-server",
        ],
        ServiceKind::Qdrant => &["qdrant"],
        ServiceKind::Mysql | ServiceKind::Mariadb => &["mysqld", "mariadbd", "mysqld_safe"],
        ServiceKind::Mongo => &["mongod"],
        ServiceKind::Other => &[],
    }
}

/// Client tools shipped in database images.
const CLIENTS: &[&str] = &[
    "psql",
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "pg_isready",
    "pg_basebackup",
    "createdb",
    "dropdb",
    "createuser",
    "vacuumdb",
    "redis-cli",
    "valkey-cli",
    "redis-benchmark",
    "mysql",
    "mariadb",
    "mysqldump",
    "mariadb-dump",
    "mysqladmin",
    "mongosh",
    "mongo",
    "mongodump",
    "mongorestore",
    "mongoimport",
];

const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh"];
/// Process wrappers that run their arguments.
const WRAPPERS: &[&str] = &["tini", "dumb-init", "gosu", "su-exec", "env", "exec"];

fn base(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// An image's entrypoint script (`docker-entrypoint.sh`, `/opt/bitnami/.../entrypoint.sh`).
fn is_entrypoint_script(word: &str) -> bool {
    base(word).contains("entrypoint")
}

fn is_server(kind: ServiceKind, word: &str) -> bool {
    let b = base(word);
    server_binaries(kind).contains(&b)
        // bitnami's CMD: /opt/bitnami/scripts/<name>/run.sh
        || (word.contains("bitnami") && b == "run.sh")
}

fn words(v: &StringOrList) -> Vec<String> {
    match v {
        StringOrList::List(l) => l.clone(),
        StringOrList::String(s) => {
            shlex::split(s).unwrap_or_else(|| s.split_whitespace().map(str::to_string).collect())
        }
    }
}

/// Drops leading wrappers (`tini --`, `gosu postgres`, `env A=b`) from an argv.
fn strip_wrappers(argv: &[String]) -> &[String] {
    let mut rest = argv;
    while let Some(first) = rest.first() {
        let b = base(first);
        if !WRAPPERS.contains(&b) {
            break;
        }
        rest = &rest[1..];
        // their options, `--`, a user name (gosu/su-exec) and VAR=value assignments (env)
        if matches!(b, "gosu" | "su-exec") && !rest.is_empty() {
            rest = &rest[1..];
        }
        while let Some(w) = rest.first() {
            if w.starts_with('-') || w.contains('=') {
                rest = &rest[1..];
            } else {
                break;
            }
        }
    }
    rest
}

/// Judges what `argv` (what the container runs after the image's entrypoint script, if any)
/// starts. `after_script`: the image's entrypoint script runs it (flags go to the server).
fn judge(kind: ServiceKind, argv: &[String], after_script: bool) -> Runs {
    let argv = strip_wrappers(argv);
    let Some(first) = argv.first() else {
        // nothing given: the image's default command, its server
        return Runs::Server;
    };
    if first.starts_with('-') && after_script {
        return Runs::Server;
    }
    if is_server(kind, first) {
        return Runs::Server;
    }
    if is_entrypoint_script(first) {
        return judge(kind, &argv[1..], true);
    }
    let b = base(first);
    if SHELLS.contains(&b) {
        // `sh -c SCRIPT`: a server when the script starts it at a command position
        let script = argv
            .iter()
            .position(|w| w == "-c" || (w.starts_with('-') && w.ends_with('c') && w.len() <= 4))
            .and_then(|i| argv.get(i + 1));
        return match script {
            Some(s) if script_starts_server(kind, s) => Runs::Server,
            Some(s) => Runs::Client(format!("{b} -c {}", shorten(s))),
            None => Runs::Client(argv.join(" ")),
        };
    }
    if CLIENTS.contains(&b) {
        return Runs::Client(shorten(&argv.join(" ")));
    }
    Runs::Other(shorten(&argv.join(" ")))
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX {
        one_line
    } else {
        format!("{}…", one_line.chars().take(MAX).collect::<String>())
    }
}

/// Whether a shell script runs the server (or the entrypoint script) at a command position:
/// its first word, or after `exec`, `&&`, `||`, `;`, `|`, `then`, `do`, a newline.
fn script_starts_server(kind: ServiceKind, script: &str) -> bool {
    let spaced = script
        .replace("&&", " && ")
        .replace("||", " || ")
        .replace([';', '\n'], " ; ")
        .replace('|', " | ");
    let toks: Vec<&str> = spaced.split_whitespace().collect();
    let mut at_command = true;
    for t in toks {
        let t = t.trim_matches(|c| c == '"' || c == '\'' || c == '(' || c == ')');
        if at_command {
            if t.contains('=') && !t.starts_with('-') {
                continue; // VAR=value before the command
            }
            if WRAPPERS.contains(&base(t)) {
                continue;
            }
            if is_server(kind, t) || is_entrypoint_script(t) {
                return true;
            }
        }
        at_command = matches!(t, "&&" | "||" | ";" | "|" | "then" | "do" | "else" | "{");
    }
    false
}

/// What `svc` (an image of `kind`) runs. Entrypoint not overridden, or overridden with the image's
/// own entrypoint script: the command decides (absent, the server binary or only flags: the
/// server). An entrypoint of the server binary is the server; any other entrypoint is not.
pub fn runs(kind: ServiceKind, svc: &Service) -> Runs {
    let command = svc.command.as_ref().map(words).unwrap_or_default();
    match svc.entrypoint.as_ref().map(words) {
        // the image's entrypoint (an entrypoint script for every known database image) runs the
        // command; flags are handed to the server
        None => judge(kind, &command, true),
        // `entrypoint: ""`/`[]` clears it: the command runs as it is
        Some(ep) if ep.iter().all(|w| w.is_empty()) => judge(kind, &command, false),
        Some(ep) => {
            let mut argv = ep;
            argv.extend(command);
            judge(kind, &argv, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(entrypoint: Option<&str>, command: Option<&str>) -> Service {
        Service {
            image: Some("postgres:15".into()),
            entrypoint: entrypoint.map(|s| StringOrList::String(s.into())),
            command: command.map(|s| StringOrList::String(s.into())),
            ..Service::default()
        }
    }

    fn server(kind: ServiceKind, ep: Option<&str>, cmd: Option<&str>) -> bool {
        runs(kind, &svc(ep, cmd)) == Runs::Server
    }

    #[test]
    fn the_image_server_is_a_server() {
        use ServiceKind::*;
        for (kind, ep, cmd) in [
            (Postgres, None, None),
            (Postgres, None, Some("postgres -c shared_buffers=256MB")),
            (Postgres, None, Some("-c max_connections=200")),
            (Postgres, Some("docker-entrypoint.sh"), Some("postgres")),
            (Postgres, Some("/usr/local/bin/docker-entrypoint.sh"), None),
            (
                Postgres,
                Some("docker-entrypoint.sh postgres -c fsync=on"),
                None,
            ),
            (
                Postgres,
                Some("tini -- docker-entrypoint.sh"),
                Some("postgres"),
            ),
            (Postgres, Some(""), Some("postgres")),
            (
                Postgres,
                None,
                Some("/usr/lib/postgresql/15/bin/postgres -D /data"),
            ),
            (
                Postgres,
                None,
                Some("sh -c 'chown -R postgres /x && exec docker-entrypoint.sh postgres'"),
            ),
            (
                Postgres,
                Some("bash -c"),
                Some("\"set -e; exec postgres -c log_min_messages=info\""),
            ),
            (Redis, None, Some("redis-server --appendonly yes")),
            (Redis, None, Some("--appendonly yes")),
            (
                Redis,
                None,
                Some("sh -c 'redis-server --requirepass \"$$PW\"'"),
            ),
            (Qdrant, None, Some("./qdrant --uri http://x")),
            (
                Postgres,
                Some("/opt/bitnami/scripts/postgresql/entrypoint.sh"),
                Some("/opt/bitnami/scripts/postgresql/run.sh"),
            ),
            (Mongo, None, Some("mongod --replSet rs0")),
            (
                Mysql,
                None,
                Some("--default-authentication-plugin=mysql_native_password"),
            ),
        ] {
            assert!(server(kind, ep, cmd), "{kind:?} {ep:?} {cmd:?}");
        }
    }

    #[test]
    fn clients_and_scripts_are_not_servers() {
        use ServiceKind::*;
        for (kind, ep, cmd) in [
            (Postgres, None, Some("psql -h db -U postgres -c 'select 1'")),
            (Postgres, Some("psql"), Some("-h db -c 'select 1'")),
            (Postgres, None, Some("sh -c 'until pg_isready -h db -U postgres; do sleep 1; done; psql -h db -f /m.sql'")),
            (Postgres, Some("/bin/sh -c"), Some("\"pg_dump -h db app > /out/app.sql\"")),
            (Postgres, Some("/migrate.sh"), None),
            (Postgres, None, Some("bash /scripts/migrate.sh")),
            (Postgres, None, Some("pg_dump -h db -U postgres app")),
            (Redis, None, Some("redis-cli -h cache ping")),
            (Redis, Some("redis-cli"), None),
            (Redis, None, Some("sh -c 'redis-cli -h cache set k v'")),
        ] {
            assert!(!server(kind, ep, cmd), "{kind:?} {ep:?} {cmd:?}");
        }
        assert!(matches!(
            runs(Postgres, &svc(Some("/migrate.sh"), None)),
            Runs::Other(_)
        ));
        assert!(matches!(
            runs(Postgres, &svc(None, Some("psql -c 'select 1'"))),
            Runs::Client(_)
        ));
    }

    #[test]
    fn list_forms_count_too() {
        let mut s = svc(None, None);
        s.entrypoint = Some(StringOrList::List(vec!["sh".into(), "-c".into()]));
        s.command = Some(StringOrList::List(vec!["psql -h db -c 'select 1'".into()]));
        assert!(matches!(runs(ServiceKind::Postgres, &s), Runs::Client(_)));
        s.entrypoint = Some(StringOrList::List(vec![]));
        s.command = Some(StringOrList::List(vec![
            "postgres".into(),
            "-c".into(),
            "x=1".into(),
        ]));
        assert_eq!(runs(ServiceKind::Postgres, &s), Runs::Server);
    }

    fn harden(text: &str) -> crate::stack::Hardened {
        crate::stack::Stack::load(
            &[crate::stack::SourceFile {
                path: "stack.yaml".into(),
                text: text.into(),
            }],
            &crate::stack::Env::new(),
            Some(("proj", crate::stack::ProjectSource::Flag)),
            "d",
        )
        .unwrap()
        .harden()
    }

    #[test]
    fn a_client_of_a_database_image_gets_no_volume_or_health_check() {
        let h = harden(
            "services:\n  db:\n    image: postgres:15\n  migrate:\n    image: postgres:15\n    command: sh -c 'psql -h db -U postgres -f /m.sql'\n    depends_on: [db]\n  shell:\n    image: postgres:15\n    entrypoint: [psql]\n    command: [-h, db]\n  cli:\n    image: redis:7\n    command: redis-cli -h cache monitor\n",
        );
        let names: Vec<&str> = h.stateful.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["db"]);
        for name in ["migrate", "shell", "cli"] {
            let svc = &h.compose.services[name];
            assert!(svc.volumes.is_empty(), "{name}: {:?}", svc.volumes);
            assert!(svc.healthcheck.is_none(), "{name}");
            assert!(svc.ports.is_empty(), "{name}");
            assert!(svc.stop_grace_period.is_none(), "{name}");
            assert!(!h.findings.iter().any(|f| f.service == name), "{name}");
        }
        assert!(h.compose.volumes.keys().all(|k| k == "db_data"));
    }

    #[test]
    fn stateful_override_wins_over_the_guess() {
        let h = harden("services:\n  db:\n    image: postgres:15\n    entrypoint: /wrapper.sh\n");
        // unknown program: not a database, with a warning naming the override
        assert!(h.stateful_service("db").is_none());
        assert!(h.findings.iter().any(|f| f.service == "db"
            && f.level == crate::stack::FindingLevel::Warning
            && f.message.contains("x-nodus.services.db.stateful: true")));
        let h = harden(
            "services:\n  db:\n    image: postgres:15\n    entrypoint: /wrapper.sh\n  psql:\n    image: postgres:15\n    command: psql -h db\nx-nodus:\n  services:\n    db:\n      stateful: true\n    psql:\n      stateful: false\n",
        );
        assert!(h.stateful_service("db").is_some());
        assert!(h.compose.services["db"].healthcheck.is_some());
        assert!(h.stateful_service("psql").is_none());
    }
}
