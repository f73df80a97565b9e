//! Retention (pure): which snapshots `prune` keeps, and why.
//!
//! Applied per volume (snapshots are grouped by [`Candidate::group`]), grandfather-father-son
//! like restic's `--keep-*`:
//! - `last: n` keeps the `n` newest snapshots;
//! - `hourly: n` keeps the newest snapshot of each of the `n` most recent hours that have
//!   snapshots; `daily` likewise for calendar days and `weekly` for ISO weeks (all in UTC);
//! - the rules are independent: a snapshot kept by one rule still uses up a slot of the others;
//! - with every count unset, the `10` newest are kept;
//! - the newest *verified* snapshot of a volume is never removed, whatever the policy says.
//!
//! Safety snapshots (taken before a restore) count like any other.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use crate::stack::xnodus::Retention;

/// Kept when no count is set at all.
pub const DEFAULT_KEEP_LAST: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// The volume (or service) the snapshot is of.
    pub group: String,
    pub created: DateTime<Utc>,
    /// Verified OK by `snapshot verify` (or a restore).
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub group: String,
    pub keep: bool,
    /// Why it is kept (e.g. "last #1", "daily 2025-06-29", "newest verified"); empty when removed.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
}

impl Rule {
    fn bucket(self, t: DateTime<Utc>) -> String {
        match self {
            // Every snapshot is its own bucket.
            Rule::Last => t.to_rfc3339(),
            Rule::Hourly => format!(
                "{:04}-{:02}-{:02} {:02}h",
                t.year(),
                t.month(),
                t.day(),
                t.hour()
            ),
            Rule::Daily => format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
            Rule::Weekly => {
                let w = t.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
        }
    }
    fn name(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
        }
    }
}

