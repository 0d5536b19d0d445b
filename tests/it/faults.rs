//! Faults of the machine under the daemon (SPEC §8): a spool whose file
//! system fills up (blocks, then inodes) while jobs are queued, running and
//! being submitted, and a thread of the daemon that dies. Each is done for
//! real: a small tmpfs filled by the test, a thread made to panic by the
//! daemon's test-only switch.

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tempfile::TempDir;

use crate::http::{addr, get, post};
use crate::support::*;

/// A small tmpfs mounted for one test, unmounted when dropped (also when
/// the test fails). Declare it before the `TestSpool` that uses it, so that
/// the daemon is gone first.
struct Tmpfs {
    /// Holds the mount point and, beside it, files the test keeps off the
    /// small file system (a gate the tasks wait for).
    dir: TempDir,
    /// Where the tmpfs is mounted.
    mnt: PathBuf,
}

impl Tmpfs {
    fn mount(options: &str) -> Tmpfs {
        require_root("it mounts a small tmpfs to fill");
        let dir = tempfile::Builder::new()
            .prefix("raccoond-full.")
            .tempdir()
            .unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let ran = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&mnt));
        assert!(ran.status.success(), "mount tmpfs: {}", ran.stderr);
        Tmpfs { dir, mnt }
    }

    /// A path beside the mount, on the ordinary file system.
    fn beside(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A task killed with the daemon may still be leaving its folder:
        // detach lazily if the plain unmount is refused.
        let plain = Command::new("umount").arg(&self.mnt).status();
        if !plain.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// How a test fills the file system.
#[derive(Clone, Copy, Debug)]
enum Fill {
    /// One ballast file, written until no block is left.
    Blocks,
    /// Empty files, made until no inode is left.
    Inodes,
}

impl Fill {
    /// Fills the file system at `mnt`; returns what to remove to undo it.
    fn fill(self, mnt: &Path) -> PathBuf {
        match self {
            Fill::Blocks => {
                let path = mnt.join("ballast");
                let mut f = fs::File::create(&path).unwrap();
                let chunk = vec![0x5a_u8; 64 << 10];
                let err = loop {
                    if let Err(e) = f.write_all(&chunk) {
                        break e;
                    }
                };
                assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
                path
            }
            Fill::Inodes => {
                let dir = mnt.join("many");
                fs::create_dir(&dir).unwrap();
                let mut n = 0;
                let err = loop {
                    if let Err(e) = fs::File::create(dir.join(n.to_string())) {
                        break e;
                    }
                    n += 1;
                };
                assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
                assert!(n > 50, "only {n} files fitted: the spool took the rest");
                dir
            }
        }
    }
}

fn unfill(what: &Path) {
    if what.is_dir() {
        fs::remove_dir_all(what).unwrap();
    } else {
        fs::remove_file(what).unwrap();
    }
}

/// Lines of the log that contain `needle`.
fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

const FULL_BEGINS: &str = "spool: the file system is full (";
const FULL_ENDS: &str = "spool: the file system has room again";

/// The whole story: jobs running, queued and being submitted while the
/// spool's file system fills up, then room again.
fn a_full_disk_is_waited_out(fill: Fill) {
    let fs_ = Tmpfs::mount("size=2m,nr_inodes=400");
    let gate = fs_.beside("gate");
    let mut t = TestSpool::builder()
        .fsync(true)
        .http()
        .top("total = 2")
        .sh(
            "gate",
            &format!(
                "echo \"out-$RACCOON_JOB_ID\"; while [ ! -e '{}' ]; do sleep 0.05; done",
                gate.display()
            ),
        )
        .sh("ok", "echo \"out-$RACCOON_JOB_ID\"")
        .arg("--spool")
        .arg(&fs_.mnt.display().to_string())
        .start();
    t.spool = fs_.mnt.clone();
    let http = addr(&t);

    // Two jobs running (and printing), four queued behind them.
    t.drop_job("g1.toml", "type = \"gate\"\n");
    t.drop_job("g2.toml", "type = \"gate\"\n");
    for g in ["g1", "g2"] {
        t.wait_logged(&format!("{g} to print"), PROMPT, || {
            let out = fs::read_to_string(t.path("running").join(format!("{g}.out"))).ok()?;
            out.contains(&format!("out-{g}")).then_some(())
        });
    }
    for q in ["q1", "q2", "q3"] {
        t.drop_job(&format!("{q}.toml"), "type = \"ok\"\n");
    }
    let r = post(&http, "/jobs", &json!({"type": "ok"}));
    r.expect(201);
    let h1 = r.json()["id"].as_str().unwrap().to_string();

    let filler = fill.fill(&t.spool);

    // Submissions are refused, by HTTP (native and Raccoon's shape) and
    // by the client, and leave nothing behind.
    let r = post(&http, "/jobs", &json!({"type": "ok"}));
    r.expect(507);
    assert!(
        r.json()["error"].as_str().unwrap().contains("full"),
        "{}",
        r.text()
    );
    let r = post(&http, "/api/tasks/", &json!({"type": "ok", "params": {}}));
    r.expect(507);
    assert_eq!(r.json()["status"], "ERROR", "{}", r.text());
    let c = t.client(&["submit", "ok"]);
    assert_eq!(c.status.code(), Some(75), "{c:?}");
    assert!(String::from_utf8_lossy(&c.stderr).contains("full"), "{c:?}");
    assert_eq!(
        t.ls("tmp"),
        Vec::<String>::new(),
        "refused submissions left files"
    );

    // The running jobs end well, but their records cannot be written: they
    // wait in memory, nothing else starts, and /healthz says so.
    fs::write(&gate, "").unwrap();
    t.wait_logged(
        "both gate jobs to end and the disk to be full",
        PROMPT,
        || {
            let log = t.log();
            (log.contains("g1: succeeded")
                && log.contains("g2: succeeded")
                && log.contains(FULL_BEGINS))
            .then_some(())
        },
    );
    let health = t.wait_logged("/healthz to say 503", PROMPT, || {
        let r = get(&http, "/healthz");
        (r.status == 503).then_some(r)
    });
    let said = health.json();
    assert_eq!(said["stopped"][0]["name"], "commit", "{said}");
    assert!(said["error"].as_str().unwrap().contains("full"), "{said}");
    for g in ["g1", "g2"] {
        assert!(
            !t.record_path(g).exists(),
            "{g}: a record was written on a full disk"
        );
        assert!(
            t.path("running").join(format!("{g}.toml")).exists(),
            "{g} left running/"
        );
    }
    let started: Vec<String> = t
        .ls("running")
        .into_iter()
        .filter(|n| n.starts_with('q') || n.starts_with(&h1))
        .collect();
    assert!(started.is_empty(), "started on a full disk: {started:?}");

    // Room again: every acknowledged job ends with one true record.
    let freed = SystemTime::now();
    unfill(&filler);
    let mut acknowledged = vec!["g1", "g2", "q1", "q2", "q3", h1.as_str()];
    acknowledged.sort();
    for id in &acknowledged {
        let r = t.wait_record(id);
        assert_eq!(
            status_of(&r),
            "succeeded",
            "{id}: {r:?}\nthe log:\n{}",
            t.log()
        );
        assert!(r.get("error").is_none(), "{id}: {r:?}");
        let out = fs::read_to_string(t.path("done").join(format!("{id}.out"))).unwrap();
        assert_eq!(out, format!("out-{id}\n"), "{id}: its output");
    }
    for id in ["q1", "q2", "q3", h1.as_str()] {
        let r = t.wait_record(id);
        let started = r["started"].as_datetime().unwrap().to_string();
        let started = humantime::parse_rfc3339_weak(&started).unwrap();
        assert!(
            started + Duration::from_millis(5) >= freed,
            "{id} started at {started:?}, before the disk had room at {freed:?}"
        );
    }
    let ids: Vec<String> = t.records().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids, acknowledged,
        "one record per acknowledged job, no more"
    );
    t.wait_logged("/healthz to say 200", PROMPT, || {
        (get(&http, "/healthz").status == 200).then_some(())
    });
    // The newest jobs, limited or not, are the same (the ledger, if a
    // write of it failed, was emptied and readers listed done/).
    let all = t.listed(&[]);
    assert_eq!(t.listed(&["--limit", "3"]), all[..3]);

    let status = t.stop(PROMPT);
    assert!(status.success(), "{status}");
    let log = t.log();
    assert!(
        count(&log, "emptied") <= 1,
        "the ledger's failure, at most once:\n{log}"
    );
    assert_eq!(count(&log, FULL_BEGINS), 1, "the start, once:\n{log}");
    assert_eq!(count(&log, FULL_ENDS), 1, "the end, once:\n{log}");
    assert!(!log.contains("interrupted"), "{log}");
    assert_eq!(t.ls("tmp"), Vec::<String>::new(), "files left in tmp/");
    assert_eq!(
        t.ls(".tmp"),
        Vec::<String>::new(),
        "files left in the daemon's own .tmp/"
    );
}

