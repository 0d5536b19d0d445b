//! Entries in `new/` and `running/` as an attacker makes them (SPEC §0,
//! §2, §7): descriptors kept open on a submitted file, hard links, a
//! queued job swapped for a folder, odd entries in `running/`, names
//! planted in `tmp/`, shared locks, names that are not UTF-8, and
//! symlinks, FIFOs and sockets in `new/`.

use std::fs;
use std::io::{Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use serde_json::json;

use super::{inodes_under, odd_entries_under, ok_spool, still_serves, text_of};
use crate::http::{addr, get, post};
use crate::support::*;

// Finding 2: a descriptor kept open on a submitted file.

#[test]
fn a_submitter_keeping_its_file_open_cannot_write_any_record() {
    let t = ok_spool();
    // The attacker's job, written through tmp/ and kept open read-write.
    let tmp = t.path("tmp").join("mine.part");
    let mut held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .unwrap();
    held.write_all(b"type = \"ok\"\n").unwrap();
    fs::rename(&tmp, t.path("new").join("mine.toml")).unwrap();
    let held_ino = held.metadata().unwrap().ino();
    assert_eq!(status_of(&t.wait_record("mine")), "succeeded");
    // Other people's jobs run after it.
    for i in 0..5 {
        t.drop_job(&format!("victim{i}.toml"), "type = \"ok\"\n");
    }
    for i in 0..5 {
        assert_eq!(
            status_of(&t.wait_record(&format!("victim{i}"))),
            "succeeded"
        );
    }
    // No file the daemon wrote is the submitter's inode.
    for dir in ["done", "running", "new"] {
        for (ino, path) in inodes_under(&t.path(dir)) {
            assert_ne!(ino, held_ino, "{path} is the submitter's own file");
        }
    }
    // Writing through the kept descriptor changes no record.
    let before: Vec<_> = t.records();
    held.rewind().unwrap();
    held.set_len(0).unwrap();
    held.write_all(b"id = \"victim0\"\nstatus = \"forged\"\ntype = \"ok\"\n")
        .unwrap();
    held.sync_all().unwrap();
    assert_eq!(
        t.records(),
        before,
        "a record changed through the submitter's descriptor"
    );
    still_serves(&t, "after_forge");
    assert_eq!(
        t.records()
            .iter()
            .filter(|(_, r)| status_of(r) == "forged")
            .count(),
        0
    );
}

// Finding 3: hard links into new/.

#[test]
fn a_hard_link_into_new_is_rejected_unread_and_the_linked_file_is_untouched() {
    let t = ok_spool();
    let keep = tempfile::tempdir().unwrap();
    let secret = keep.path().join("secret");
    fs::write(&secret, "type = \"ok\"\n# SECRET-CONTENT-42\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(&secret, t.path("new").join("linked.toml")).unwrap();
    let r = t.wait_record("linked");
    assert_eq!(status_of(&r), "rejected", "{r:?}");
    assert!(
        !toml::to_string(&r).unwrap().contains("SECRET-CONTENT-42"),
        "the linked file's bytes were disclosed: {r:?}"
    );
    let error = text_of(&r, "error");
    assert!(
        error.contains("link"),
        "the error must say it is a hard link: {error}"
    );
    still_serves(&t, "after_link");
    // The linked file outside the spool is as it was: content, mode, owner.
    let meta = fs::metadata(&secret).unwrap();
    assert_eq!(
        fs::read_to_string(&secret).unwrap(),
        "type = \"ok\"\n# SECRET-CONTENT-42\n"
    );
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.nlink(), 1, "the link in new/ must be gone");
    for (ino, path) in inodes_under(&t.spool) {
        assert_ne!(ino, meta.ino(), "{path} is the linked file");
    }
}

// Finding 4: a queued job swapped for a folder; odd entries in running/.

#[test]
fn a_queued_job_swapped_for_a_folder_gets_a_record_and_nothing_of_it_runs() {
    let t = TestSpool::builder().sh("ok", "echo fine").http().start();
    let a = addr(&t);
    let soon =
        raccoond::time::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(2));
    t.drop_job("q.toml", &format!("type = \"ok\"\nnot_before = {soon}\n"));
    // Wait until the daemon has it queued (the report lists it).
    t.wait_logged("q in the report", PROMPT, || {
        fs::read_to_string(t.path("report.html"))
            .ok()
            .filter(|h| h.contains(">q<"))
    });
    fs::remove_file(t.path("new").join("q.toml")).unwrap();
    fs::create_dir(t.path("new").join("q.toml")).unwrap();
    fs::write(t.path("new").join("q.toml").join("inside"), "x").unwrap();
    let r = t.wait_record("q");
    assert_ne!(status_of(&r), "succeeded", "{r:?}");
    assert!(
        t.ls("running").is_empty(),
        "running/: {:?}",
        t.ls("running")
    );
    assert!(odd_entries_under(&t.path("done")).is_empty());
    assert_eq!(get(&a, "/healthz").status, 200);
    still_serves(&t, "after_swap");
}

