//! Several hosts on one spool (SPEC §14), played on one machine: two
//! bindfs mounts of one folder behave like two hosts on a shared file
//! system at their worst (no inotify across them, no `flock` across them,
//! `RENAME_NOREPLACE` refused with EINVAL), and each daemon gets its own
//! `host`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;

/// A bindfs mount of `src` at `at`, unmounted when dropped, even when the
/// test fails.
struct Mount {
    at: PathBuf,
}

impl Mount {
    fn new(src: &Path, at: &Path) -> Mount {
        let bindfs = tool("bindfs", "bindfs");
        fs::create_dir_all(at).unwrap();
        // bindfs daemonizes: its status says whether the mount is up.
        let status = Command::new(bindfs)
            .arg(src)
            .arg(at)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run bindfs: {e}"));
        assert!(
            status.success(),
            "bindfs {} {}: {status}",
            src.display(),
            at.display()
        );
        Mount {
            at: at.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Busy for a moment while a killed daemon's descriptors close.
        let done = poll_until(Duration::from_secs(10), || {
            Command::new("fusermount")
                .arg("-u")
                .arg(&self.at)
                .status()
                .ok()
                .filter(|s| s.success())
        });
        if done.is_none() {
            let _ = Command::new("fusermount").arg("-uz").arg(&self.at).status();
        }
    }
}

/// A task that logs `start ID TIME` and `end ID TIME` (appending, outside
/// the spool), sleeping `secs` between.
fn logging_task(log: &Path, secs: &str) -> String {
    let script = format!(
        "echo \"start $RACCOON_JOB_ID $(date +%s.%N)\" >> {log}; sleep {secs}; \
         echo \"end $RACCOON_JOB_ID $(date +%s.%N)\" >> {log}",
        log = log.display()
    );
    format!("command = [\"/bin/sh\", \"-c\", {}]", toml_str(&script))
}

/// Two daemons, hosts `a` and `b`, each on its own mount of one spool;
/// type `t` is [`logging_task`], retried once after an interruption.
struct TwoHosts {
    /// The shared spool, as the file server has it.
    src: PathBuf,
    /// Where the tasks log, outside the spool.
    log: PathBuf,
    a: TestSpool,
    b: TestSpool,
    // Dropped after the daemons (fields drop in order).
    _mounts: (Mount, Mount),
    _dir: tempfile::TempDir,
}

fn two_hosts(top: &str, secs: &str) -> TwoHosts {
    require_root("bindfs mounts");
    let dir = tempfile::Builder::new()
        .prefix("raccoond-hosts.")
        .tempdir()
        .unwrap();
    let src = dir.path().join("spool");
    fs::create_dir(&src).unwrap();
    let mounts = (
        Mount::new(&src, &dir.path().join("a")),
        Mount::new(&src, &dir.path().join("b")),
    );
    let log = dir.path().join("tasks.log");
    let start = |host: &str, mount: &Mount| {
        let mut t = TestSpool::builder()
            .top(&format!("host = \"{host}\"\ntotal = 6\n{top}"))
            .ty("t", &format!("{}\nretries = 1", logging_task(&log, secs)))
            .arg("--spool")
            .arg(&mount.at.display().to_string())
            .start();
        t.spool = mount.at.clone();
        t
    };
    let a = start("a", &mounts.0);
    let b = start("b", &mounts.1);
    TwoHosts {
        src,
        log,
        a,
        b,
        _mounts: mounts,
        _dir: dir,
    }
}

/// Each job's runs from the task log: (start, end) times, in order; a run
/// whose task was killed has no end.
fn runs(log: &Path) -> BTreeMap<String, Vec<(f64, Option<f64>)>> {
    let mut out: BTreeMap<String, Vec<(f64, Option<f64>)>> = BTreeMap::new();
    for line in fs::read_to_string(log).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [what, id, t] = f[..] else {
            panic!("odd task log line {line:?}");
        };
        let t: f64 = t.parse().unwrap();
        let v = out.entry(id.to_string()).or_default();
        match what {
            "start" => v.push((t, None)),
            "end" => {
                let last = v
                    .last_mut()
                    .unwrap_or_else(|| panic!("{id} ended unstarted"));
                assert!(last.1.is_none(), "{id} ended twice");
                last.1 = Some(t);
            }
            _ => panic!("odd task log line {line:?}"),
        }
    }
    out
}