#[test]
fn a_disk_out_of_blocks_holds_records_and_starts_until_there_is_room() {
    a_full_disk_is_waited_out(Fill::Blocks);
}

#[test]
fn a_disk_out_of_inodes_holds_records_and_starts_until_there_is_room() {
    a_full_disk_is_waited_out(Fill::Inodes);
}

#[test]
fn the_client_exits_75_on_a_full_spool_and_leaves_nothing() {
    let fs_ = Tmpfs::mount("size=1m,nr_inodes=100");
    for d in ["tmp", "new", "running", "done", "cancel"] {
        fs::create_dir(fs_.mnt.join(d)).unwrap();
    }
    for fill in [Fill::Blocks, Fill::Inodes] {
        let filler = fill.fill(&fs_.mnt);
        let ran = run(Command::new(raccoon_bin())
            .args(["submit", "ok", "n=1"])
            .env("RACCOON_SPOOL", &fs_.mnt));
        assert_eq!(ran.status.code(), Some(75), "{fill:?}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("the spool's file system is full"),
            "{fill:?}: {}",
            ran.stderr
        );
        assert!(
            ran.stdout.is_empty(),
            "{fill:?}: printed an id: {}",
            ran.stdout
        );
        for d in ["tmp", "new"] {
            let left: Vec<_> = fs::read_dir(fs_.mnt.join(d)).unwrap().collect();
            assert!(left.is_empty(), "{fill:?}: left in {d}/: {left:?}");
        }
        unfill(&filler);
        let ran = run(Command::new(raccoon_bin())
            .args(["submit", "ok"])
            .env("RACCOON_SPOOL", &fs_.mnt));
        assert!(
            ran.status.success(),
            "{fill:?}: with room again: {}",
            ran.stderr
        );
        fs::remove_file(
            fs_.mnt
                .join("new")
                .join(format!("{}.toml", ran.stdout.trim())),
        )
        .unwrap();
    }
}

