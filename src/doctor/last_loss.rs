//! `nodus doctor --last-loss`: the most recent loss in the ledger, explained by comparing the
//! entries around it, and — when `x-nodus.services.<db>.ddl_log` is on — each `DROP` in the
//! server's log attributed to the container whose network address issued it.

use serde::Serialize;

use crate::engine::Engine;
use crate::guard::cause::Cause;
use crate::guard::diff::{compare, ServiceDiff};
use crate::guard::ledger::{Entry, Ledger};

pub use crate::stack::harden::DDL_LOG_PREFIX;

#[derive(Debug, Clone, Serialize)]
pub struct EntryFacts {
    pub time: String,
    pub transition: String,
    pub phase: String,
    pub project: String,
    pub engine_id: Option<String>,
    pub system_identifier: Option<String>,
    pub volume: Option<String>,
    pub volume_created_at: Option<String>,
    pub container: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DropEvent {
    /// The log line's timestamp.
    pub time: String,
    pub statement: String,
    /// Client address as the server logged it.
    pub client: String,
    pub application: Option<String>,
    pub database: Option<String>,
    /// The container that has that address now.
    pub container: Option<String>,
    pub service: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastLoss {
    pub service: String,
    pub summary: String,
    pub lost: Vec<String>,
    pub before: EntryFacts,
    pub after: EntryFacts,
    /// What differs between the two entries, one sentence each.
    pub differences: Vec<String>,
    /// The cause the guard inferred when it found the loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Whether the service logs DDL (x-nodus ddl_log).
    pub ddl_log: bool,
    pub drops: Vec<DropEvent>,
}

fn facts(e: &Entry, service: &str) -> EntryFacts {
    let id = e.services.get(service);
    EntryFacts {
        time: e.time.clone(),
        transition: e.transition.clone(),
        phase: e.phase.describe().to_string(),
        project: e.project.clone(),
        engine_id: e.engine_id.clone(),
        system_identifier: id.and_then(|i| i.system_identifier.clone()),
        volume: id
            .and_then(|i| i.volume.as_ref().map(|v| v.name.clone()))
            .or_else(|| id.and_then(|i| i.mount.as_ref().map(|m| m.source.clone()))),
        volume_created_at: id.and_then(|i| i.volume.as_ref().and_then(|v| v.created_at.clone())),
        container: id.and_then(|i| i.container.clone()),
    }
}

/// The most recent (before, after, service, diff) in the ledger where `after` holds less.
pub fn find(ledger: &Ledger) -> Option<(Entry, Entry, String, ServiceDiff, Option<Cause>)> {
    let entries = ledger.entries();
    let mut best: Option<(usize, Entry, Entry, String, ServiceDiff)> = None;
    let services: std::collections::BTreeSet<String> = entries
        .iter()
        .flat_map(|e| e.census.services.keys().cloned())
        .collect();
    for svc in &services {
        let mut prev: Option<&Entry> = None;
        for (i, e) in entries.iter().enumerate() {
            let Some(now) = e.census_of(svc) else {
                continue;
            };
            if let Some(p) = prev {
                if let Some(before) = p.census_of(svc) {
                    let d = compare(before, now);
                    if d.is_loss() && best.as_ref().is_none_or(|b| b.0 <= i) {
                        best = Some((i, p.clone(), e.clone(), svc.clone(), d));
                    }
                }
            }
            // A deliberate `down --volumes` resets the comparison.
            prev = if e.volumes_removed { None } else { Some(e) };
        }
    }
    // An outstanding loss whose post-start entry was not kept: its baseline and the entry after it.
    let newest_outstanding = ledger
        .doc
        .outstanding
        .iter()
        .max_by(|a, b| a.1.detected_at.cmp(&b.1.detected_at));
    if let Some((svc, o)) = newest_outstanding {
        // The scan found this loss (its after entry is newer than the outstanding baseline):
        // add the cause inferred at the time.
        if let Some(b) = best.as_ref() {
            if &b.3 == svc && b.2.time >= o.baseline.time {
                return Some((
                    b.1.clone(),
                    b.2.clone(),
                    b.3.clone(),
                    b.4.clone(),
                    o.cause.clone(),
                ));
            }
        }
        let older = best.as_ref().is_none_or(|b| b.2.time < o.baseline.time);
        if older {
            // The newest entry counting the service after the baseline.
            let after = entries
                .iter()
                .rev()
                .find(|e| e.time > o.baseline.time && e.census_of(svc).is_some())
                .cloned();
            if let (Some(after), Some(before)) = (after, o.baseline.census_of(svc)) {
                let d = after
                    .census_of(svc)
                    .map(|a| compare(before, a))
                    .unwrap_or_default();
                return Some((o.baseline.clone(), after, svc.clone(), d, o.cause.clone()));
            }
        }
    }
    best.map(|(_, a, b, s, d)| (a, b, s, d, None))
}

/// The differences between the entries around a loss that explain it.
pub fn differences(before: &EntryFacts, after: &EntryFacts) -> Vec<String> {
    let mut out = Vec::new();
    if before.project != after.project {
        out.push(format!(
            "project name changed from {} to {}: compose volumes are per project, so the stack got new, empty volumes (the old ones still hold the data; `nodus doctor` names them under project-rename)",
            before.project, after.project
        ));
    }
    if before.engine_id.is_some()
        && after.engine_id.is_some()
        && before.engine_id != after.engine_id
    {
        out.push(format!(
            "another Docker engine ({} before, {} after): volumes live in one engine; the data is still in the first one",
            before.engine_id.as_deref().unwrap_or("?"),
            after.engine_id.as_deref().unwrap_or("?")
        ));
    }
    if before.volume != after.volume {
        out.push(format!(
            "the data directory moved from volume {} to {}: the old volume (if not removed) still holds the data",
            before.volume.as_deref().unwrap_or("(none: container layer)"),
            after.volume.as_deref().unwrap_or("(none: container layer)")
        ));
    } else if before.volume_created_at.is_some()
        && after.volume_created_at.is_some()
        && before.volume_created_at != after.volume_created_at
        // the same cluster on it means the volume was not recreated (its timestamp moved)
        && (before.system_identifier.is_none() || before.system_identifier != after.system_identifier)
    {
        out.push(format!(
            "volume {} was removed and created again ({} → {})",
            after.volume.as_deref().unwrap_or("?"),
            before.volume_created_at.as_deref().unwrap_or("?"),
            after.volume_created_at.as_deref().unwrap_or("?")
        ));
    }
    match (&before.system_identifier, &after.system_identifier) {
        (Some(a), Some(b)) if a != b => out.push(format!(
            "a different PostgreSQL cluster (system_identifier {a} → {b}): the data dir was initialised again, the old cluster is elsewhere"
        )),
        (Some(_), Some(_)) => out.push(
            "same cluster, same volume: the tables were dropped or emptied by SQL (a client, a migration, a schema sync)".into(),
        ),
        _ => {}
    }
    out
}

/// Parses one line of a log written with [`DDL_LOG_PREFIX`] and `log_statement=ddl`, when it is
/// a `DROP`.
pub fn parse_drop(line: &str) -> Option<DropEvent> {
    let i = line.find("statement: ")?;
    let statement = line[i + "statement: ".len()..].trim().to_string();
    let upper = statement.to_ascii_uppercase();
    if !(upper.starts_with("DROP ") || upper.contains(" DROP ") && upper.starts_with("DO ")) {
        return None;
    }
    let head = &line[..i];
    let field = |key: &str| -> Option<String> {
        let j = head.find(key)?;
        let v: String = head[j + key.len()..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        (!v.is_empty()).then_some(v)
    };
    let client = field("client=")?;
    let time = head.split(" [").next().unwrap_or("").trim().to_string();
    Some(DropEvent {
        time,
        statement,
        client,
        application: field("app="),
        database: field("db="),
        container: None,
        service: None,
    })
}

/// "2026-12-02 00:41:02.123 UTC" → comparable RFC 3339-ish instant.
fn log_time(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = t.trim().trim_end_matches(" UTC");
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// DROPs in `logs` between the two entries (with a minute of slack after), attributed to the
/// containers with those addresses.
pub async fn attribute_drops(
    engine: &dyn Engine,
    project: &str,
    logs: &str,
    before: &str,
    after: &str,
) -> Vec<DropEvent> {
    let from = chrono::DateTime::parse_from_rfc3339(before).ok();
    let to = chrono::DateTime::parse_from_rfc3339(after)
        .ok()
        .map(|t| t + chrono::Duration::seconds(60));
    let mut drops: Vec<DropEvent> = logs
        .lines()
        .filter_map(parse_drop)
        .filter(|d| match log_time(&d.time) {
            Some(t) => from.is_none_or(|f| t >= f) && to.is_none_or(|x| t <= x),
            None => true,
        })
        .collect();
    if drops.is_empty() {
        return drops;
    }
    let containers = super::live::project_containers(engine, project)
        .await
        .unwrap_or_default();
    let mut addresses: Vec<(String, String, String)> = Vec::new();
    for (svc, c) in &containers {
        if let Ok(addrs) = engine.container_addresses(&c.id).await {
            for (_, ip) in addrs {
                addresses.push((ip, c.name.clone(), svc.clone()));
            }
        }
    }
    for d in &mut drops {
        if let Some((_, c, s)) = addresses.iter().find(|(ip, _, _)| *ip == d.client) {
            d.container = Some(c.clone());
            d.service = Some(s.clone());
        }
    }
    drops
}

impl LastLoss {
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "last loss: {} — {}\n  before: {} ({}, {}), project {}, volume {}, cluster {}\n  after:  {} ({}, {}), project {}, volume {}, cluster {}\n",
            self.service,
            self.summary,
            self.before.time,
            self.before.transition,
            self.before.phase,
            self.before.project,
            self.before.volume.as_deref().unwrap_or("-"),
            self.before.system_identifier.as_deref().unwrap_or("-"),
            self.after.time,
            self.after.transition,
            self.after.phase,
            self.after.project,
            self.after.volume.as_deref().unwrap_or("-"),
            self.after.system_identifier.as_deref().unwrap_or("-"),
        );
        if !self.lost.is_empty() {
            s.push_str(&format!("  lost: {}\n", self.lost.join(", ")));
        }
        for d in &self.differences {
            s.push_str(&format!("  - {d}\n"));
        }
        if let Some(c) = &self.cause {
            s.push_str(&format!("  cause found at the time: {}\n", c.summary));
        }
        if self.ddl_log {
            if self.drops.is_empty() {
                s.push_str("  DDL log: no DROP statement in the server's log for that window\n");
            }
            for d in &self.drops {
                let who = match (&d.service, &d.container) {
                    (Some(svc), Some(c)) => format!("service {svc} (container {c})"),
                    _ => "no running container has that address now".to_string(),
                };
                s.push_str(&format!(
                    "  {} `{}` from {} = {who}{}\n",
                    d.time,
                    d.statement,
                    d.client,
                    d.application
                        .as_deref()
                        .filter(|a| !a.is_empty() && *a != "[unknown]")
                        .map(|a| format!(", application {a}"))
                        .unwrap_or_default()
                ));
            }
        } else {
            s.push_str(&format!(
                "  to see who drops tables next time: set `x-nodus.services.{}.ddl_log: true` (dev only) and run `nodus up`; every DROP is then logged with the client address\n",
                self.service
            ));
        }
        s
    }
}

/// Builds the explanation for the ledger's most recent loss (None: no loss recorded).
pub async fn explain(
    engine: Option<&dyn Engine>,
    project: &crate::project::Project,
    ledger: &Ledger,
) -> Option<LastLoss> {
    let (before, after, service, diff, cause) = find(ledger)?;
    let b = facts(&before, &service);
    let a = facts(&after, &service);
    let differences = differences(&b, &a);
    let ddl_log = project
        .stack
        .nodus
        .services
        .get(&service)
        .and_then(|o| o.ddl_log)
        .unwrap_or(false);
    let mut drops = Vec::new();
    if let Some(engine) = engine {
        if let Ok(cs) = super::live::project_containers(engine, project.name()).await {
            if let Some(c) = cs.get(&service) {
                if let Ok(logs) = engine.logs(&c.id, 50_000).await {
                    drops =
                        attribute_drops(engine, project.name(), &logs, &before.time, &after.time)
                            .await;
                }
            }
        }
    }
    let lost = diff
        .lost_tables()
        .into_iter()
        .map(|(db, t)| format!("{db}.{t}"))
        .chain(
            diff.missing_databases
                .iter()
                .map(|d| format!("database {d}")),
        )
        .collect();
    Some(LastLoss {
        service,
        summary: diff.summary(),
        lost,
        before: b,
        after: a,
        differences,
        cause,
        ddl_log,
        drops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_drop_lines() {
        let l = "2026-12-02 00:41:02.123 UTC [57] client=172.20.0.3 app=psql db=app LOG:  statement: DROP TABLE IF EXISTS t2";
        let d = parse_drop(l).unwrap();
        assert_eq!(d.client, "172.20.0.3");
        assert_eq!(d.statement, "DROP TABLE IF EXISTS t2");
        assert_eq!(d.application.as_deref(), Some("psql"));
        assert_eq!(d.database.as_deref(), Some("app"));
        assert!(log_time(&d.time).is_some());
        assert!(parse_drop("2026-12-02 00:41:02.123 UTC [57] client=1.2.3.4 app= db=app LOG:  statement: CREATE TABLE x (a int)").is_none());
    }
}
