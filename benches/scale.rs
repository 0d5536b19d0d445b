//! Scale: 100 000 jobs queued before start (delayed with `not_before` so
//! none runs): time until the daemon is ready, its peak RSS, then the time
//! to submit one more job and see it start, against the same figure with
//! an empty queue; and `raccoon list` over the spool.
//!
//! `cargo bench --bench scale` (RACCOON_BENCH_N=10000 for a quick run).

// A benchmark that cannot do its IO has nothing to report: panicking says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Submits one job that runs at once and waits for its record: seconds.
fn one_more(b: &Bench, name: &str) -> f64 {
    let tmp = b.spool.join("tmp").join(name);
    std::fs::write(&tmp, "type = \"now\"\n").unwrap();
    let begin = Instant::now();
    std::fs::rename(&tmp, b.spool.join("new").join(format!("{name}.toml"))).unwrap();
    let rec = b.spool.join("done").join(format!("{name}.toml"));
    wait("one more record", Duration::from_secs(30), || {
        rec.exists().then_some(())
    });
    begin.elapsed().as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

fn main() {
    let n = n_or(100_000);
    let types = [
        ("later", "command = [\"/bin/true\"]"),
        ("now", "command = [\"/bin/true\"]"),
    ];

    let mut empty = Bench::new("total = 4\nfsync = false", &types);
    let ready_empty = empty.start();
    let submit_empty = median(
        (0..20)
            .map(|i| one_more(&empty, &format!("e{i}")))
            .collect(),
    );
    empty.stop();

    let mut b = Bench::new("total = 4\nfsync = false", &types);
    b.prepare(
        "q",
        n,
        "type = \"later\"\nnot_before = 2099-01-01T00:00:00Z\n",
    );
    for i in 0..n {
        let name = format!("q{i:06}");
        std::fs::rename(
            b.spool.join("tmp").join(&name),
            b.spool.join("new").join(format!("{name}.toml")),
        )
        .unwrap();
    }
    let ready = b.start();
    let rss = b.peak_rss_kib();
    let submit_full = median((0..20).map(|i| one_more(&b, &format!("f{i}"))).collect());
    let report = std::fs::metadata(b.spool.join("report.html"))
        .map(|m| m.len())
        .unwrap_or(0);
    let rss_after = b.peak_rss_kib();
    let begin = Instant::now();
    let out = Command::new(raccoon())
        .arg("--spool")
        .arg(&b.spool)
        .arg("list")
        .output()
        .unwrap();
    let list = begin.elapsed();
    // The table's header is not a job.
    let listed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .count()
        .saturating_sub(1);
    b.stop();

    // The report's cost at this size, rendered as the daemon does.
    let snap = raccoond::status::Snapshot {
        queued_total: n,
        queued: (0..raccoond::status::ROWS)
            .map(|i| raccoond::status::QueuedRow {
                id: format!("q{i:06}"),
                kind: "later".into(),
                priority: 0,
                submitted: std::time::SystemTime::now(),
                not_before: None,
                waiting_for: Vec::new(),
                submitter: None,
            })
            .collect(),
        ..Default::default()
    };
    let begin = Instant::now();
    let html = raccoond::report::render(&snap, std::time::SystemTime::now());
    let render = begin.elapsed();

    println!("scale: {n} jobs queued before start");
    println!(
        "{:<46} {:>12}",
        "ready, empty spool",
        format!("{:.0} ms", ready_empty.as_secs_f64() * 1000.0)
    );
    println!(
        "{:<46} {:>12}",
        format!("ready, {n} queued"),
        format!("{:.0} ms", ready.as_secs_f64() * 1000.0)
    );
    println!(
        "{:<46} {:>12}",
        "peak RSS after ready",
        format!("{:.1} MiB", rss as f64 / 1024.0)
    );
    println!(
        "{:<46} {:>12}",
        "peak RSS after 20 more jobs",
        format!("{:.1} MiB", rss_after as f64 / 1024.0)
    );
    println!(
        "{:<46} {:>12}",
        "submit → record, empty queue (median of 20)",
        format!("{submit_empty:.2} ms")
    );
    println!(
        "{:<46} {:>12}",
        format!("submit → record, {n} queued (median of 20)"),
        format!("{submit_full:.2} ms")
    );
    println!(
        "{:<46} {:>12}",
        "  ratio",
        format!("{:.2}", submit_full / submit_empty)
    );
    println!(
        "{:<46} {:>12}",
        "report.html size",
        format!("{} KiB", report / 1024)
    );
    println!(
        "{:<46} {:>12}",
        "report render (library)",
        format!(
            "{:.2} ms ({} KiB)",
            render.as_secs_f64() * 1000.0,
            html.len() / 1024
        )
    );
    println!(
        "{:<46} {:>12}",
        format!("raccoon list ({listed} rows)"),
        format!("{:.0} ms", list.as_secs_f64() * 1000.0)
    );
}
