//! Pickup latency: jobs dropped one at a time 20 ms apart; each task
//! prints the time it started (`date +%s%N`, exec'd directly); p50 and p99
//! of rename-into-new/ → task start, at `total = 8` and `total = 2`, beside
//! the same fork+exec of `date` from this process 20 ms apart (the
//! floor), and beside a watcher of a few lines (a thread blocked on
//! inotify that forks `date` when a file is renamed in): what any
//! inotify-driven spool pays for waking up, on this machine, now.
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
    // Baselines: the same fork+exec of `date` from this process, back to
    // back (warm) and 20 ms apart like the jobs (each start then finds the
    // CPU's caches and an idle vCPU as a job's pickup does): the floor.
    let base = floor(n.min(100), Duration::ZERO);
    let paced = floor(n.min(100), Duration::from_millis(20));
    let woken = watcher_floor(n.min(100));
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
    for (what, lat) in [
        ("fork+exec, 20 ms apart (the floor)", &paced),
        ("fork+exec, back to back", &base),
        ("inotify wake-up + fork+exec", &woken),
    ] {
        println!(
            "{:<36} {:>8.2} {:>8.2} {:>8.2}",
            what,
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN)
        );
    }
    let floor = percentile(&paced, 0.5);
    let woken = percentile(&woken, 0.5);
    let verdict = |met: bool| if met { "met" } else { "missed" };
    for (total, lat) in &runs {
        let p50 = percentile(lat, 0.5);
        let p99 = percentile(lat, 0.99);
        println!(
            "total = {total}: p50 {p50:.2} ms against floor + 0.5 = {:.2} ms ({}; against the inotify watcher + 0.5 = {:.2} ms: {}), p99 {p99:.2} ms against 10 ms ({})",
            floor + 0.5,
            verdict(p50 <= floor + 0.5),
            woken + 0.5,
            verdict(p50 <= woken + 0.5),
            verdict(p99 <= 10.0),
        );
    }
}

/// Latencies in ms of `n` files renamed into a folder 20 ms apart, each
/// seen by a thread blocked on inotify that then starts `date +%s%N`.
fn watcher_floor(n: usize) -> Vec<f64> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new");
    std::fs::create_dir(&new).unwrap();
    let ino = raccoond::inotify::Inotify::new().unwrap();
    ino.watch_folder(&new, libc::IN_MOVED_TO).unwrap();
    let watcher = std::thread::spawn(move || {
        let mut ino = ino;
        let mut started = Vec::with_capacity(n);
        while started.len() < n {
            let mut fds = [PollFd::new(ino.fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::NONE).unwrap();
            for _ in ino.drain().unwrap() {
                let out = std::process::Command::new("date")
                    .arg("+%s%N")
                    .output()
                    .unwrap();
                let s: u128 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
                started.push(s);
            }
        }
        started
    });
    let mut dropped = Vec::with_capacity(n);
    for i in 0..n {
        let from = dir.path().join(format!("f{i}"));
        std::fs::write(&from, "").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::fs::rename(&from, new.join(format!("f{i}"))).unwrap();
        dropped.push(t);
    }
    let started = watcher.join().unwrap();
    let mut lat: Vec<f64> = dropped
        .iter()
        .zip(started)
        .map(|(t0, s)| s.saturating_sub(*t0) as f64 / 1e6)
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    lat
}

/// Latencies in ms of `n` starts of `date +%s%N` from this process, `gap`
/// apart: from just before the spawn to the time `date` printed.
fn floor(n: usize, gap: Duration) -> Vec<f64> {
    let mut lat: Vec<f64> = (0..n)
        .map(|_| {
            std::thread::sleep(gap);
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
    lat.sort_by(|a, b| a.total_cmp(b));
    lat
}
