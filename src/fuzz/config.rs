//! Property tests over `raccoond.toml`: whatever the file says, parsing
//! never panics, an admitted configuration has every value within its
//! range, and everything the daemon does with it (its deadlines, retry
//! delays, expiries, `/metrics`, jobs judged and run under it) never
//! panics. Values are drawn across their ranges, at both ends and past
//! them. Each property runs at most 256 cases.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::job::{duration_text, everything_with, int_within, job_text};
use crate::config::*;
use crate::status::{Snapshot, TypeRow};
use crate::time::props::any_instant;
use crate::{metrics, time};

/// Byte sizes mostly within `lo..=hi`, as numbers or with a unit, now and
/// then past it.
fn size_text(lo: u64, hi: u64) -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop_oneof![
            Just(lo.to_string()),
            Just(hi.to_string()),
            (lo..=hi).prop_map(|n| n.to_string()),
            (lo.div_ceil(1 << 20)..=hi >> 20).prop_map(|n| format!("\"{n}MiB\"")),
        ],
        1 => prop_oneof![
            Just(lo.saturating_sub(1).to_string()),
            Just(hi.saturating_add(1).to_string()),
            Just("-1".to_string()),
            Just("\"16EiB\"".to_string()),
            Just(format!("\"{}\"", u64::MAX)),
            any::<i64>().prop_map(|n| n.to_string()),
        ],
    ]
    .boxed()
}

fn count(lo: i64, hi: i64) -> BoxedStrategy<String> {
    int_within(lo, hi).prop_map(|n| n.to_string()).boxed()
}

/// Lines of the top of the file, each key at most once.
fn top_lines() -> impl Strategy<Value = Vec<String>> {
    let line = prop_oneof![
        count(1, 100_000).prop_map(|v| format!("total = {v}")),
        duration_text().prop_map(|v| format!("keep = {v}")),
        duration_text().prop_map(|v| format!("stop_timeout = {v}")),
        duration_text().prop_map(|v| format!("kill_grace = {v}")),
        duration_text().prop_map(|v| format!("rescan = {v}")),
        size_text(1, 1 << 30).prop_map(|v| format!("max_job_bytes = {v}")),
        size_text(0, 1 << 40).prop_map(|v| format!("max_output_bytes = {v}")),
        Just("fsync = false".to_string()),
    ];
    proptest::collection::vec(line, 0..4)
}

/// Lines of a type's table, each key at most once.
fn type_lines() -> impl Strategy<Value = Vec<String>> {
    let line = prop_oneof![
        count(1, 100_000).prop_map(|v| format!("limit = {v}")),
        duration_text().prop_map(|v| format!("timeout = {v}")),
        count(0, 1_000_000).prop_map(|v| format!("retries = {v}")),
        duration_text().prop_map(|v| format!("retry_delay = {v}")),
        duration_text().prop_map(|v| format!("keep = {v}")),
        size_text(1 << 20, 1 << 50).prop_map(|v| format!("max_memory = {v}")),
        duration_text().prop_map(|v| format!("max_cpu = {v}")),
        count(1, 4_194_304).prop_map(|v| format!("max_processes = {v}")),
        count(-20, 19).prop_map(|v| format!("nice = {v}")),
    ];
    proptest::collection::vec(line, 0..4)
}

