//! The HTTP API under load, and the report's cost with a huge queue.
//!
//! 1. A release `raccoond` on a temporary spool with one type whose
//!    command is `/bin/true`; several client threads, each on one
//!    keep-alive connection, `POST /jobs` until the total is reached.
//!    Once with `fsync = false`, once with `fsync = true`: submissions per
//!    second, per-request latency, and how long until every job has a
//!    record (the jobs really run, competing for the same cores).
//! 2. `report::render` on a snapshot that says 100 000 jobs are queued
//!    (with the rows a snapshot carries): milliseconds per page.
//! 3. `GET /jobs?limit=100` with 100 000 records in `done/` (written
//!    before the daemon starts), on one keep-alive connection: the first
//!    answers (before the daemon has read `done/` once, from the folders),
//!    then once the daemon's index of the newest records answers; and the
//!    folder listing alone (`spool::query`'s `list`, what every answer
//!    cost before the index), in this process.
//!
//! `cargo bench --bench http`; `RACCOON_BENCH_N` submissions per run
//! (default 5000), `RACCOON_BENCH_CLIENTS` threads (default 8),
//! `RACCOON_BENCH_RECORDS` records for 3 (default 100 000),
//! `RACCOON_BENCH_PARTS` which parts run (default `post,render,list`),
//! `RACCOON_BENCH_BIN` another `raccoond` to measure (an older build, for
//! a before and after), `RACCOON_BENCH_DIR` where the temporary spool
//! goes. It prints figures and asserts nothing about time.

// A benchmark that cannot do its IO has nothing to report: panicking says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::read_body;
use raccoond::record::Status;
use raccoond::status::{FinishedRow, Histogram, QueuedRow, ROWS, RunningRow, Snapshot, TypeRow};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env_or("RACCOON_BENCH_N", 5000);
    let clients = env_or("RACCOON_BENCH_CLIENTS", 8).max(1);
    let records = env_or("RACCOON_BENCH_RECORDS", 100_000);
    let parts = std::env::var("RACCOON_BENCH_PARTS").unwrap_or_else(|_| "post,render,list".into());
    let bin = daemon_binary();
    println!(
        "raccoond HTTP benchmark: {n} POST /jobs per run, {clients} keep-alive clients, {bin:?}"
    );

    let mut rows = Vec::new();
    if parts.contains("post") {
        for (fsync, hold) in [(false, false), (true, false), (false, true), (true, true)] {
            rows.push(((fsync, hold), submissions(&bin, fsync, n, clients, hold)));
        }
    }
    if parts.contains("render") {
        print_render(&render_cost(100_000, 200));
    }
    if !rows.is_empty() {
        print_posts(&rows);
    }
    if parts.contains("list") {
        let l = list_cost(&bin, records);
        println!();
        println!(
            "| GET /jobs?limit=100, {records} records in done/ | answers | p50 ms | mean ms | max ms |"
        );
        println!("|---|---:|---:|---:|---:|");
        for (what, t) in [
            (
                "before the daemon has read done/ (from the folders)",
                &l.cold,
            ),
            ("once the daemon has read done/", &l.warm),
            (
                "spool::query list alone, in process (the path before the index)",
                &l.folders,
            ),
            (
                "the 100 newest records read by id (spool::query find), in process",
                &l.finds,
            ),
        ] {
            println!(
                "| {what} | {} | {:.2} | {:.2} | {:.2} |",
                t.len(),
                percentile(t, 0.5),
                t.iter().fold(0.0, |a, b| a + b) / t.len().max(1) as f64,
                t.last().copied().unwrap_or(0.0)
            );
        }
    }
}

/// The value at `p` (0..=1) of sorted figures; 0 when there are none.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn print_render(render: &Render) {
    println!();
    println!(
        "| report::render, 100 000 queued ({ROWS} rows of each kind) | mean ms | max ms | bytes |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| {} pages | {:.3} | {:.3} | {} |",
        render.pages, render.mean_ms, render.max_ms, render.bytes
    );
}

