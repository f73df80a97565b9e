use crate::guard::census::{self, CensusOptions, ServiceCensus};

use super::Ctx;

pub async fn run(ctx: &Ctx, args: crate::cli::CensusArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let stateful = &project.hardened.stateful;
    let mut only = Vec::new();
    if let Some(s) = &args.service {
        project.stack.check_services(std::slice::from_ref(s))?;
        match stateful.iter().find(|st| &st.service == s) {
            Some(st) if census::supports(st.kind) => {}
            Some(st) => anyhow::bail!("nodus cannot count {} services yet ({s})", census::kind_str(st.kind)),
            None => anyhow::bail!(
                "service {s} is not a stateful service (set `x-nodus.services.{s}.stateful: true` and its `kind` if it holds data)"
            ),
        }
        only.push(s.clone());
    }
    let engine = ctx.engine().await?;
    let opts = CensusOptions {
        fast: args.fast,
        ..Default::default()
    };
    let c = census::take(engine.as_ref(), project.name(), stateful, &only, &opts).await?;
    let totals = c.totals();
    if ctx.ui.json {
        ctx.ui.json_out(&serde_json::json!({
            "project": project.name(),
            "taken_at": c.taken_at,
            "services": c.services,
            "totals": totals,
        }));
        return Ok(());
    }
    if c.services.is_empty() {
        ctx.ui
            .status("no stateful services nodus can count in this stack");
        return Ok(());
    }
    for line in render(&c) {
        ctx.ui.data(line);
    }
    ctx.ui.data(format!("total: {}", totals.summary()));
    for name in &totals.unavailable {
        if let Some(ServiceCensus::Unavailable { reason }) = c.services.get(name) {
            ctx.ui.warn(format!("{name}: not counted: {reason}"));
        }
    }
    Ok(())
}

/// The census as text lines: per service and database, every table with its row count.
pub fn render(c: &census::Census) -> Vec<String> {
    let mut out = Vec::new();
    for (name, sc) in &c.services {
        match sc {
            ServiceCensus::Postgres(p) => {
                out.push(format!(
                    "{name} (postgres, system identifier {})",
                    p.system_identifier
                ));
                for (db, d) in &p.databases {
                    let rows = d.rows();
                    let est = d.tables.values().any(|t| t.estimated);
                    out.push(format!(
                        "  {db}: {} {}, {}{rows} {}",
                        d.tables.len(),
                        census::plural(d.tables.len(), "table", "tables"),
                        if est { "~" } else { "" },
                        census::plural(rows as usize, "row", "rows")
                    ));
                    let width = d
                        .tables
                        .keys()
                        .map(|k| k.chars().count())
                        .max()
                        .unwrap_or(0);
                    for (t, tc) in &d.tables {
                        let mut flags = Vec::new();
                        if tc.persistence == census::Persistence::Unlogged {
                            flags.push("unlogged");
                        }
                        if d.partitioned.contains(t) {
                            flags.push("partitioned");
                        }
                        if tc.estimated {
                            flags.push("estimate");
                        }
                        let flags = if flags.is_empty() {
                            String::new()
                        } else {
                            format!("  ({})", flags.join(", "))
                        };
                        out.push(format!("    {t:<width$}  {:>12}{flags}", tc.rows));
                    }
                }
            }
            ServiceCensus::Redis(r) => {
                out.push(format!("{name} (redis)"));
                if r.keys.is_empty() {
                    out.push("  no keys".into());
                }
                for (db, keys) in &r.keys {
                    let ttl = r.expires.get(db).copied().unwrap_or(0);
                    let ttl = if ttl > 0 {
                        format!(" ({ttl} with a TTL)")
                    } else {
                        String::new()
                    };
                    out.push(format!(
                        "  db{db}: {keys} {}{ttl}",
                        census::plural(*keys as usize, "key", "keys")
                    ));
                }
            }
            ServiceCensus::Qdrant(q) => {
                out.push(format!("{name} (qdrant)"));
                if q.collections.is_empty() {
                    out.push("  no collections".into());
                }
                for (coll, points) in &q.collections {
                    out.push(format!("  {coll}: {points} points"));
                }
            }
            ServiceCensus::Unavailable { reason } => {
                out.push(format!("{name}: not counted ({reason})"))
            }
        }
    }
    out
}
