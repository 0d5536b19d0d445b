//! Pickup latency: jobs dropped one at a time 20 ms apart; each task
//! prints the time it started (`date +%s%N`, exec'd directly); p50 and p99
//! of rename-into-new/ → task start, at `total = 8` and `total = 2`, beside
//! the same fork+exec of `date` from this process (the floor).
//!
//! `cargo bench --bench latency`

// A benchmark that cannot do its IO has nothing to report: panicking says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// Latencies in ms of `n` jobs dropped 20 ms apart into a daemon with
/// `total`.
fn pickups(n: usize, total: usize) -> Vec<f64> {
    let mut b = Bench::new(
        &format!("total = {total}\nfsync = false"),
        &[("stamp", "command = [\"date\", \"+%s%N\"]")],
    );
    b.start();
    let jobs = b.prepare("l", n, "type = \"stamp\"\n");
    let mut dropped = Vec::with_capacity(n);
    for (from, to) in &jobs {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::fs::rename(from, to).unwrap();
        dropped.push(t);
        std::thread::sleep(Duration::from_millis(20));
    }
    b.wait_done(n, Duration::from_secs(60));
    b.stop();
    let mut lat: Vec<f64> = Vec::with_capacity(n);
    for (i, t0) in dropped.iter().enumerate() {
        let out =
            std::fs::read_to_string(b.spool.join("done").join(format!("l{i:06}.out"))).unwrap();
        let started: u128 = out.trim().parse().unwrap();
        lat.push((started.saturating_sub(*t0)) as f64 / 1e6);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    lat
}

fn main() {
    let n = n_or(200);
    let runs: Vec<(usize, Vec<f64>)> = [8, 2].into_iter().map(|t| (t, pickups(n, t))).collect();
    // Baseline: the same fork+exec of `date` from this process.
    let mut base: Vec<f64> = (0..n.min(100))
        .map(|_| {
            let t0 = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let out = std::process::Command::new("date")
                .arg("+%s%N")
                .output()
                .unwrap();
            let s: u128 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            (s.saturating_sub(t0)) as f64 / 1e6
        })
        .collect();
    base.sort_by(|a, b| a.total_cmp(b));
    println!("latency: {n} jobs dropped 20 ms apart, rename into new/ → task start");
    println!("{:<36} {:>8} {:>8} {:>8}", "", "p50 ms", "p99 ms", "max ms");
    for (total, lat) in &runs {
        println!(
            "{:<36} {:>8.2} {:>8.2} {:>8.2}",
            format!("raccoond, total = {total}"),
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!(
        "{:<36} {:>8.2} {:>8.2} {:>8.2}",
        "fork+exec from the bench (baseline)",
        percentile(&base, 0.5),
        percentile(&base, 0.99),
        base.last().copied().unwrap_or(f64::NAN)
    );
}