#[test]
fn recovery_skips_and_records_odd_entries_in_running_and_recovers_the_rest() {
    // The orphan's type may retry: recovered, it runs again (SPEC §8;
    // without a retry left it would end `failed`, "interrupted").
    let mut t = TestSpool::builder()
        .sh("ok", "echo fine")
        .ty(
            "again",
            "command = [\"/bin/sh\", \"-c\", \"echo fine\"]\nretries = 1",
        )
        .start();
    t.kill9();
    // What a crash might leave, and what an attacker might add.
    fs::create_dir(t.path("running").join("odd.toml")).unwrap();
    fs::write(t.path("running").join("orphan.toml"), "type = \"again\"\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.path("running").join("link.toml")).unwrap();
    t.launch();
    assert_eq!(status_of(&t.wait_record("orphan")), "succeeded");
    still_serves(&t, "after_odd");
    t.wait_logged("running/ to hold nothing odd", PROMPT, || {
        odd_entries_under(&t.path("running"))
            .is_empty()
            .then_some(())
    });
    assert!(odd_entries_under(&t.path("done")).is_empty());
}

// Finding 5: predictable names in tmp/.

#[test]
fn names_planted_in_tmp_do_not_stop_http_submissions_or_a_drain() {
    let mut t = TestSpool::builder()
        .sh("ok", "echo fine")
        .sh("slow", "sleep 30")
        .http()
        .start();
    let a = addr(&t);
    // Learn what the daemon's own names look like: its ids carry its nonce.
    let first = post(&a, "/jobs", &json!({"type": "ok"}));
    assert_eq!(first.status, 201, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_string();
    let nonce = id.split('-').nth(1).unwrap().to_string();
    let pid = t.pid();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let host: String = raccoond::ids::hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // Plant every name of the old scheme, as files and as symlinks.
    for n in 0..3000 {
        for tag in ["job", "rec"] {
            let name = format!("{host}.{pid}-{start}.{nonce}.{n}.{tag}");
            let p = t.path("tmp").join(&name);
            if n % 2 == 0 {
                let _ = fs::write(&p, "planted");
            } else {
                let _ = std::os::unix::fs::symlink("/etc/shadow", &p);
            }
        }
    }
    let shadow = fs::read("/etc/shadow").ok();
    for _ in 0..20 {
        let r = post(&a, "/jobs", &json!({"type": "ok"}));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // A drain must still be able to put a running job back.
    t.drop_job("slowjob.toml", "type = \"slow\"\n");
    t.wait_logged("slowjob to run", PROMPT, || {
        t.ls("running")
            .iter()
            .any(|n| n == "slowjob.toml")
            .then_some(())
    });
    let status = t.stop(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let text = fs::read_to_string(t.path("new").join("slowjob.toml"))
        .unwrap_or_else(|e| panic!("slowjob was not put back in new/: {e}\n{}", t.log()));
    assert!(text.contains("slow"));
    assert_eq!(fs::read("/etc/shadow").ok(), shadow, "/etc/shadow changed");
    t.launch();
    still_serves(&t, "after_planting");
}

// Finding 6: a shared lock on a queued job.

#[test]
fn a_shared_lock_held_by_the_submitter_does_not_hold_its_job() {
    let t = ok_spool();
    let tmp = t.path("tmp").join("locked.part");
    fs::write(&tmp, "type = \"ok\"\n").unwrap();
    let held = fs::File::open(&tmp).unwrap();
    nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockSharedNonblock)
        .map(|locked| {
            fs::rename(&tmp, t.path("new").join("locked.toml")).unwrap();
            let r = t.wait_record("locked");
            assert_eq!(status_of(&r), "succeeded", "{r:?}");
            drop(locked);
        })
        .unwrap_or_else(|(_, e)| panic!("flock: {e}"));
    still_serves(&t, "after_lock");
}

#[test]
fn a_lock_another_user_takes_in_running_after_a_crash_does_not_hold_the_job() {
    require_root("locking as another user");
    let setpriv = tool("setpriv", "util-linux");
    let flock = tool("flock", "util-linux");
    let mut t = ok_spool();
    fs::set_permissions(t.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    t.kill9();
    // A job file a dead daemon left; anyone who may read running/ can lock it.
    let path = t.path("running").join("squatted.toml");
    fs::write(&path, "type = \"ok\"\n").unwrap();
    let mut squatter = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(flock)
        .args(["--shared", "--nonblock"])
        .arg(&path)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    t.wait_logged("the squatter's lock", PROMPT, || {
        let f = fs::File::open(&path).ok()?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .is_err()
            .then_some(())
    });
    t.launch();
    // Recovered (it has no retries: it ends "interrupted"), lock or no lock.
    let r = t.wait_record("squatted");
    assert_eq!(status_of(&r), "failed", "{r:?}");
    assert_eq!(text_of(&r, "error"), "interrupted");
    let _ = squatter.kill();
    let _ = squatter.wait();
    still_serves(&t, "after_squat");
}

// Finding 7: names that are not UTF-8.

#[test]
fn a_name_that_is_not_utf8_gets_a_record_saying_what_it_was() {
    let t = ok_spool();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.toml");
    let tmp = t.path("tmp").join("raw.part");
    fs::write(&tmp, "type = \"ok\"\n").unwrap();
    fs::rename(&tmp, t.path("new").join(name)).unwrap();
    let (id, r) = t.wait_logged("a record for the non-UTF-8 name", PROMPT, || {
        t.records()
            .into_iter()
            .find(|(_, r)| text_of(r, "submitted_as").contains("caf"))
    });
    let said = text_of(&r, "submitted_as").to_lowercase();
    assert!(
        said.contains("\\xe9") && said.contains("\\xff"),
        "{id}: {said}"
    );
    assert!(t.ls("new").is_empty(), "new/: {:?}", t.ls("new"));
    still_serves(&t, "after_name");
}

// Finding 9: links, FIFOs and sockets in new/.

#[test]
fn links_fifos_and_sockets_in_new_are_described_in_records_and_removed() {
    let t = ok_spool();
    std::os::unix::fs::symlink("/etc/passwd", t.path("new").join("pw.toml")).unwrap();
    nix::unistd::mkfifo(
        &t.path("new").join("pipe.toml"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(t.path("new").join("sock.toml")).unwrap();
    for (id, kind) in [("pw", "symlink"), ("pipe", "fifo"), ("sock", "socket")] {
        let r = t.wait_record(id);
        assert_eq!(status_of(&r), "rejected", "{id}: {r:?}");
        let said = format!("{} {}", text_of(&r, "source"), text_of(&r, "error")).to_lowercase();
        assert!(
            said.contains(kind) || (kind == "fifo" && said.contains("pipe")),
            "{id}: {said}"
        );
    }
    let pw = t.wait_record("pw");
    assert!(text_of(&pw, "source").contains("/etc/passwd"), "{pw:?}");
    t.wait_logged("new/ to empty", PROMPT, || {
        t.ls("new").is_empty().then_some(())
    });
    assert!(
        odd_entries_under(&t.path("done")).is_empty(),
        "{:?}",
        odd_entries_under(&t.path("done"))
    );
    still_serves(&t, "after_odd_new");
}
