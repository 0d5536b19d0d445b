//! Property tests over the three ways in (job files, HTTP JSON, the
//! configuration): not only "parsing never panics" but "everything done
//! with what parsing admits never panics": its deadlines at any `now`,
//! its place in the queue, the report and `/metrics` showing it queued,
//! running and finished, its record as TOML and JSON, the file it is put
//! back as for a retry (which must parse again). Values are drawn across
//! their ranges and at both ends, and past them.
//!
//! Each property runs at most 256 cases; the whole module takes about a
//! second.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use crate::config::Config;
use crate::config::Overrides;
use crate::job::*;
use crate::record::{Record, Status};
use crate::scheduler::{Queue, Queued, Slots};
use crate::status::{FinishedRow, Histogram, QueuedRow, RunningRow, Snapshot, TypeRow};
use crate::time::props::{
    admitted_datetime_text, any_duration, any_instant, datetime_text, wild_instant,
};
use crate::{metrics, report, time, values};

/// Types at the ends of their ranges: `edge` has every duration at a
/// century and retries at a million, `free` takes args and any params,
/// `t` declares params and uses them in its command.
fn config() -> Config {
    let me = crate::config::current_user();
    let text = format!(
        r#"keep = "100y"
kill_grace = "100y"
stop_timeout = "100y"
[resources]
gpu = 1000
[types.t]
command = ["x", "{{a}}"]
user = "{me}"
params = {{ a = "string", b = "integer?" }}
[types.free]
command = ["echo"]
user = "{me}"
accept_args = true
[types.edge]
command = ["true"]
user = "{me}"
timeout = "100y"
keep = "100y"
retries = 1000000
retry_delay = "100y"
max_cpu = "100y"
needs = {{ gpu = 1000 }}
"#
    );
    Config::from_text(None, &text, Path::new("/"), &Overrides::default())
        .unwrap_or_else(|e| panic!("the fuzz configuration: {e}"))
}

/// Durations as a user may write them: mostly within the range (its ends
/// included), now and then past it.
pub(crate) fn duration_text() -> BoxedStrategy<String> {
    let admitted = prop_oneof![
        prop_oneof![
            Just("\"100y\""),
            Just("\"36500d\""),
            Just("3155760000"),
            Just("0"),
            Just("\"0ms\""),
            Just("\"1ns\""),
        ]
        .prop_map(String::from),
        (0..=time::MAX_DURATION.as_secs()).prop_map(|n| n.to_string()),
        (0u64..100, "(ns|ms|s|m|h|d|w|y)").prop_map(|(n, u)| format!("\"{n}{u}\"")),
    ];
    let wild = prop_oneof![
        prop_oneof![
            Just("3155760001"),
            Just("\"101y\""),
            Just("\"9223372036854775807s\""),
            Just("9223372036854775807"),
            Just("-9223372036854775808"),
            Just("-1"),
            Just("\"-1s\""),
        ]
        .prop_map(String::from),
        any::<i64>().prop_map(|n| n.to_string()),
        (any::<u64>(), "(ns|ms|s|m|h|d|w|y|years)").prop_map(|(n, u)| format!("\"{n}{u}\"")),
    ];
    prop_oneof![4 => admitted, 1 => wild].boxed()
}

/// Whole numbers mostly within `lo..=hi` (its ends included), now and
/// then past it.
pub(crate) fn int_within(lo: i64, hi: i64) -> BoxedStrategy<i64> {
    prop_oneof![
        4 => prop_oneof![Just(lo), Just(hi), lo..=hi],
        1 => prop_oneof![
            Just(lo.saturating_sub(1)),
            Just(hi.saturating_add(1)),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(i64::from(u32::MAX)),
            any::<i64>(),
        ],
    ]
    .boxed()
}

fn count_text() -> BoxedStrategy<String> {
    int_within(0, 1_000_000).prop_map(|n| n.to_string()).boxed()
}

fn priority_text() -> BoxedStrategy<String> {
    int_within(-1_000_000, 1_000_000)
        .prop_map(|n| n.to_string())
        .boxed()
}

/// Datetimes mostly within the range (its ends included), now and then
/// of any year.
fn datetime() -> BoxedStrategy<String> {
    prop_oneof![4 => admitted_datetime_text(), 1 => datetime_text()].boxed()
}