/// Lines with their keys' first appearance only (a second one makes the
/// file invalid TOML, which other cases cover).
fn first_of_each(lines: Vec<String>) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = String::new();
    for line in lines {
        let key = line.split('=').next().unwrap_or("").trim().to_string();
        if seen.insert(key) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn config_text() -> impl Strategy<Value = String> {
    (
        top_lines(),
        proptest::option::of(size_text(0, 1 << 30)),
        type_lines(),
        type_lines(),
    )
        .prop_map(|(top, attach, edge, free)| {
            let me = current_user();
            let mut text = first_of_each(top);
            if let Some(a) = attach {
                text.push_str(&format!(
                    "[mail]\nsendmail = \"/bin/true\"\nmax_attachment_bytes = {a}\n"
                ));
            }
            text.push_str(&format!(
                "[types.edge]\ncommand = [\"true\"]\nuser = \"{me}\"\n{}",
                first_of_each(edge)
            ));
            text.push_str(&format!(
                "[types.free]\ncommand = [\"echo\"]\nuser = \"{me}\"\naccept_args = true\n{}",
                first_of_each(free)
            ));
            text
        })
}

/// The ranges parsing promises.
fn assert_in_range(c: &Config) {
    let max = time::MAX_DURATION;
    assert!((1..=100_000).contains(&c.total), "{c:?}");
    assert!(c.keep <= max && c.stop_timeout <= max && c.kill_grace <= max);
    assert!(c.rescan.is_none_or(|d| d <= max));
    assert!((1..=1 << 30).contains(&c.max_job_bytes));
    assert!(c.max_output_bytes <= 1 << 40);
    assert!(
        c.mail
            .as_ref()
            .is_none_or(|m| m.max_attachment_bytes <= 1 << 30)
    );
    for t in c.types.values() {
        assert!(t.limit.is_none_or(|n| (1..=100_000).contains(&n)), "{t:?}");
        assert!(t.timeout.is_none_or(|d| d <= max) && t.keep.is_none_or(|d| d <= max));
        assert!(t.retries <= 1_000_000 && t.retry_delay <= max);
        assert!(t.max_cpu.is_none_or(|d| d <= max));
        assert!(
            t.max_memory
                .is_none_or(|n| (1 << 20..=1 << 50).contains(&n))
        );
        assert!(t.max_processes.is_none_or(|n| (1..=4_194_304).contains(&n)));
        assert!(t.nice.is_none_or(|n| (-20..=19).contains(&n)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_config_parser_never_panics(text in "(\\[types\\.[a-z]\\]|\\[http\\]|\\[mail\\]|total|keep|fsync|rescan|command|limit|user|listen|smtp|params|nice|max_memory)( ?= ?)?(\"[a-z0-9:./]*\"|-?[0-9]{1,12}|\\[\"x\"\\]|true|\\{ ?a ?= ?\"string\" ?\\})?\n{0,1}") {
        let _ = Config::from_text(None, &text, Path::new("/"), &Overrides::default());
    }

    #[test]
    fn everything_done_with_an_admitted_configuration_never_panics(
        text in config_text(),
        job in job_text(),
        now in any_instant(),
        total in proptest::option::weighted(0.2, prop_oneof![Just(0usize), Just(1), Just(100_000), Just(100_001), Just(usize::MAX)]),
    ) {
        let over = Overrides { total, ..Overrides::default() };
        let c = match Config::from_text(None, &text, Path::new("/"), &over) {
            Ok(c) => c,
            Err(e) => {
                prop_assert!(!e.0.contains('\n'), "one line: {}", e);
                return Ok(());
            }
        };
        assert_in_range(&c);
        let inow = Instant::now();
        for d in [c.stop_timeout, c.kill_grace, c.rescan.unwrap_or_default()] {
            let dl = time::deadline(inow, d);
            let _ = time::deadline(dl, c.kill_grace);
        }
        let _ = time::format_rfc3339(time::add(now, c.keep));
        let mut rows = Vec::new();
        for (name, t) in &c.types {
            for attempt in [1, t.retries, t.retries.saturating_add(1), u32::MAX] {
                let delay = time::retry_delay(t.retry_delay, attempt, time::jitter(now));
                let _ = time::format_rfc3339(time::add(now, delay));
            }
            rows.push(TypeRow {
                name: name.clone(),
                limit: c.limit_of(name),
                running: c.limit_of(name),
                queued: usize::MAX,
                paused: true,
            });
        }
        let snapshot = Snapshot { types: rows, total: c.total, ..Snapshot::default() };
        let _ = metrics::render(&snapshot, &c);
        let _ = crate::report::render(&snapshot, now);
        let job = job.replacen("type = \"t\"", "type = \"free\"", 1);
        if let Ok(j) = crate::job::parse(job.as_bytes(), &c) {
            everything_with(&j, &job, &c, now, Duration::ZERO);
        }
    }
}
