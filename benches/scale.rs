//! Scale, against the targets of issue 13 (speed), printed in one table:
//!
//! 1. 1 000 000 jobs queued before start (written the maildir way, through
//!    `tmp/`, each delayed with `not_before` so that none runs): how long
//!    until the daemon is ready (`: ready,` in its log), answers
//!    `/healthz` with 200 and has written a report showing the count; its
//!    peak RSS then.
//! 2. The cost of one submission (a file renamed into `new/` until its
//!    record is in `done/`, median of 20), with an empty queue and with
//!    the million queued.
//! 3. 100 000 records in `done/` (written directly, in the shape the
//!    commit thread writes, each with its files folder): `raccoon list
//!    --limit 100` and `GET /jobs?limit=100` (once the daemon has read
//!    `done/`, on one keep-alive connection).
//!
//! The daemons get `max_queued` above the number queued, so that the
//! jobs submitted after them are read (at `max_queued` they would wait
//! unread in `new/` until a queued job starts, by design).
//!
//! `cargo bench --bench scale`; `RACCOON_BENCH_N` jobs queued (default
//! 1 000 000; 100 000 for a quicker run), `RACCOON_BENCH_RECORDS` records
//! (default 100 000), `RACCOON_BENCH_BIN` another `raccoond` to measure,
//! `RACCOON_BENCH_DIR` where the temporary spools go. It prints figures
//! and asserts nothing about time.

// A benchmark that cannot do its IO has nothing to report: panicking says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// The daemon's settle time: a file younger than this at start is left
/// for later, so the queued files must be older when it starts.
const SETTLE: Duration = Duration::from_millis(500);