// ---- a crash -------------------------------------------------------------

#[test]
fn a_crash_keeps_the_first_submitted_of_a_job() {
    let mut t = TestSpool::builder()
        .ty("again", "command = [\"true\"]\nretries = 1")
        .ty("once", "command = [\"true\"]")
        .start();
    t.kill9();
    // As a crashed daemon leaves them: claimed an hour after submission,
    // the files saying nothing of when (the claim's rename keeps mtime).
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for (id, kind) in [("a", "again"), ("o", "once")] {
        let path = t.path("running").join(format!("{id}.toml"));
        fs::write(&path, format!("type = \"{kind}\"\n")).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
    }
    t.launch();
    for (id, status) in [("a", "succeeded"), ("o", "failed")] {
        let r = t.wait_record(id);
        assert_eq!(status_of(&r), status, "{id}: {r:?}");
        let submitted = r["submitted"].as_datetime().unwrap().to_string();
        let submitted = humantime::parse_rfc3339_weak(&submitted).unwrap();
        let off = submitted
            .duration_since(an_hour_ago)
            .unwrap_or_else(|e| e.duration());
        assert!(
            off < Duration::from_secs(1),
            "{id}: submitted {submitted:?}, not when its file was written ({an_hour_ago:?})"
        );
    }
}

// ---- a thread that dies ------------------------------------------------