/// Decides, for every candidate, whether to keep it. The output is in the input's order.
pub fn plan(candidates: &[Candidate], policy: &Retention) -> Vec<Decision> {
    let all_unset = policy.last.is_none()
        && policy.hourly.is_none()
        && policy.daily.is_none()
        && policy.weekly.is_none();
    let rules: Vec<(Rule, u32)> = if all_unset {
        vec![(Rule::Last, DEFAULT_KEEP_LAST)]
    } else {
        [
            (Rule::Last, policy.last),
            (Rule::Hourly, policy.hourly),
            (Rule::Daily, policy.daily),
            (Rule::Weekly, policy.weekly),
        ]
        .into_iter()
        .filter_map(|(r, n)| n.filter(|n| *n > 0).map(|n| (r, n)))
        .collect()
    };

    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); candidates.len()];
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        groups.entry(&c.group).or_default().push(i);
    }
    for idx in groups.values_mut() {
        // Newest first; ties broken by id for determinism.
        idx.sort_by(|&a, &b| {
            candidates[b]
                .created
                .cmp(&candidates[a].created)
                .then_with(|| candidates[b].id.cmp(&candidates[a].id))
        });
        for &(rule, n) in &rules {
            let mut last_bucket: Option<String> = None;
            let mut used = 0u32;
            for &i in idx.iter() {
                if used >= n {
                    break;
                }
                let bucket = rule.bucket(candidates[i].created);
                // "last N" counts every snapshot, also two taken within the same second.
                if rule != Rule::Last && last_bucket.as_deref() == Some(&bucket) {
                    continue;
                }
                used += 1;
                reasons[i].push(match rule {
                    Rule::Last => format!("last #{used}"),
                    _ => format!("{} {bucket}", rule.name()),
                });
                last_bucket = Some(bucket);
            }
        }
        if let Some(&i) = idx.iter().find(|&&i| candidates[i].verified) {
            if reasons[i].is_empty() {
                reasons[i].push("newest verified".into());
            }
        }
    }
    candidates
        .iter()
        .zip(reasons)
        .map(|(c, reasons)| Decision {
            id: c.id.clone(),
            group: c.group.clone(),
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn hourly_series(group: &str, end: DateTime<Utc>, count: i64) -> Vec<Candidate> {
        (0..count)
            .map(|i| {
                let t = end - Duration::hours(count - 1 - i);
                Candidate {
                    id: format!("{}-{group}", t.format("%Y%m%dT%H%M%SZ")),
                    group: group.into(),
                    created: t,
                    verified: false,
                }
            })
            .collect()
    }

    #[test]
    fn last_n_keeps_snapshots_taken_within_the_same_second() {
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let c = |id: &str| Candidate {
            id: id.into(),
            group: "volume:v".into(),
            created: t,
            verified: false,
        };
        let d = plan(&[c("a"), c("b")], &policy(Some(2), None, None, None));
        assert_eq!(kept(&d).len(), 2, "{d:?}");
        let d = plan(&[c("a"), c("b"), c("c")], &Retention::default());
        assert_eq!(kept(&d).len(), 3, "{d:?}");
    }

    fn kept(d: &[Decision]) -> Vec<&Decision> {
        d.iter().filter(|d| d.keep).collect()
    }

    fn policy(
        last: Option<u32>,
        hourly: Option<u32>,
        daily: Option<u32>,
        weekly: Option<u32>,
    ) -> Retention {
        Retention {
            last,
            hourly,
            daily,
            weekly,
        }
    }

    #[test]
    fn zentoria_policy_over_120_days_of_hourly_snapshots() {
        // 2025-06-29 is a Sunday: the end of ISO week 2025-W26.
        let end = Utc.with_ymd_and_hms(2025, 6, 29, 23, 0, 0).unwrap();
        assert_eq!(end.weekday(), chrono::Weekday::Sun);
        let cands = hourly_series("volume:zentoria_pg", end, 120 * 24);
        assert_eq!(cands.len(), 2880);
        let d = plan(&cands, &policy(None, Some(168), Some(30), Some(12)));
        let k = kept(&d);
        // hourly: the 168 newest (2025-06-23 00:00 .. 06-29 23:00, one per hour);
        // daily: the 23:00 snapshot of 30 days (05-31 .. 06-29), 7 of them already hourly;
        // weekly: the Sunday 23:00 snapshot of 12 ISO weeks (W15 .. W26: 04-13 .. 06-29),
        //         5 of them (06-01 .. 06-29) already daily.
        assert_eq!(k.len(), 168 + (30 - 7) + (12 - 5));
        assert_eq!(d.len() - k.len(), 2880 - 198);
        let oldest_kept = k.iter().map(|d| &d.id).min().unwrap();
        assert_eq!(oldest_kept, "20250413T230000Z-volume:zentoria_pg");
        // Counting per rule: exactly the configured number of buckets each.
        let count = |rule: &str| {
            d.iter()
                .filter(|d| d.reasons.iter().any(|r| r.starts_with(rule)))
                .count()
        };
        assert_eq!(count("hourly"), 168);
        assert_eq!(count("daily"), 30);
        assert_eq!(count("weekly"), 12);
        // The newest is kept by all three rules.
        let newest = d
            .iter()
            .find(|d| d.id.starts_with("20250629T230000Z"))
            .unwrap();
        assert_eq!(newest.reasons.len(), 3, "{:?}", newest.reasons);
        // Something from 06-22 22:00 (inside no hourly window, not a day's newest) goes.
        assert!(
            !d.iter()
                .find(|d| d.id.starts_with("20250622T220000Z"))
                .unwrap()
                .keep
        );
    }

    #[test]
    fn all_unset_keeps_last_ten() {
        let end = Utc.with_ymd_and_hms(2025, 1, 10, 0, 0, 0).unwrap();
        let cands = hourly_series("volume:v", end, 25);
        let d = plan(&cands, &Retention::default());
        let k = kept(&d);
        assert_eq!(k.len(), 10);
        assert!(k.iter().all(|d| d.reasons[0].starts_with("last #")));
        // The ten newest are the last ten of the (oldest-first) input.
        assert!(d[15..].iter().all(|d| d.keep));
        assert!(d[..15].iter().all(|d| !d.keep));
    }

    #[test]
    fn groups_are_independent() {
        let end = Utc.with_ymd_and_hms(2025, 1, 10, 0, 0, 0).unwrap();
        let mut cands = hourly_series("volume:a", end, 5);
        cands.extend(hourly_series("volume:b", end, 5));
        let d = plan(&cands, &policy(Some(2), None, None, None));
        assert_eq!(kept(&d).iter().filter(|d| d.group == "volume:a").count(), 2);
        assert_eq!(kept(&d).iter().filter(|d| d.group == "volume:b").count(), 2);
    }

    #[test]
    fn newest_verified_is_never_removed() {
        let end = Utc.with_ymd_and_hms(2025, 1, 10, 0, 0, 0).unwrap();
        let mut cands = hourly_series("volume:v", end, 6);
        cands[1].verified = true; // old, verified
        cands[0].verified = true; // older, verified: not protected
        let d = plan(&cands, &policy(Some(1), None, None, None));
        assert!(d[5].keep && d[5].reasons == vec!["last #1".to_string()]);
        assert!(d[1].keep);
        assert_eq!(d[1].reasons, vec!["newest verified".to_string()]);
        assert!(!d[0].keep);
        assert_eq!(kept(&d).len(), 2);
    }

    #[test]
    fn several_snapshots_in_one_hour_keep_only_the_newest() {
        let t = Utc.with_ymd_and_hms(2025, 1, 10, 5, 0, 0).unwrap();
        let cands: Vec<Candidate> = (0..4)
            .map(|i| Candidate {
                id: format!("s{i}"),
                group: "g".into(),
                created: t + Duration::minutes(10 * i),
                verified: false,
            })
            .collect();
        let d = plan(&cands, &policy(None, Some(5), None, None));
        assert_eq!(kept(&d).len(), 1);
        assert!(d[3].keep);
        // daily: the same
        let d = plan(&cands, &policy(None, None, Some(5), None));
        assert_eq!(
            kept(&d).iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            vec!["s3"]
        );
    }

    #[test]
    fn zero_counts_remove_everything_but_the_newest_verified() {
        let end = Utc.with_ymd_and_hms(2025, 1, 10, 0, 0, 0).unwrap();
        let mut cands = hourly_series("g", end, 3);
        let d = plan(&cands, &policy(Some(0), None, None, None));
        assert!(kept(&d).is_empty());
        cands[2].verified = true;
        let d = plan(&cands, &policy(Some(0), None, None, None));
        assert_eq!(kept(&d).len(), 1);
    }

    #[test]
    fn iso_weeks_span_new_year() {
        // 2024-12-30 (Mon) .. 2025-01-05 (Sun) are all ISO week 2025-W01.
        let a = Utc.with_ymd_and_hms(2024, 12, 30, 12, 0, 0).unwrap();
        let b = Utc.with_ymd_and_hms(2025, 1, 5, 12, 0, 0).unwrap();
        let c = Utc.with_ymd_and_hms(2024, 12, 29, 12, 0, 0).unwrap();
        let cands: Vec<Candidate> = [c, a, b]
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: format!("s{i}"),
                group: "g".into(),
                created: *t,
                verified: false,
            })
            .collect();
        let d = plan(&cands, &policy(None, None, None, Some(10)));
        let k: Vec<_> = kept(&d)
            .iter()
            .map(|d| (d.id.clone(), d.reasons[0].clone()))
            .collect();
        assert_eq!(
            k,
            vec![
                ("s0".to_string(), "weekly 2024-W52".to_string()),
                ("s2".to_string(), "weekly 2025-W01".to_string())
            ]
        );
    }
}