fn print_posts(rows: &[((bool, bool), Run)]) {
    println!();
    println!(
        "| fsync | jobs | submissions/s | p50 ms | p99 ms | max ms | every job finished (or queued) after |"
    );
    println!("|-------|------|--------------:|-------:|-------:|-------:|------:|");
    for ((fsync, hold), r) in rows {
        println!(
            "| {:<5} | {} | {:>13.0} | {:>6.2} | {:>6.2} | {:>6.1} | {:>5.1} s |",
            if *fsync { "on" } else { "off" },
            if *hold {
                "held (not_before)"
            } else {
                "run at once"
            },
            r.per_sec,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.drained.as_secs_f64()
        );
    }
}

/// The release daemon: `RACCOON_BENCH_BIN`, else the one cargo built for
/// this benchmark, else `target/release/raccoond` next to the manifest,
/// built when missing.
fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RACCOON_BENCH_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_raccoond") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("release").join("raccoond");
    if !bin.is_file() {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--bin", "raccoond"])
            .current_dir(root)
            .status()
            .expect("run cargo build --release");
        assert!(status.success(), "cargo build --release failed");
    }
    bin
}

struct Run {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    drained: Duration,
}

/// A daemon on a temporary spool, killed (with its tasks) when dropped.
struct Daemon {
    child: Child,
    addr: String,
    spool: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, fsync: bool) -> Daemon {
    start_with(bin, fsync, |_| {})
}

/// Starts a daemon on a spool that `prepare` has put files in first.
fn start_with(bin: &Path, fsync: bool, prepare: impl FnOnce(&Path)) -> Daemon {
    let base = std::env::var_os("RACCOON_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("raccoond-bench-http.")
        .tempdir_in(base)
        .unwrap();
    prepare(&dir.path().join("spool"));
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name);
    let config = dir.path().join("raccoond.toml");
    std::fs::write(
        &config,
        format!(
            "spool = \"spool\"\ntotal = 64\nfsync = {fsync}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [types.noop]\ncommand = [\"/bin/true\"]\nuser = \"{me}\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("raccoond.log");
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(": ready,")
            && let Some(a) = text
                .lines()
                .find_map(|l| l.strip_prefix("http: listening on "))
        {
            break a.to_string();
        }
        assert!(Instant::now() < end, "raccoond did not get ready:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    Daemon {
        child,
        addr,
        spool: dir.path().join("spool"),
        _dir: dir,
    }
}

/// `hold`: the jobs carry a `not_before` far ahead, so that nothing runs
/// and the figure is the submission path alone.
fn submissions(bin: &Path, fsync: bool, n: usize, clients: usize, hold: bool) -> Run {
    let d = start(bin, fsync);
    let begin = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let addr = d.addr.clone();
            let count = n / clients + usize::from(c < n % clients);
            std::thread::spawn(move || client(&addr, count, hold))
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = begin.elapsed();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;

    // Every acknowledged job must end with a record (or, held, be queued).
    let done = d.spool.join(if hold { "new" } else { "done" });
    let end = Instant::now() + Duration::from_secs(300);
    loop {
        let records = std::fs::read_dir(&done)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".toml"))
                    .count()
            })
            .unwrap_or(0);
        if records >= n {
            break;
        }
        assert!(Instant::now() < end, "only {records} of {n} jobs finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    Run {
        per_sec: n as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        drained: begin.elapsed(),
    }
}

