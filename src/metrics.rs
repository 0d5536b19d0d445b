//! `/metrics` (SPEC §9): the Prometheus text exposition of a snapshot.
//!
//! Pure, like the report: a function of a [`Snapshot`] and
//! the configuration, no IO, no clock, no lock. The HTTP API serves what
//! [`render`] returns; nothing else reads it.
//!
//! Invariants: every configured type has every series (zeros included),
//! so that a query never finds a series missing just because nothing
//! happened yet; a type no configuration names (a rejected job's `type`
//! is whatever it said) adds only the counts it has, so that junk adds as
//! few series as it can; every label value is escaped.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::config::Config;
use crate::record::Status;
use crate::status::{BUCKETS, Histogram, Snapshot};

/// The exposition of a snapshot: jobs by state, finished counts, the
/// duration histogram, and the limits `config` sets.
pub fn render(s: &Snapshot, config: &Config) -> String {
    let mut types: BTreeSet<&str> = config.types.keys().map(String::as_str).collect();
    types.extend(s.types.iter().map(|t| t.name.as_str()));
    let mut timed = types.clone();
    timed.extend(s.durations.keys().map(String::as_str));
    let mut finished: Vec<(&str, Status, u64)> = Vec::new();
    for t in &types {
        for st in Status::ALL.into_iter().filter(|s| s.is_final()) {
            let n = s.finished_counts.get(&(t.to_string(), st)).copied();
            finished.push((t, st, n.unwrap_or(0)));
        }
    }
    for ((t, st), n) in &s.finished_counts {
        if !types.contains(t.as_str()) {
            finished.push((t, *st, *n));
        }
    }

    let mut out = String::with_capacity(4096);
    let mut w = |line: std::fmt::Arguments| {
        let _ = out.write_fmt(line);
        out.push('\n');
    };
    w(format_args!(
        "# HELP raccoond_jobs Jobs queued or running now, by state and type."
    ));
    w(format_args!("# TYPE raccoond_jobs gauge"));
    for state in ["queued", "running"] {
        for t in &types {
            let row = s.types.iter().find(|r| r.name == *t);
            let n = row.map_or(0, |r| {
                if state == "queued" {
                    r.queued
                } else {
                    r.running
                }
            });
            w(format_args!(
                "raccoond_jobs{{state=\"{state}\",type=\"{}\"}} {n}",
                label(t)
            ));
        }
    }
    w(format_args!(
        "# HELP raccoond_finished_total Jobs finished since the daemon started, by type and status."
    ));
    w(format_args!("# TYPE raccoond_finished_total counter"));
    for (t, st, n) in &finished {
        w(format_args!(
            "raccoond_finished_total{{type=\"{}\",status=\"{st}\"}} {n}",
            label(t)
        ));
    }
    w(format_args!(
        "# HELP raccoond_job_duration_seconds How long finished jobs ran, by type."
    ));
    w(format_args!(
        "# TYPE raccoond_job_duration_seconds histogram"
    ));
    let empty = Histogram::default();
    for t in &timed {
        let h = s.durations.get(*t).unwrap_or(&empty);
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(h.buckets) {
            cumulative = n.saturating_add(cumulative);
            w(format_args!(
                "raccoond_job_duration_seconds_bucket{{type=\"{}\",le=\"{le}\"}} {cumulative}",
                label(t)
            ));
        }
        w(format_args!(
            "raccoond_job_duration_seconds_bucket{{type=\"{}\",le=\"+Inf\"}} {}",
            label(t),
            h.count
        ));
        w(format_args!(
            "raccoond_job_duration_seconds_sum{{type=\"{}\"}} {}",
            label(t),
            h.sum
        ));
        w(format_args!(
            "raccoond_job_duration_seconds_count{{type=\"{}\"}} {}",
            label(t),
            h.count
        ));
    }
    w(format_args!(
        "# HELP raccoond_limit Jobs of a type that may run at once."
    ));
    w(format_args!("# TYPE raccoond_limit gauge"));
    for t in &types {
        w(format_args!(
            "raccoond_limit{{type=\"{}\"}} {}",
            label(t),
            config.limit_of(t)
        ));
    }
    w(format_args!(
        "# HELP raccoond_paused Whether new starts of a type are held (pause/TYPE or pause/ALL)."
    ));
    w(format_args!("# TYPE raccoond_paused gauge"));
    for t in &types {
        let held = s.paused_all || s.types.iter().any(|r| r.name == *t && r.paused);
        w(format_args!(
            "raccoond_paused{{type=\"{}\"}} {}",
            label(t),
            u8::from(held)
        ));
    }
    w(format_args!(
        "# HELP raccoond_paused_all Whether pause/ALL holds new starts of every type."
    ));
    w(format_args!("# TYPE raccoond_paused_all gauge"));
    w(format_args!(
        "raccoond_paused_all {}",
        u8::from(s.paused_all)
    ));
    w(format_args!(
        "# HELP raccoond_total_limit Jobs that may run at once, all types together."
    ));
    w(format_args!("# TYPE raccoond_total_limit gauge"));
    w(format_args!("raccoond_total_limit {}", config.total));
    out
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn configured_types_get_every_series_and_junk_only_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        let over = crate::config::Overrides::default();
        let text = format!(
            "total = 3\n[types.echo]\ncommand = [\"true\"]\nuser = \"{}\"\nlimit = 2\n",
            crate::config::current_user()
        );
        let config = Config::from_text(None, &text, dir.path(), &over).unwrap();
        let mut s = Snapshot::default();
        s.finished_counts
            .insert(("junk\"x".to_string(), Status::Rejected), 2);
        let m = render(&s, &config);
        for want in [
            "raccoond_jobs{state=\"queued\",type=\"echo\"} 0\n",
            "raccoond_jobs{state=\"running\",type=\"echo\"} 0\n",
            "raccoond_finished_total{type=\"echo\",status=\"succeeded\"} 0\n",
            "raccoond_finished_total{type=\"junk\\\"x\",status=\"rejected\"} 2\n",
            "raccoond_job_duration_seconds_bucket{type=\"echo\",le=\"+Inf\"} 0\n",
            "raccoond_job_duration_seconds_count{type=\"echo\"} 0\n",
            "raccoond_limit{type=\"echo\"} 2\n",
            "raccoond_paused{type=\"echo\"} 0\n",
            "raccoond_paused_all 0\n",
            "raccoond_total_limit 3\n",
        ] {
            assert!(m.contains(want), "missing {want:?} in:\n{m}");
        }
        assert!(
            !m.contains("type=\"junk\\\"x\",status=\"succeeded\""),
            "{m}"
        );
        assert!(!m.contains("raccoond_limit{type=\"junk"), "{m}");
        s.paused_all = true;
        let m = render(&s, &config);
        for want in [
            "raccoond_paused{type=\"echo\"} 1\n",
            "raccoond_paused_all 1\n",
        ] {
            assert!(m.contains(want), "missing {want:?} in:\n{m}");
        }
    }
}