fn records_in(done: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(done)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".toml"))
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn jobs_dropped_through_two_hosts_each_run_once_and_have_one_record() {
    let h = two_hosts("", "0");
    const N: usize = 600;
    for i in 0..N {
        let t = if i % 2 == 0 { &h.a } else { &h.b };
        t.drop_job(&format!("j{i:03}.toml"), "type = \"t\"\n");
    }
    let done = h.src.join("done");
    h.a.wait_logged("600 records", Duration::from_secs(180), || {
        (records_in(&done).len() >= N).then_some(())
    });
    let ids = records_in(&done);
    let want: Vec<String> = (0..N).map(|i| format!("j{i:03}")).collect();
    assert_eq!(ids, want, "one record per job, under its own id");
    for id in &ids {
        let text = fs::read_to_string(done.join(format!("{id}.toml"))).unwrap();
        let r: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(status_of(&r), "succeeded", "{id}: {text}");
        assert_eq!(r["attempts"].as_integer(), Some(1), "{id}: {text}");
    }
    let runs = runs(&h.log);
    assert_eq!(runs.len(), N);
    for (id, v) in &runs {
        assert_eq!(v.len(), 1, "{id} ran {} times: {v:?}", v.len());
        assert!(v[0].1.is_some(), "{id} never ended");
    }
    // Both hosts did part of the work.
    for (name, t) in [("a", &h.a), ("b", &h.b)] {
        assert!(
            t.log().contains(": started type=t"),
            "host {name} ran nothing"
        );
    }
    let left: Vec<_> = fs::read_dir(h.src.join("running"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "running/ is empty at the end: {left:?}");
}

#[test]
fn a_dead_hosts_jobs_are_taken_back_only_once_its_lease_ran_out() {
    let mut h = two_hosts("lease = \"3s\"\n", "4");
    // Jobs that run longer than the lease, all on host a.
    for i in 0..4 {
        h.a.drop_job(&format!("a{i}.toml"), "type = \"t\"\n");
    }
    let running = h.src.join("running");
    let held_by_a = |n: usize| {
        // The holder mark: the job file's `user.raccoond` attribute, or a
        // `.host` file beside it where the file system has no attributes.
        let hosts: Vec<String> = fs::read_dir(&running)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".host") {
                    fs::read_to_string(e.path()).ok()
                } else if name.ends_with(".toml") {
                    holder_mark(&e.path())
                } else {
                    None
                }
            })
            .filter(|h| h.lines().next() == Some("a"))
            .collect();
        (hosts.len() >= n).then_some(())
    };
    h.a.wait_logged("host a to run its 4 jobs", PROMPT, || held_by_a(4));
    // Alive past the lease: b leaves a's jobs alone while a refreshes.
    // (A sleep, not a wait: the check is that nothing happens meanwhile.)
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        !h.b.log().contains("ran out"),
        "b took a job of a live host:\n{}",
        h.b.log()
    );
    h.a.kill9();
    let killed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let done = h.src.join("done");
    h.b.wait_logged("a's 4 jobs to finish on b", Duration::from_secs(60), || {
        (records_in(&done).len() >= 4).then_some(())
    });
    for i in 0..4 {
        let id = format!("a{i}");
        let text = fs::read_to_string(done.join(format!("{id}.toml"))).unwrap();
        let r: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(status_of(&r), "succeeded", "{id}: {text}");
        assert_eq!(r["attempts"].as_integer(), Some(2), "{id}: {text}");
    }
    let log = h.b.log();
    assert!(log.contains("the lease of host \"a\" ran out"), "{log}");
    for (id, v) in runs(&h.log) {
        assert_eq!(v.len(), 2, "{id}: {v:?}");
        assert!(v[0].1.is_none(), "{id}: its first run outlived its host");
        assert!(v[1].1.is_some(), "{id}: its second run never ended");
        // Refreshed at most lease / 3 before the kill: the lease ran out
        // 2 s after it at the earliest.
        assert!(
            v[1].0 >= killed + 1.9,
            "{id} started again {:.2}s after its host died, before the lease ran out",
            v[1].0 - killed
        );
    }
}

/// The `user.raccoond` attribute of a job file.
fn holder_mark(path: &std::path::Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 512];
    // SAFETY: NUL-terminated path and name; the buffer's length is given.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"user.raccoond".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}