/// One keep-alive connection posting `count` jobs; the latency of each.
fn client(addr: &str, count: usize, hold: bool) -> Vec<Duration> {
    let body: &[u8] = if hold {
        br#"{"type": "noop", "params": {"bench": true}, "not_before": "2099-01-01T00:00:00Z"}"#
    } else {
        br#"{"type": "noop", "params": {"bench": true}}"#
    };
    let request = [
        format!(
            "POST /jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        body,
    ]
    .concat();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut lat = Vec::with_capacity(count);
    let mut line = String::new();
    for _ in 0..count {
        let t = Instant::now();
        writer.write_all(&request).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 201"), "{line}");
        read_body(&mut reader);
        lat.push(t.elapsed());
    }
    lat
}

/// Milliseconds per `GET /jobs?limit=100`, each list sorted.
struct ListCost {
    cold: Vec<f64>,
    warm: Vec<f64>,
    folders: Vec<f64>,
    finds: Vec<f64>,
}

/// `records` records in `done/` before the daemon starts; then
/// `GET /jobs?limit=100` on one keep-alive connection until the answers
/// are fast (the daemon has read `done/` once) or a minute has passed.
fn list_cost(bin: &Path, records: usize) -> ListCost {
    let begin = Instant::now();
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let write_records = |spool: &Path| {
        let done = spool.join("done");
        std::fs::create_dir_all(&done).unwrap();
        for i in 0..records {
            let id = format!("20261122T090000.000Z-bench-{i:07}");
            let at = |s: u64| {
                humantime::format_rfc3339_millis(base + Duration::from_millis(i as u64 * 10 + s))
            };
            let text = format!(
                "id = \"{id}\"\ntype = \"noop\"\nstatus = \"{}\"\nsubmitted = {}\nstarted = {}\nfinished = {}\nexpires = 2099-01-01T00:00:00Z\nattempts = 1\nexit_code = 0\n\n[params]\nn = {i}\n",
                if i % 10 == 0 { "failed" } else { "succeeded" },
                at(0),
                at(1),
                at(5)
            );
            std::fs::write(done.join(format!("{id}.toml")), text).unwrap();
        }
    };
    let d = start_with(bin, false, write_records);
    println!(
        "\n{records} records written and the daemon ready in {:.1} s",
        begin.elapsed().as_secs_f64()
    );

    let stream = TcpStream::connect(&d.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut ask = || -> f64 {
        let t = Instant::now();
        writer
            .write_all(b"GET /jobs?limit=100 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let answer = read_body(&mut reader);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(v["jobs"].as_array().map(Vec::len), Some(100.min(records)));
        ms
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let ms = ask();
        // Ten times faster than the first answer: the index answers.
        if cold.first().is_some_and(|first| ms * 10.0 < *first) {
            warm.push(ms);
            break;
        }
        cold.push(ms);
        if cold.len() >= 20 {
            // Enough of those: leave the daemon the cores to read done/.
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    if !warm.is_empty() {
        for _ in 0..200 {
            warm.push(ask());
        }
    }
    let spool = raccoond::spool::Spool::open(&d.spool, false).unwrap();
    let filter = raccoond::spool::query::Filter {
        limit: 100,
        ..Default::default()
    };
    let folders: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let n = spool.query(1 << 20).list(&filter).unwrap().len();
            assert_eq!(n, 100.min(records));
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    // What the index path reads: the 100 newest records, by id.
    let newest: Vec<String> = (records.saturating_sub(100)..records)
        .rev()
        .map(|i| format!("20261122T090000.000Z-bench-{i:07}"))
        .collect();
    let finds: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            for id in &newest {
                assert!(spool.query(1 << 20).find(id).unwrap().is_some());
            }
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    ListCost {
        cold: sorted(cold),
        warm: sorted(warm),
        folders: sorted(folders),
        finds: sorted(finds),
    }
}

struct Render {
    pages: usize,
    mean_ms: f64,
    max_ms: f64,
    bytes: usize,
}

/// `report::render` on a snapshot of a daemon with `queued` jobs waiting.
fn render_cost(queued: usize, pages: usize) -> Render {
    let now = SystemTime::now();
    let ago = |s: u64| now - Duration::from_secs(s);
    let kinds = [
        "make_report",
        "send_invoices",
        "resize_images",
        "nightly_backup",
        "thumbnails",
    ];
    let statuses = [
        Status::Succeeded,
        Status::Failed,
        Status::TimedOut,
        Status::Cancelled,
        Status::Rejected,
    ];
    let mut finished_counts = BTreeMap::new();
    let mut durations = BTreeMap::new();
    for k in kinds {
        for st in statuses {
            finished_counts.insert((k.to_string(), st), 1000);
        }
        let mut h = Histogram::default();
        for i in 0..1000 {
            h.observe(Duration::from_millis(i * 37));
        }
        durations.insert(k.to_string(), h);
    }
    // A full last hour: every minute has finishes of every type, and every
    // type its whole sample of run times.
    let mut history = raccoond::history::History::default();
    for i in 0..6000u64 {
        let row = FinishedRow {
            id: format!("h{i}"),
            kind: kinds[i as usize % kinds.len()].to_string(),
            status: statuses[i as usize % statuses.len()],
            finished: ago(3600 - i * 3600 / 6000),
            duration: Some(Duration::from_millis(i * 7 % 5000)),
            exit_code: Some(1),
            signal: None,
            error: Some("exited with status 1".to_string()),
            usage: Some(raccoond::record::Usage {
                cpu_seconds: (i % 900) as f64 / 100.0,
                max_rss_bytes: (i % 512) << 20,
                memory_peak_bytes: None,
                oom_killed: None,
            }),
            submitter: None,
        };
        history.observe(&row.kind.clone(), &row, now);
    }
    let snapshot = Snapshot {
        generated: Some(now),
        total: 64,
        running_total: ROWS,
        queued_total: queued,
        draining: false,
        paused_all: false,
        types: kinds
            .iter()
            .map(|k| TypeRow {
                name: k.to_string(),
                limit: 16,
                running: 10,
                queued: queued / kinds.len(),
                paused: false,
            })
            .collect(),
        running: (0..ROWS)
            .map(|i| RunningRow {
                id: format!("20261122T100000.{i:03}Z-0a1b2c3d-{i:04}"),
                kind: kinds[i % kinds.len()].to_string(),
                started: ago(i as u64),
                pid: 10_000 + i as u32,
                attempt: 1,
                submitter: Some("ann".to_string()),
            })
            .collect(),
        queued: (0..ROWS.min(queued))
            .map(|i| QueuedRow {
                id: format!("20261122T110000.{i:03}Z-0a1b2c3d-{i:04}"),
                kind: kinds[i % kinds.len()].to_string(),
                priority: (i % 3) as i64,
                submitted: ago(3600 - i as u64),
                not_before: (i % 7 == 0).then(|| now + Duration::from_secs(600)),
                waiting_for: Vec::new(),
                submitter: Some("ann".to_string()),
            })
            .collect(),
        finished: (0..ROWS)
            .map(|i| FinishedRow {
                id: format!("20261122T090000.{i:03}Z-0a1b2c3d-{i:04}"),
                kind: kinds[i % kinds.len()].to_string(),
                status: statuses[i % statuses.len()],
                finished: ago(i as u64 * 10),
                duration: Some(Duration::from_millis(i as u64 * 123)),
                exit_code: Some((i % 2) as i32),
                signal: None,
                error: (i % 2 == 1).then(|| "exited with status 1".to_string()),
                usage: Some(raccoond::record::Usage {
                    cpu_seconds: i as f64 * 0.1,
                    max_rss_bytes: (i as u64 + 1) << 20,
                    memory_peak_bytes: None,
                    oom_killed: None,
                }),
                submitter: Some("ann".to_string()),
            })
            .collect(),
        finished_counts,
        durations,
        history: std::sync::Arc::new(history),
        schedules: Vec::new(),
    };
    let mut total = Duration::ZERO;
    let mut max = Duration::ZERO;
    let mut bytes = 0;
    for _ in 0..pages {
        let t = Instant::now();
        let html = raccoond::report::render(&snapshot, now);
        let d = t.elapsed();
        bytes = std::hint::black_box(html).len();
        total += d;
        max = max.max(d);
    }
    Render {
        pages,
        mean_ms: total.as_secs_f64() * 1000.0 / pages as f64,
        max_ms: max.as_secs_f64() * 1000.0,
        bytes,
    }
}