/// Submits one job that runs at once and waits for its record: ms.
fn one_more(b: &Bench, name: &str) -> f64 {
    let tmp = b.spool.join("tmp").join(name);
    std::fs::write(&tmp, "type = \"now\"\n").unwrap();
    let begin = Instant::now();
    std::fs::rename(&tmp, b.spool.join("new").join(format!("{name}.toml"))).unwrap();
    let rec = b.spool.join("done").join(format!("{name}.toml"));
    while !rec.exists() {
        if begin.elapsed() > Duration::from_secs(30) {
            let log = std::fs::read_to_string(&b.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "no record of {name} after 30 s; the daemon's log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    begin.elapsed().as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Writes `n` delayed jobs through `tmp/` into `new/`, then waits until
/// the newest is older than the settle time.
fn queue_delayed(b: &Bench, n: usize) {
    let text = "type = \"later\"\nnot_before = 2099-01-01T00:00:00Z\n";
    let (tmp, new) = (b.spool.join("tmp"), b.spool.join("new"));
    for i in 0..n {
        let name = format!("q{i:07}");
        let from = tmp.join(&name);
        std::fs::write(&from, text).unwrap();
        std::fs::rename(&from, new.join(format!("{name}.toml"))).unwrap();
    }
    std::thread::sleep(SETTLE * 2);
}

/// Writes `n` records into `done/`, each with its (empty) files folder,
/// as the commit thread leaves them; finished 10 ms apart (each file's
/// time a moment after), expiring far ahead so that the sweeper keeps
/// them.
fn write_records(spool: &Path, n: usize) {
    let done = spool.join("done");
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    // The daemons that wrote them kept a ledger (`.finished/`) from
    // before the first: one log, its lines written as the records were.
    let mut ledger = raccoond::spool::Spool::open(spool, false)
        .unwrap()
        .open_ledger_begun(base)
        .unwrap();
    let ns = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    let mut lines = Vec::new();
    for i in 0..n {
        let id = format!("20261122T090000.000Z-rec-{i:07}");
        let at = |s: u64| {
            humantime::format_rfc3339_millis(base + Duration::from_millis(i as u64 * 10 + s))
        };
        let text = format!(
            "id = \"{id}\"\ntype = \"now\"\nstatus = \"{}\"\nsubmitted = {}\nstarted = {}\n\
             finished = {}\nexpires = 2099-01-01T00:00:00Z\nattempts = 1\nexit_code = {}\n\
             submitter = \"{}\"\n\n[usage]\ncpu_seconds = 0.001593\nmax_rss_bytes = 9064448\n",
            if i % 10 == 0 { "failed" } else { "succeeded" },
            at(0),
            at(1),
            at(5),
            i32::from(i % 10 == 0),
            me(),
        );
        let path = done.join(format!("{id}.toml"));
        std::fs::write(&path, text).unwrap();
        // Written as it finished, as the commit thread writes it.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(base + Duration::from_millis(i as u64 * 10 + 6)))
            .unwrap();
        std::fs::create_dir(done.join(format!("{id}.files"))).unwrap();
        lines.push(raccoond::spool::ledger::Line {
            finished: ns(base + Duration::from_millis(i as u64 * 10 + 5)),
            written: ns(base + Duration::from_millis(i as u64 * 10 + 6)),
            expires: 4_070_908_800,
            id,
        });
        if lines.len() == 1000 {
            ledger.append_lines(&std::mem::take(&mut lines), false);
        }
    }
    ledger.append_lines(&lines, false);
}

/// When a starting daemon reached each sign of being up, from its spawn.
struct Startup {
    /// `: ready,` in its log.
    ready: Duration,
    /// `/healthz` answered 200.
    healthz: Duration,
    /// `report.html` showed the queued count.
    report: Duration,
    /// Where HTTP listens.
    addr: String,
}

/// Starts the daemon of `b` (its configuration has `[http]` on port 0)
/// and times every sign of it being up, expecting `queued` in the report.
fn start_watched(b: &mut Bench, queued: usize) -> Startup {
    let begin = Instant::now();
    let child = Command::new(raccoond())
        .arg("--config")
        .arg(&b.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&b.log).unwrap())
        .spawn()
        .unwrap();
    b.child = Some(child);
    let count = format!("Queued <span class=\"count\">{queued}</span>");
    let report = b.spool.join("report.html");
    let (mut ready, mut healthz, mut shown, mut addr) = (None, None, None, None);
    wait(
        "ready, /healthz and the report",
        Duration::from_secs(600),
        || {
            if ready.is_none() || addr.is_none() {
                let log = std::fs::read_to_string(&b.log).unwrap_or_default();
                if ready.is_none() && log.contains(": ready,") {
                    ready = Some(begin.elapsed());
                }
                addr = log
                    .lines()
                    .find_map(|l| l.strip_prefix("http: listening on "))
                    .map(str::to_string);
            }
            if healthz.is_none()
                && let Some(a) = &addr
                && get(a, "/healthz").is_some_and(|(status, _)| status == 200)
            {
                healthz = Some(begin.elapsed());
            }
            if shown.is_none()
                && std::fs::read_to_string(&report).is_ok_and(|html| html.contains(&count))
            {
                shown = Some(begin.elapsed());
            }
            Some(Startup {
                ready: ready?,
                healthz: healthz?,
                report: shown?,
                addr: addr.clone()?,
            })
        },
    )
}

/// One request on a connection of its own: status and body.
fn get(addr: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let status = std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()?;
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or_else(Vec::new, |i| answer[i + 4..].to_vec());
    Some((status, body))
}

/// A keep-alive connection asking `GET /jobs?limit=100`.
struct Lister {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Lister {
    fn new(addr: &str) -> Lister {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Lister {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    /// Milliseconds for one answer, and how many jobs it listed.
    fn ask(&mut self) -> (f64, usize) {
        let t = Instant::now();
        self.writer
            .write_all(b"GET /jobs?limit=100 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let answer = read_body(&mut self.reader);
        let took = ms(t.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        (took, v["jobs"].as_array().map_or(0, Vec::len))
    }
}

/// `raccoon list --limit 100` on `spool`: ms, and the rows it printed.
fn raccoon_list(spool: &Path) -> (f64, usize) {
    let begin = Instant::now();
    let out = Command::new(raccoon())
        .arg("--spool")
        .arg(spool)
        .args(["list", "--limit", "100"])
        .output()
        .unwrap();
    let took = ms(begin.elapsed());
    assert!(out.status.success(), "{out:?}");
    // The table's header is not a job.
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .count()
        .saturating_sub(1);
    (took, rows)
}

/// One line of the table: what, the figure, the target, whether it is met
/// (`None`: no target).
struct Row {
    what: String,
    figure: String,
    target: String,
    met: Option<bool>,
}

fn row(what: impl Into<String>, figure: String, target: &str, met: Option<bool>) -> Row {
    Row {
        what: what.into(),
        figure,
        target: target.into(),
        met,
    }
}

fn main() {
    let n = n_or(1_000_000);
    let records = std::env::var("RACCOON_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000usize);
    let types = [
        ("later", "command = [\"/bin/true\"]"),
        ("now", "command = [\"/bin/true\"]"),
    ];
    // Room for the queued jobs and the ones submitted after them: at
    // `max_queued` (default 1 000 000) a submission waits unread in new/
    // until a queued job starts, and none of these ever does.
    let top = format!(
        "total = 4\nfsync = false\nmax_queued = {}\n[http]\nlisten = \"127.0.0.1:0\"",
        n + 1000
    );
    let top = top.as_str();
    let mut rows = Vec::new();

    // An empty queue: the baseline of one submission.
    let mut empty = Bench::new(top, &types);
    let up_empty = start_watched(&mut empty, 0);
    let submit_empty = median(
        (0..20)
            .map(|i| one_more(&empty, &format!("e{i}")))
            .collect(),
    );
    empty.stop();
    drop(empty);

    // n jobs queued before start.
    let mut b = Bench::new(top, &types);
    let began = Instant::now();
    queue_delayed(&b, n);
    let written = began.elapsed();
    let up = start_watched(&mut b, n);
    let rss = b.peak_rss_kib();
    let submit_full = median((0..20).map(|i| one_more(&b, &format!("f{i}"))).collect());
    let rss_after = b.peak_rss_kib();
    b.stop();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let within = |d: Duration| Some(d <= Duration::from_secs(15));
    rows.push(row(
        "ready, empty spool (`: ready,` in the log)",
        format!("{:.0} ms", ms(up_empty.ready)),
        "",
        None,
    ));
    rows.push(row(
        format!("ready, {n} queued (`: ready,` in the log)"),
        format!("{:.0} ms", ms(up.ready)),
        "≤ 15 s",
        within(up.ready),
    ));
    rows.push(row(
        format!("/healthz 200, {n} queued"),
        format!("{:.0} ms", ms(up.healthz)),
        "≤ 15 s",
        within(up.healthz),
    ));
    rows.push(row(
        format!("report.html shows {n} queued"),
        format!("{:.0} ms", ms(up.report)),
        "≤ 15 s",
        within(up.report),
    ));
    rows.push(row(
        "peak RSS once ready",
        format!("{:.1} MiB", mib(rss)),
        "≤ 600 MiB",
        Some(mib(rss) <= 600.0),
    ));
    rows.push(row(
        "peak RSS after 20 more jobs",
        format!("{:.1} MiB", mib(rss_after)),
        "≤ 600 MiB",
        Some(mib(rss_after) <= 600.0),
    ));
    rows.push(row(
        "submit → record, empty queue (median of 20)",
        format!("{submit_empty:.2} ms"),
        "",
        None,
    ));
    rows.push(row(
        format!("submit → record, {n} queued (median of 20)"),
        format!("{submit_full:.2} ms"),
        "",
        None,
    ));
    let ratio = submit_full / submit_empty;
    rows.push(row(
        "  ratio, full / empty",
        format!("{ratio:.2}"),
        "≤ 1.2",
        Some(ratio <= 1.2),
    ));
    // Removing a million files takes a while: not with the daemon's
    // figures above, and before the next part runs.
    drop(b);

    // Records in done/.
    let mut r = Bench::new(top, &types);
    write_records(&r.spool, records);
    let (list_alone, listed_alone) = raccoon_list(&r.spool);
    let up_records = start_watched(&mut r, 0);
    let mut lister = Lister::new(&up_records.addr);
    // Until the daemon has read done/ once: its index answers.
    let log = r.log.clone();
    wait(
        "the daemon's index of done/",
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(": done/ read (")
                .then_some(())
        },
    );
    let (times, counts): (Vec<f64>, Vec<usize>) = (0..50).map(|_| lister.ask()).unzip();
    assert!(counts.iter().all(|c| *c == 100.min(records)), "{counts:?}");
    let get_jobs = median(times);
    let lists: Vec<(f64, usize)> = (0..5).map(|_| raccoon_list(&r.spool)).collect();
    let listed = lists[0].1;
    let list_running = median(lists.iter().map(|(t, _)| *t).collect());
    r.stop();
    rows.push(row(
        format!("raccoon list --limit 100, {records} records, daemon running (median of 5, {listed} rows)"),
        format!("{list_running:.1} ms"),
        "≤ 50 ms",
        Some(list_running <= 50.0),
    ));
    rows.push(row(
        format!("raccoon list --limit 100, {records} records, no daemon ({listed_alone} rows)"),
        format!("{list_alone:.1} ms"),
        "",
        None,
    ));
    rows.push(row(
        format!("GET /jobs?limit=100, {records} records (median of 50)"),
        format!("{get_jobs:.2} ms"),
        "≤ 5 ms",
        Some(get_jobs <= 5.0),
    ));

    // The report's cost at this size, rendered as the daemon does.
    let snap = raccoond::status::Snapshot {
        queued_total: n,
        queued: (0..raccoond::status::ROWS)
            .map(|i| raccoond::status::QueuedRow {
                id: format!("q{i:07}"),
                kind: "later".into(),
                priority: 0,
                submitted: SystemTime::now(),
                not_before: None,
                waiting_for: Vec::new(),
                submitter: None,
            })
            .collect(),
        ..Default::default()
    };
    let begin = Instant::now();
    let html = raccoond::report::render(&snap, SystemTime::now());
    rows.push(row(
        "report render (library)",
        format!("{:.2} ms ({} KiB)", ms(begin.elapsed()), html.len() / 1024),
        "",
        None,
    ));

    println!(
        "scale: {n} jobs queued before start (written in {:.1} s), {records} records; {}",
        written.as_secs_f64(),
        raccoond()
    );
    let wide = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "{:<wide$}  {:>14}  {:>10}  met",
        "measure", "figure", "target"
    );
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<wide$}  {:>14}  {:>10}  {met}",
            r.what, r.figure, r.target
        );
    }
}
