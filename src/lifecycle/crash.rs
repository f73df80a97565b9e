//! A postgres container that stopped without nodus (killed, crashed, host reboot) and is started
//! again: `up`/`start` say that it did not shut down cleanly before starting it, and once it is
//! ready whether it ran crash recovery (committed data is kept; UNLOGGED tables are emptied).

use crate::engine::ContainerInfo;
use crate::stack::ServiceKind;

use super::stop::postgres_shutdown;
use super::Lifecycle;

/// Log lines read to judge the last shutdown / the recovery.
const LOG_LINES: usize = 80;

/// Postgres' log lines of a start after an unclean shutdown.
pub fn crash_recovery_ran(logs: &str) -> bool {
    logs.contains("database system was interrupted")
        || logs.contains("was not properly shut down; automatic recovery in progress")
}

impl Lifecycle<'_> {
    /// Before starting the stopped container `c` of `service`: true (and a warning) when it is a
    /// postgres that did not shut down cleanly.
    pub(super) async fn unclean_before_start(&self, service: &str, c: &ContainerInfo) -> bool {
        if self.stateful(service).map(|s| s.kind) != Some(ServiceKind::Postgres) {
            return false;
        }
        let killed = c.exit_code == Some(137) || c.oom_killed;
        let logs = self.engine.logs(&c.id, LOG_LINES).await.unwrap_or_default();
        let (clean, _) = postgres_shutdown(&logs);
        if !killed && clean {
            return false;
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
        true
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
