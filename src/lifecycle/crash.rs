//! A postgres container that stopped without nodus (killed, crashed, host reboot) and is started
//! again: `up`/`start` say that it did not shut down cleanly before starting it, and once it is
//! ready whether it ran crash recovery (committed data is kept; UNLOGGED tables are emptied).

use crate::engine::ContainerInfo;
use crate::stack::ServiceKind;

use super::stop::postgres_shutdown;
use super::{Lifecycle, StopEvidence};

/// Log lines read to judge the last shutdown / the recovery.
const LOG_LINES: usize = 80;

/// Postgres' log lines of a start after an unclean shutdown.
pub fn crash_recovery_ran(logs: &str) -> bool {
    logs.contains("database system was interrupted")
        || logs.contains("was not properly shut down; automatic recovery in progress")
}

impl Lifecycle<'_> {
    /// Before starting the stopped container `c` of `service`: the evidence (and a warning) when
    /// it is a postgres that did not shut down cleanly.
    pub(super) async fn unclean_before_start(
        &self,
        service: &str,
        c: &ContainerInfo,
    ) -> Option<StopEvidence> {
        if self.stateful(service).map(|s| s.kind) != Some(ServiceKind::Postgres) {
            return None;
        }
        let killed = c.exit_code == Some(137) || c.oom_killed;
        let logs = self.engine.logs(&c.id, LOG_LINES).await.unwrap_or_default();
        let (clean, line) = postgres_shutdown(&logs);
        if !killed && clean {
            return None;
        }
        let why = if c.oom_killed {
            "it was OOM-killed".to_string()
        } else if killed {
            "it was killed (exit 137)".to_string()
        } else {
            format!(
                "it exited with {} and its log does not show a clean shutdown",
                c.exit_code.unwrap_or(-1)
            )
        };
        self.ui.warn(format!(
            "postgres in {} did not shut down cleanly ({why}): it runs crash recovery now; committed data is kept, UNLOGGED tables are emptied",
            c.name
        ));
        Some(StopEvidence {
            exit_code: c.exit_code,
            clean_shutdown: Some(clean),
            log_line: line,
            killed,
            oom_killed: c.oom_killed,
        })
    }

    /// After a container that [`Self::unclean_before_start`] warned about is ready: says whether
    /// postgres ran its crash recovery.
    pub(super) async fn note_crash_recovery(&self, service: &str, id: &str) {
        let logs = self.engine.logs(id, LOG_LINES).await.unwrap_or_default();
        if crash_recovery_ran(&logs) {
            self.ui.warn(format!(
                "{service}: postgres ran crash recovery after the unclean shutdown (the census below shows whether anything is missing)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::engine::Engine;
    use crate::lifecycle::tests::{hardened, lc, up_opts};
    use crate::lifecycle::NoHooks;
    use crate::output::Ui;

    const STACK: &str = "services:\n  db:\n    image: postgres:16\n    volumes: [data:/var/lib/postgresql/data]\n  cache:\n    image: redis:7\nvolumes:\n  data:\n";

    #[tokio::test(start_paused = true)]
    async fn a_killed_postgres_is_unclean_a_stopped_one_is_not() {
        let e = FakeEngine::new().with_images(&["postgres:16", "redis:7"]);
        let h = hardened(STACK);
        let ui = Ui::plain();
        let l = lc(&e, &h, &ui);
        l.up(&up_opts(), &mut NoHooks).await.unwrap();

        // stopped by nodus: its log ends with the clean shutdown
        l.stop(&["db".into()], None, &mut NoHooks).await.unwrap();
        let c = l.any_container_of("db").await.unwrap().unwrap();
        assert!(l.unclean_before_start("db", &c).await.is_none());
        l.up(&up_opts(), &mut NoHooks).await.unwrap();

        // SIGKILLed outside nodus
        let c = l.any_container_of("db").await.unwrap().unwrap();
        e.kill_container(&c.id, "SIGKILL").await.unwrap();
        let c = l.any_container_of("db").await.unwrap().unwrap();
        assert_eq!(c.exit_code, Some(137));
        let ev = l.unclean_before_start("db", &c).await.unwrap();
        assert!(ev.killed);
        assert_eq!(ev.exit_code, Some(137));
        // up starts it again (not recreated)
        let r = l.up(&up_opts(), &mut NoHooks).await.unwrap();
        assert_eq!(r.started, ["db"]);

        // not postgres: nothing to say
        let cache = l.any_container_of("cache").await.unwrap().unwrap();
        e.kill_container(&cache.id, "SIGKILL").await.unwrap();
        let cache = l.any_container_of("cache").await.unwrap().unwrap();
        assert!(l.unclean_before_start("cache", &cache).await.is_none());
    }

    #[test]
    fn crash_recovery_lines() {
        assert!(crash_recovery_ran(
            "LOG:  database system was interrupted; last known up at 2026-01-01"
        ));
        assert!(!crash_recovery_ran(
            "LOG:  database system was shut down at 2026-01-01"
        ));
    }
}
