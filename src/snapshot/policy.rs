//! Which transitions snapshot: the command line (`--no-snapshot`, `restart --snapshot`) and
//! `x-nodus.snapshots` (`on_down`, `on_restart`).

use crate::project::Project;
use crate::stack::xnodus::OnRestart;

/// What the command line says about a transition's snapshots.
#[derive(Debug, Clone, Default)]
pub struct SnapshotChoice {
    /// `--no-snapshot`.
    pub no_snapshot: bool,
    /// `restart --snapshot`: whatever `on_restart` and `on_down` say.
    pub force: bool,
    /// The services named (empty: the default selection).
    pub services: Vec<String>,
}

/// Why a restart of `services` takes no snapshot (None: it takes one), by
/// `x-nodus.snapshots.on_restart` (see [`OnRestart`]): `auto` snapshots when one of the services
/// the restart may start (the named ones and what they depend on) is an application, i.e. not
/// a database nodus knows.
pub fn restart_snapshots(project: &Project, services: &[String]) -> Option<String> {
    match project.stack.nodus.snapshots.on_restart {
        OnRestart::Always => None,
        OnRestart::Never => Some("x-nodus.snapshots.on_restart is `never`".into()),
        OnRestart::Auto => {
            // An unknown name fails later, in the lifecycle, with its own error: snapshot then.
            let order = crate::stack::plan::start_order(
                &project.hardened.compose,
                &project.selection(services),
            )
            .ok()?;
            let stateful = |s: &String| project.hardened.stateful.iter().any(|d| &d.service == s);
            match order.iter().find(|s| !stateful(s)) {
                Some(_) => None,
                None => Some(format!(
                    "only databases restart ({}); their containers and volumes stay and the censuses check them (`--snapshot` takes one)",
                    order.join(", ")
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::Project;
    use crate::stack::{SourceFile, Stack};
    use crate::state::StateDir;

    fn project(yaml: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Project) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, yaml).unwrap();
        let env: crate::stack::Env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sources = [SourceFile {
            path: file.clone(),
            text: yaml.into(),
        }];
        let stack = Stack::load(&sources, &env, None, "p").unwrap();
        let hardened = stack.harden();
        let state = StateDir::open_for_stack(dir.path().join(".nodus"), &file).unwrap();
        let p = Project {
            stack,
            hardened,
            dir: dir.path().to_path_buf(),
            state,
            env,
        };
        (dir, p)
    }

    const STACK: &str = "services:
  db:
    image: postgres:16
    volumes: [pg:/var/lib/postgresql/data]
  cache:
    image: redis:7
    volumes: [rd:/data]
  app:
    image: example/app
    depends_on: [db, cache]
  tools:
    image: example/tools
    profiles: [debug]
volumes: {pg: {}, rd: {}}
";

    fn with_policy(policy: &str) -> String {
        format!("{STACK}x-nodus:\n  snapshots:\n    on_restart: {policy}\n")
    }

    #[test]
    fn auto_skips_a_restart_of_databases_alone() {
        let (_d, p) = project(STACK, &[]);
        for named in [vec!["db".to_string()], vec!["db".into(), "cache".into()]] {
            let why = restart_snapshots(&p, &named).expect("databases alone: no snapshot");
            assert!(why.contains("only databases restart"), "{why}");
            assert!(why.contains("--snapshot"), "{why}");
        }
    }

    #[test]
    fn auto_snapshots_when_an_application_may_start() {
        let (_d, p) = project(STACK, &[]);
        // Named, or in the default selection.
        assert_eq!(restart_snapshots(&p, &["app".to_string()]), None);
        assert_eq!(restart_snapshots(&p, &[]), None);
        // An unknown name: the lifecycle reports it; no reason to skip here.
        assert_eq!(restart_snapshots(&p, &["nope".to_string()]), None);
    }

    #[test]
    fn auto_looks_at_the_default_selection_with_its_profiles() {
        let only_dbs = "services:
  db:
    image: postgres:16
    volumes: [pg:/var/lib/postgresql/data]
  seed:
    image: example/seed
    profiles: [seed]
volumes: {pg: {}}
";
        let (_d, p) = project(only_dbs, &[]);
        assert!(
            restart_snapshots(&p, &[]).is_some(),
            "the seed is not selected"
        );
        let (_d, p) = project(only_dbs, &[("COMPOSE_PROFILES", "seed")]);
        assert_eq!(restart_snapshots(&p, &[]), None, "the seed starts");
    }

    #[test]
    fn always_and_never() {
        let (_d, p) = project(&with_policy("always"), &[]);
        assert_eq!(restart_snapshots(&p, &["db".to_string()]), None);
        let (_d, p) = project(&with_policy("never"), &[]);
        let why = restart_snapshots(&p, &[]).expect("never");
        assert!(why.contains("never"), "{why}");
    }

    #[test]
    fn the_command_line_and_on_down_decide_before_on_restart() {
        use crate::lifecycle::Transition;
        use crate::snapshot::SnapshotHook;
        let engine: std::sync::Arc<dyn crate::engine::Engine> =
            std::sync::Arc::new(crate::engine::fake::FakeEngine::new());
        let ui = crate::output::Ui::plain();
        let hook = |p: &Project, t: Transition, choice: SnapshotChoice| {
            SnapshotHook::for_transition(p, engine.clone(), &ui, t, &choice).is_some()
        };
        let db = || SnapshotChoice {
            services: vec!["db".into()],
            ..Default::default()
        };
        let (_d, p) = project(STACK, &[]);
        assert!(!hook(&p, Transition::Restart, db()), "databases alone");
        assert!(
            hook(&p, Transition::Restart, SnapshotChoice::default()),
            "with the app"
        );
        assert!(hook(&p, Transition::Down, db()), "down always");
        assert!(hook(&p, Transition::Stop, db()), "stop always");
        assert!(!hook(&p, Transition::Up, SnapshotChoice::default()));
        let forced = SnapshotChoice {
            force: true,
            ..db()
        };
        assert!(hook(&p, Transition::Restart, forced.clone()), "--snapshot");
        let off = SnapshotChoice {
            no_snapshot: true,
            ..Default::default()
        };
        assert!(!hook(&p, Transition::Down, off), "--no-snapshot");
        let (_d, p) = project(
            &format!("{STACK}x-nodus:\n  snapshots:\n    on_down: false\n"),
            &[],
        );
        assert!(!hook(&p, Transition::Down, db()), "on_down: false");
        assert!(!hook(&p, Transition::Restart, SnapshotChoice::default()));
        assert!(hook(&p, Transition::Restart, forced), "--snapshot wins");
    }

    #[test]
    fn an_unknown_policy_is_refused() {
        let sources = [SourceFile {
            path: "compose.yaml".into(),
            text: with_policy("sometimes"),
        }];
        let e = Stack::load(&sources, &Default::default(), None, "p").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }
}