/// `/healthz`, or `None` once nothing answers (the daemon is gone).
fn try_health(addr: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The daemon notices the death of thread `name` and exits 75 within a
/// few seconds; until then /healthz says 200, or 503 naming that thread.
fn a_dead_thread_makes_the_daemon_exit_75(name: &str, extra: &str) {
    const AFTER: Duration = Duration::from_millis(2500);
    let mut t = TestSpool::builder()
        .http()
        .top(extra)
        .sh("ok", "echo fine")
        .env(
            "RACCOON_FAULT_KILL_THREAD",
            &format!("{name}:{}", AFTER.as_millis()),
        )
        .start();
    let ready = Instant::now();
    let http = addr(&t);
    let mut answers: Vec<(u16, String)> = Vec::new();
    let exited = poll_until(PROMPT, || {
        if let Some(a) = try_health(&http) {
            answers.push(a);
        }
        t.exited()
    });
    let Some(status) = exited else {
        panic!(
            "raccoond still runs after {name} died; the log:\n{}",
            t.log()
        );
    };
    let took = ready.elapsed();
    let log = t.log();
    assert_eq!(status.code(), Some(75), "{status}\n{log}");
    assert!(
        took < AFTER + Duration::from_secs(5),
        "exited {took:?} after ready; the thread died at {AFTER:?}\n{log}"
    );
    assert!(
        log.contains(&format!("the {name} thread panicked")),
        "the log names the thread:\n{log}"
    );
    for (code, body) in &answers {
        match code {
            200 => {}
            503 => assert!(body.contains(name), "503 without naming {name}: {body}"),
            other => panic!("/healthz answered {other}: {body}"),
        }
    }
    assert!(!answers.is_empty(), "/healthz never answered while alive");
}

#[test]
fn a_dead_commit_thread_makes_the_daemon_exit_75() {
    a_dead_thread_makes_the_daemon_exit_75("commit", "");
}

#[test]
fn a_dead_supervisor_makes_the_daemon_exit_75() {
    a_dead_thread_makes_the_daemon_exit_75("supervisor", "");
}

#[test]
fn a_dead_sweeper_makes_the_daemon_exit_75() {
    a_dead_thread_makes_the_daemon_exit_75("sweeper", "");
}

#[test]
fn a_dead_signal_thread_makes_the_daemon_exit_75() {
    a_dead_thread_makes_the_daemon_exit_75("signals", "");
}

/// HTTP heals in place (SPEC §9): its threads die, the daemon goes on.
#[test]
fn dead_http_threads_are_started_again_and_the_daemon_goes_on() {
    for name in ["http-0", "http-front"] {
        let mut t = TestSpool::builder()
            .http()
            .sh("ok", "echo fine")
            .env("RACCOON_FAULT_KILL_THREAD", &format!("{name}:300"))
            .start();
        let http = t.http_addr.clone().unwrap();
        let again = format!("http: thread {name} started again");
        t.wait_logged(&format!("{name} to be started again"), PROMPT, || {
            t.log().contains(&again).then_some(())
        });
        // Every thread is answering again: health, a submission, a drop.
        t.wait_logged("/healthz to answer 200", PROMPT, || {
            try_health(&http).filter(|(code, _)| *code == 200)
        });
        t.drop_job("after.toml", "type = \"ok\"\n");
        assert_eq!(status_of(&t.wait_record("after")), "succeeded");
        assert!(t.exited().is_none(), "the daemon exited:\n{}", t.log());
    }
}

#[test]
fn a_dead_mail_thread_makes_the_daemon_exit_75() {
    let port = free_port();
    a_dead_thread_makes_the_daemon_exit_75(
        "mail",
        &format!(
            "[mail]\nsmtp = \"smtp://127.0.0.1:{port}\"\nfrom = \"raccoond@example.com\"\nrecipients = [\"*@example.com\"]"
        ),
    );
}