/// One line of a job file: a known key with a value of its kind (or of
/// another kind), or a stray line.
fn job_line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => duration_text().prop_map(|v| format!("timeout = {v}")),
        4 => duration_text().prop_map(|v| format!("keep = {v}")),
        4 => count_text().prop_map(|v| format!("retries = {v}")),
        4 => count_text().prop_map(|v| format!("attempts = {v}")),
        4 => priority_text().prop_map(|v| format!("priority = {v}")),
        4 => datetime().prop_map(|v| format!("not_before = {v}")),
        4 => datetime().prop_map(|v| format!("submitted = {v}")),
        1 => Just("email = \"ann@example.com\"".to_string()),
        1 => Just("args = [\"-v\", \"{a}\"]".to_string()),
        1 => "[a-z]{1,3}".prop_map(|v| format!("params = {{ a = \"{v}\", when = 0001-01-01 }}")),
        1 => count_text().prop_map(|v| format!("params = {{ a = \"x\", b = {v} }}")),
        1 => Just("params = { a = \"x\", f = nan, g = inf }".to_string()),
        1 => "[a-z_]{1,10} ?= ?[0-9a-z\"]{0,6}",
        1 => "[a-z0-9./-]{0,12}".prop_map(|v| format!("after = [\"{v}\", \"p\"]")),
        1 => "[a-z0-9./-]{0,12}".prop_map(|v| format!("after_any = [\"{v}\"]")),
        1 => ".{0,120}".prop_map(|v| format!("unique = {}", toml::Value::String(v))),
        1 => int_within(-2, 1002).prop_map(|n| format!("needs = {{ gpu = {n} }}")),
        1 => Just("needs = { tpu = 1 }".to_string()),
    ]
}

