//! The settled census: what `settle` waits for.
//!
//! After every service of a transition is ready, the guard takes one more census and compares it
//! with the ledger. When application services (not stateful) started in this transition, they
//! may still be changing the data — an ORM's migrations, seeds, a `DROP TABLE` at start-up — so
//! the guard waits for the stack to settle first: it counts again every [`SETTLE_STEP`] until two
//! consecutive censuses are equal (same tables, same row counts in every database), at most
//! `x-nodus.settle` (default 2 s) after the first one. The last census is the settled one.
//!
//! No settle when no application service started in this transition (a stack of databases only,
//! or apps already running): nothing that started changes the data, so the census each service
//! had right after it became ready (before anything else started) is the settled census too — no
//! second census. A service without a usable early census is counted at once. `settle: 0s` turns
//! settling off (with apps started, one census is taken at once).

use std::time::Duration;

use super::census::{self, Census};
use super::Guard;
use crate::lifecycle::RunningService;

/// Time between two censuses while the stack settles.
pub const SETTLE_STEP: Duration = Duration::from_millis(500);

/// What two censuses are compared on: every service's tables and counts (not the time taken).
pub fn fingerprint(c: &Census) -> String {
    serde_json::to_string(&c.services).unwrap_or_default()
}

impl Guard {
    /// The settled census of `check` (see the module documentation); `apps` are the application
    /// services started in this transition.
    pub(super) async fn settled_census(&self, check: &[RunningService], apps: &[&str]) -> Census {
        let max = self.cfg.settle();
        if apps.is_empty() {
            return self.reused_census(check).await;
        }
        if max.is_zero() {
            let _t = crate::timing::span("census");
            let spinner = self.ui.spinner("census after start");
            let c = census::take_many(self.engine.as_ref(), check, &self.opts).await;
            spinner.finish_and_clear();
            return c;
        }
        let _t = crate::timing::span("settle");
        let spinner = self.ui.spinner(format!(
            "letting the stack settle after {} started (until two censuses agree, at most {:.1}s)",
            apps.join(", "),
            max.as_secs_f32()
        ));
        let start = tokio::time::Instant::now();
        let mut last = census::take_many(self.engine.as_ref(), check, &self.opts).await;
        let mut rounds = 1;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= max {
                break;
            }
            tokio::time::sleep(SETTLE_STEP.min(max - elapsed)).await;
            let now = census::take_many(self.engine.as_ref(), check, &self.opts).await;
            rounds += 1;
            let same = fingerprint(&now) == fingerprint(&last);
            last = now;
            if same {
                break;
            }
        }
        spinner.finish_and_clear();
        self.ui.detail(format!(
            "settled after {:.2}s ({rounds} censuses)",
            start.elapsed().as_secs_f32()
        ));
        last
    }

    /// The settled census when no application service started: each service's early census
    /// (taken right after it was ready), and a census now of those without a usable one.
    async fn reused_census(&self, check: &[RunningService]) -> Census {
        let mut reused = Census::default();
        let mut rest = Vec::new();
        for s in check {
            match self.early.get(&s.service) {
                Some(e) if e.census.is_available() => {
                    if reused.taken_at.is_empty() || e.taken_at < reused.taken_at {
                        reused.taken_at = e.taken_at.clone();
                    }
                    reused.services.insert(s.service.clone(), e.census.clone());
                }
                _ => rest.push(s.clone()),
            }
        }
        if !reused.services.is_empty() {
            self.ui.detail(format!(
                "settled census: the census right after start of {} (no application service started since)",
                reused.services.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if rest.is_empty() {
            return reused;
        }
        let _t = crate::timing::span("census");
        let spinner = self.ui.spinner("census after start");
        let now = census::take_many(self.engine.as_ref(), &rest, &self.opts).await;
        spinner.finish_and_clear();
        if reused.services.is_empty() {
            return now;
        }
        reused.services.extend(now.services);
        reused
    }
}
