//! Shared by the benchmarks: a release `raccoond` on a temporary spool,
//! submissions the maildir way, and waits on the spool itself.
//!
//! Benchmarks print figures and compare them with baselines measured in
//! the same run; they assert nothing about time.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon under test: this build's, or `RACCOON_BENCH_BIN` (another
/// build, to compare two versions in one run of the same harness).
pub fn raccoond() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("RACCOON_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_raccoond").into())
    })
}

pub fn raccoon() -> &'static str {
    env!("CARGO_BIN_EXE_raccoon")
}

pub fn me() -> String {
    raccoond::config::current_user()
}

/// A daemon on a temporary spool.
pub struct Bench {
    pub dir: tempfile::TempDir,
    pub spool: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Bench {
    /// Writes the configuration (`types` is TOML for `[types.*]` tables,
    /// `user` is added to each) without starting the daemon.
    pub fn new(top: &str, types: &[(&str, &str)]) -> Bench {
        let base = std::env::var_os("RACCOON_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        Bench::new_in(&base, top, types)
    }

    /// The same, with the spool under `base` (a tmpfs, say).
    pub fn new_in(base: &Path, top: &str, types: &[(&str, &str)]) -> Bench {
        let dir = tempfile::Builder::new()
            .prefix("raccoond-bench.")
            .tempdir_in(base)
            .unwrap();
        let spool = dir.path().join("spool");
        for d in ["tmp", "new", "running", "done", "cancel"] {
            fs::create_dir_all(spool.join(d)).unwrap();
        }
        let mut text = format!("spool = \"spool\"\n{top}\n");
        for (name, body) in types {
            text.push_str(&format!("[types.{name}]\n{body}\nuser = \"{}\"\n", me()));
        }
        let config = dir.path().join("raccoond.toml");
        fs::write(&config, text).unwrap();
        let log = dir.path().join("raccoond.log");
        Bench {
            dir,
            spool,
            config,
            child: None,
            log,
        }
    }

    /// Starts the daemon and returns how long it took to say it is ready.
    pub fn start(&mut self) -> Duration {
        let begin = Instant::now();
        let child = Command::new(raccoond())
            .arg("--config")
            .arg(&self.config)
            .stderr(fs::File::create(&self.log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait("ready", Duration::from_secs(120), || {
            fs::read_to_string(&self.log)
                .unwrap_or_default()
                .contains(": ready,")
                .then_some(())
        });
        begin.elapsed()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Peak resident memory of the daemon so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// Writes `n` job files into tmp/ named `<prefix><i>`, ready to rename.
    pub fn prepare(&self, prefix: &str, n: usize, text: &str) -> Vec<(PathBuf, PathBuf)> {
        (0..n)
            .map(|i| {
                let name = format!("{prefix}{i:06}");
                let tmp = self.spool.join("tmp").join(&name);
                fs::write(&tmp, text).unwrap();
                (tmp, self.spool.join("new").join(format!("{name}.toml")))
            })
            .collect()
    }

    /// Counts records in done/ (by name, without reading them).
    pub fn done_count(&self) -> usize {
        count_toml(&self.spool.join("done"))
    }

    /// Waits until every one of these records exists; the time when the
    /// last did. Costs one stat per record, however large done/ is.
    pub fn wait_records(&self, ids: &[String], timeout: Duration) -> Instant {
        let done = self.spool.join("done");
        let mut next = 0;
        wait(&format!("{} records", ids.len()), timeout, || {
            while next < ids.len() && done.join(format!("{}.toml", ids[next])).exists() {
                next += 1;
            }
            (next == ids.len()).then(Instant::now)
        })
    }

    /// Renames every prepared job (`prepare`) into `new/` as fast as it
    /// can, waits for all their records, stops the daemon: jobs/s from the
    /// first rename to the last record.
    pub fn drop_all(&mut self, jobs: &[(PathBuf, PathBuf)], timeout: Duration) -> f64 {
        let ids: Vec<String> = jobs
            .iter()
            .map(|(_, to)| {
                let name = to.file_name().unwrap().to_string_lossy();
                name.strip_suffix(".toml").unwrap_or(&name).to_string()
            })
            .collect();
        let begin = Instant::now();
        for (from, to) in jobs {
            fs::rename(from, to).unwrap();
        }
        let end = self.wait_records(&ids, timeout);
        self.stop();
        jobs.len() as f64 / (end - begin).as_secs_f64()
    }

    /// Waits until done/ holds `n` records; the time when it did.
    pub fn wait_done(&self, n: usize, timeout: Duration) -> Instant {
        wait(&format!("{n} records"), timeout, || {
            (self.done_count() >= n).then(Instant::now)
        })
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn count_toml(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().as_encoded_bytes().ends_with(b".toml"))
                .count()
        })
        .unwrap_or(0)
}

pub fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs a shell command and returns how long it took (None when it failed).
pub fn time_sh(script: &str) -> Option<Duration> {
    let begin = Instant::now();
    let ok = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| begin.elapsed())
}

pub fn have(program: &str) -> bool {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `RACCOON_BENCH_N` overrides a benchmark's job count (for quick runs).
pub fn n_or(default: usize) -> usize {
    std::env::var("RACCOON_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The rest of an HTTP/1.1 answer whose status line was read: its headers,
/// then its body of `Content-Length` bytes.
pub fn read_body(reader: &mut impl std::io::BufRead) -> Vec<u8> {
    let mut line = String::new();
    let mut len = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut answer = vec![0; len];
    reader.read_exact(&mut answer).unwrap();
    answer
}