pub(crate) fn job_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("t"), Just("free"), Just("edge")],
        proptest::collection::vec(job_line(), 0..6),
    )
        .prop_map(|(kind, lines)| {
            // A later line with the same key makes the file invalid TOML:
            // keep the first of each, so that most cases reach the checks.
            let mut seen = std::collections::BTreeSet::new();
            let mut text = format!("type = \"{kind}\"\n");
            for line in lines {
                let key = line.split('=').next().unwrap_or("").trim().to_string();
                if seen.insert(key) {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            text
        })
}

/// Any JSON value, nested a little.
fn any_json() -> BoxedStrategy<serde_json::Value> {
    use serde_json::Value as J;
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        any::<u64>().prop_map(J::from),
        any::<f64>().prop_map(J::from),
        ".{0,12}".prop_map(J::String),
        datetime_text().prop_map(J::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(J::Array),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| J::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A JSON job: the known keys, each with a value of its kind at or near
/// the edges of its range, or now and then of any kind.
fn json_job() -> BoxedStrategy<serde_json::Value> {
    use serde_json::{Value as J, json};
    let number = |lo: i64, hi: i64| {
        prop_oneof![
            8 => int_within(lo, hi).prop_map(J::from),
            1 => Just(json!(u64::MAX)),
            1 => Just(json!(1e300)),
            1 => any_json(),
        ]
        .boxed()
    };
    let duration = prop_oneof![
        4 => duration_text().prop_map(|d| match d.strip_prefix('"') {
            Some(s) => J::String(s.trim_end_matches('"').to_string()),
            None => d.parse::<i64>().map_or(J::Null, J::from),
        }),
        1 => number(0, time::MAX_DURATION.as_secs().try_into().unwrap_or(0)),
    ]
    .boxed();
    let datetime = prop_oneof![
        4 => datetime().prop_map(J::String),
        1 => int_within(0, 253_402_300_799).prop_map(J::from),
    ]
    .boxed();
    let count = number(0, 1_000_000);
    (
        prop_oneof![Just("free"), Just("edge")],
        proptest::option::weighted(0.5, duration.clone()),
        proptest::option::weighted(0.5, duration),
        proptest::option::weighted(0.5, count.clone()),
        proptest::option::weighted(0.5, count),
        proptest::option::weighted(0.5, number(-1_000_000, 1_000_000)),
        proptest::option::weighted(0.5, datetime.clone()),
        proptest::option::weighted(0.5, datetime),
        proptest::option::weighted(0.3, any_json()),
    )
        .prop_map(
            |(kind, timeout, keep, retries, attempts, priority, nb, sub, params)| {
                let mut o = serde_json::Map::new();
                o.insert("type".into(), json!(kind));
                for (k, v) in [
                    ("timeout", timeout),
                    ("keep", keep),
                    ("retries", retries),
                    ("attempts", attempts),
                    ("priority", priority),
                    ("not_before", nb),
                    ("submitted", sub),
                    ("params", params),
                ] {
                    if let Some(v) = v {
                        o.insert(k.into(), v);
                    }
                }
                J::Object(o)
            },
        )
        .boxed()
}

/// The ranges parsing promises.
fn assert_in_range(job: &Job) {
    let in_time = |t: SystemTime| t >= time::EARLIEST && t <= time::latest();
    assert!((-1_000_000..=1_000_000).contains(&job.priority), "{job:?}");
    assert!(
        job.attempts <= 1_000_000 && job.retries <= 1_000_000,
        "{job:?}"
    );
    assert!(
        job.timeout.is_none_or(|d| d <= time::MAX_DURATION),
        "{job:?}"
    );
    assert!(job.keep <= time::MAX_DURATION, "{job:?}");
    assert!(job.not_before.is_none_or(in_time), "{job:?}");
    assert!(job.submitted.is_none_or(in_time), "{job:?}");
    assert!(
        job.after.len() + job.after_any.len() <= crate::job::MAX_PARENTS,
        "{job:?}"
    );
    assert!(
        job.after
            .iter()
            .chain(&job.after_any)
            .all(|p| crate::ids::valid_id(p)),
        "{job:?}"
    );
    assert!(
        job.unique
            .as_ref()
            .is_none_or(|u| (1..=crate::job::MAX_UNIQUE_BYTES).contains(&u.len())),
        "{job:?}"
    );
    assert!(
        job.needs.values().all(|n| (1..=1000).contains(n)),
        "{job:?}"
    );
}

/// Everything the daemon, the report, `/metrics`, the record and the API
/// do with a job, at `now`. Panics (the property's failure) on any
/// overflow, and when the file a retry would write does not parse again.
pub(crate) fn everything_with(
    job: &Job,
    text: &str,
    config: &Config,
    now: SystemTime,
    ahead: Duration,
) {
    assert_in_range(job);
    let Some(ty) = config.types.get(&job.kind) else {
        panic!("a parsed job has a configured type: {job:?}");
    };
    let inow = time::deadline(Instant::now(), ahead);

    // Deadlines: the timeout, the kill after it, the wake-up for
    // `not_before`, the expiry, the retry.
    if let Some(t) = job.timeout {
        let dl = time::deadline(inow, t);
        let _ = time::deadline(dl, config.kill_grace);
    }
    let _ = time::deadline(inow, config.stop_timeout);
    if let Some(nb) = job.not_before {
        let _ = time::instant_at(inow, now, nb);
    }
    let expires = time::add(now, job.keep);
    let attempt = job.attempts + 1;
    let delay = time::retry_delay(ty.retry_delay, attempt, time::jitter(now));
    let retry_at = time::add(now, delay);
    let _ = (time::format_duration(delay), time::format_rfc3339(retry_at));
    let _ = argv(ty, job);
    for v in job.params.values() {
        let _ = (scalar_text(v), is_scalar(v));
    }

    // The file a retry puts back in new/ parses again, as the same job
    // with one more attempt.
    if attempt <= job.retries {
        let mut table: toml::Table = toml::from_str(text).unwrap_or_default();
        table.insert("attempts".into(), toml::Value::Integer(attempt.into()));
        let submitted = job.submitted.unwrap_or(now);
        table.insert(
            "submitted".into(),
            toml::Value::Datetime(time::to_toml(submitted)),
        );
        table.insert(
            "not_before".into(),
            toml::Value::Datetime(time::to_toml(retry_at)),
        );
        let again = toml::to_string(&table).unwrap_or_default();
        match parse(again.as_bytes(), config) {
            Ok(j) => assert_eq!(j.attempts, attempt),
            Err(e) => panic!("a requeued job is refused: {e}\n{again}"),
        }
    }

    // The queue.
    let submitted = job.submitted.unwrap_or(now);
    let mut q = Queue::default();
    q.push(
        Queued::of("j.toml", "j".into(), job, submitted, 1),
        now,
        &|_| crate::scheduler::Parent::Pending,
    );
    q.promote(now);
    let _ = q.next_wakeup();
    let (limit, running, paused) = (|_: &str| 1, |_: &str| 0, |_: &str| false);
    let free = crate::pool::Pool::new(&config.resources).free();
    let slots = Slots {
        total: 1,
        running_total: 0,
        limit: &limit,
        running: &running,
        paused: &paused,
        free: &free,
        capacity: &free,
        allow: &|_| true,
    };
    let _ = (q.first(50).len(), q.pick(&slots).is_some());

    // The report and /metrics with the job queued, running and finished.
    let mut durations = BTreeMap::new();
    let mut h = Histogram::default();
    for d in [job.timeout.unwrap_or_default(), job.keep, delay] {
        h.observe(d);
    }
    durations.insert(job.kind.clone(), h);
    let ran = job.timeout.unwrap_or(job.keep);
    let mut snapshot = Snapshot {
        generated: Some(now),
        total: config.total,
        running_total: 1,
        queued_total: 1,
        draining: false,
        paused_all: true,
        history: Default::default(),
        schedules: Vec::new(),
        types: vec![TypeRow {
            name: job.kind.clone(),
            limit: config.limit_of(&job.kind),
            running: 1,
            queued: 1,
            paused: true,
        }],
        running: vec![RunningRow {
            id: "j".into(),
            kind: job.kind.clone(),
            started: submitted,
            pid: u32::MAX,
            attempt,
            submitter: Some("\u{202e}<b>".into()),
        }],
        queued: vec![QueuedRow {
            id: "j".into(),
            kind: job.kind.clone(),
            priority: job.priority,
            submitted,
            not_before: job.not_before,
            waiting_for: job.after.iter().chain(&job.after_any).cloned().collect(),
            submitter: None,
        }],
        finished: vec![FinishedRow {
            id: "j".into(),
            kind: job.kind.clone(),
            status: Status::TimedOut,
            finished: time::add(submitted, ran),
            duration: Some(ran),
            exit_code: None,
            signal: Some("SIGKILL".into()),
            error: Some(format!("timed out after {}", time::format_duration(ran))),
            usage: Some(crate::record::Usage {
                cpu_seconds: ran.as_secs_f64(),
                max_rss_bytes: u64::MAX,
                memory_peak_bytes: Some(u64::MAX),
                oom_killed: Some(true),
            }),
            submitter: Some("ann".into()),
        }],
        finished_counts: BTreeMap::from([((job.kind.clone(), Status::TimedOut), u64::MAX)]),
        durations,
    };
    // The history the report draws from, fed with the same finished rows.
    let mut history = crate::history::History::default();
    for r in &snapshot.finished {
        history.observe(&r.kind, r, now);
    }
    history.absorb_failures(snapshot.finished.iter().cloned());
    snapshot.history = std::sync::Arc::new(history);
    for at in [now, time::EARLIEST, time::latest(), expires] {
        let html = report::render(&snapshot, at);
        assert!(html.ends_with("</html>\n"));
    }
    let _ = metrics::render(&snapshot, config);

    // Its record, as the daemon writes it and the API and client read it.
    let mut rec = Record::new("j", &job.kind, Status::Failed);
    rec.submitted = Some(time::to_toml(submitted));
    rec.started = Some(time::to_toml(now));
    rec.finished = Some(time::to_toml(time::add(now, ran)));
    rec.expires = Some(time::to_toml(expires));
    rec.attempts = attempt;
    rec.email = job.email.clone();
    rec.priority = (job.priority != 0).then_some(job.priority);
    rec.args = job.args.clone();
    rec.params = (!job.params.is_empty()).then(|| job.params.clone());
    let written = match rec.to_toml() {
        Ok(t) => t,
        Err(e) => panic!("a record cannot be written: {e}"),
    };
    match Record::from_toml(&written) {
        Ok(back) => {
            let _ = (back.finished_at(), back.expires_at(), back.duration());
        }
        Err(e) => panic!("a record does not read back: {e}\n{written}"),
    }
    let _ = rec.to_json();
    let _ = values::toml_to_json(&toml::Value::Table(job.params.clone()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_job_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes, &config());
    }

    #[test]
    fn the_job_parser_never_panics_on_near_toml(lines in proptest::collection::vec(
        "(type|params|priority|email|timeout|retries|keep|not_before|args|attempts|submitted|\\[params\\]|a|b)( ?= ?)(\"[a-z@.]*\"|-?[0-9]{1,20}|\\[\"x\"\\]|\\{ ?a ?= ?\"q\" ?\\}|true|2026-11-23T03:00:00Z|\"[0-9]+(ms|s|m|h|d)\")?",
        0..8,
    )) {
        let _ = parse(lines.join("\n").as_bytes(), &config());
    }

    #[test]
    fn everything_done_with_an_admitted_job_file_never_panics(
        text in job_text(),
        now in prop_oneof![any_instant(), wild_instant()],
        ahead in any_duration(),
    ) {
        let config = config();
        match parse(text.as_bytes(), &config) {
            Ok(job) => everything_with(&job, &text, &config, now, ahead),
            Err(e) => prop_assert!(!e.contains('\n'), "one line: {}", e),
        }
    }

    #[test]
    fn everything_done_with_an_admitted_json_job_never_panics(
        body in prop_oneof![4 => json_job(), 1 => any_json()],
        now in any_instant(),
    ) {
        let config = config();
        if let Ok(text) = values::json_job_to_toml(&body)
            && let Ok(job) = parse(text.as_bytes(), &config)
        {
            everything_with(&job, &text, &config, now, Duration::ZERO);
        }
    }
}
