//! `user = "@submitter"` (the at(1) model, SPEC §13): each job runs as
//! the owner of its submitted file, `per_user` limits each submitter, a
//! cancel request counts only from the job's submitter (or root, or the
//! daemon's user), and a root-owned submission never runs as root.
//! Two real users, made once per test run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use crate::support::*;

const USERS: [&str; 2] = ["raccoon-t1", "raccoon-t2"];

/// Makes the two test users if they are missing (also done by tests/run).
fn users() -> [(u32, u32); 2] {
    static MADE: Once = Once::new();
    require_root("making users and submitting as them");
    MADE.call_once(|| {
        for u in USERS {
            if nix::unistd::User::from_name(u).ok().flatten().is_none() {
                let ran = run(Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                    ])
                    .arg(u));
                // Another test process may have made it meanwhile.
                assert!(
                    ran.status.success()
                        || nix::unistd::User::from_name(u).ok().flatten().is_some(),
                    "useradd {u}: {}",
                    ran.stderr
                );
            }
        }
    });
    USERS.map(|u| {
        let user = nix::unistd::User::from_name(u)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no user {u}"));
        (user.uid.as_raw(), user.gid.as_raw())
    })
}

/// Writes `text` into `path` as user (uid, gid), the `cp` way.
fn write_as((uid, gid): (u32, u32), path: &std::path::Path, text: &str) {
    let ran = run(Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--init-groups")
        .args(["/bin/sh", "-c", "printf '%s' \"$1\" > \"$2\"", "sh", text])
        .arg(path));
    assert!(
        ran.status.success(),
        "write {} as {uid}: {}",
        path.display(),
        ran.stderr
    );
}

/// A spool whose `new/` and `cancel/` anyone may write (in production the
/// spool's group and tmpfiles' modes do this).
fn open_spool(t: &TestSpool) {
    fs::set_permissions(t.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&t.spool, fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["new", "cancel"] {
        fs::set_permissions(t.path(d), fs::Permissions::from_mode(0o1777)).unwrap();
    }
}

/// A record's datetime field as an instant (a string compare would put
/// `…:24Z` after `…:24.001Z`).
fn instant(r: &toml::Table, key: &str) -> std::time::SystemTime {
    let text = r[key].to_string();
    raccoond::time::parse_rfc3339(&text).unwrap_or_else(|e| panic!("{key} = {text}: {e}"))
}

fn started(r: &toml::Table) -> std::time::SystemTime {
    instant(r, "started")
}

fn finished(r: &toml::Table) -> std::time::SystemTime {
    instant(r, "finished")
}

#[test]
fn each_job_runs_as_its_submitter_per_user_holds_and_only_the_submitter_cancels() {
    let [u1, u2] = users();
    let t = TestSpool::builder()
        .top("total = 6")
        .ty(
            "who",
            "command = [\"/bin/sh\", \"-c\", \"id -u\"]\nuser = \"@submitter\"",
        )
        .ty(
            "slow",
            "command = [\"/bin/sh\", \"-c\", \"id -u; sleep 2\"]\nuser = \"@submitter\"\nper_user = 1",
        )
        .ty(
            "long",
            "command = [\"/bin/sh\", \"-c\", \"sleep 30\"]\nuser = \"@submitter\"",
        )
        .start();
    open_spool(&t);
    let new = t.path("new");

    // Each task runs as its file's owner; the record says who.
    write_as(u1, &new.join("w1.toml"), "type = \"who\"\n");
    write_as(u2, &new.join("w2.toml"), "type = \"who\"\n");
    for (id, (uid, _), name) in [("w1", u1, USERS[0]), ("w2", u2, USERS[1])] {
        let r = t.wait_record(id);
        assert_eq!(status_of(&r), "succeeded", "{id}: {r:?}\n{}", t.log());
        assert_eq!(t.read(&format!("done/{id}.out")).trim(), uid.to_string());
        assert_eq!(r["submitter"].as_str(), Some(name), "{r:?}");
    }

    // A root-owned submission never runs as root.
    t.drop_job("r.toml", "type = \"who\"\n");
    let r = t.wait_record("r");
    assert_eq!(status_of(&r), "rejected", "{r:?}");
    assert!(r["error"].as_str().unwrap_or("").contains("root"), "{r:?}");

    // per_user = 1: t1's second job waits for its first; t2's runs meanwhile.
    write_as(u1, &new.join("s1.toml"), "type = \"slow\"\n");
    write_as(u1, &new.join("s2.toml"), "type = \"slow\"\n");
    write_as(u2, &new.join("s3.toml"), "type = \"slow\"\n");
    let (s1, s2, s3) = (
        t.wait_record("s1"),
        t.wait_record("s2"),
        t.wait_record("s3"),
    );
    for r in [&s1, &s2, &s3] {
        assert_eq!(status_of(r), "succeeded", "{r:?}");
    }
    let (first, second) = if started(&s1) <= started(&s2) {
        (&s1, &s2)
    } else {
        (&s2, &s1)
    };
    assert!(
        started(second) >= finished(first),
        "t1 ran two slow jobs at once: {first:?} {second:?}"
    );
    assert!(
        started(&s3) < finished(first),
        "t2 waited for t1: {s3:?} {first:?}"
    );

    // Only the submitter (or root) cancels: t2's request is removed.
    write_as(u1, &new.join("c1.toml"), "type = \"long\"\n");
    t.wait_logged("c1 to start", PROMPT, || {
        t.log().contains("c1: started").then_some(())
    });
    let cancel = t.path("cancel").join("c1");
    write_as(u2, &cancel, "");
    t.wait_logged("t2's cancel to be refused", PROMPT, || {
        (t.log().contains("c1: cancel/c1 refused") && !cancel.exists()).then_some(())
    });
    assert!(
        !t.record_path("c1").exists(),
        "t2 cancelled t1's job: {}\n{}",
        fs::read_to_string(t.record_path("c1")).unwrap_or_default(),
        t.log()
    );
    write_as(u1, &cancel, "");
    let r = t.wait_record_for("c1", Duration::from_secs(20));
    assert_eq!(status_of(&r), "cancelled", "{r:?}");
}

#[test]
fn http_refuses_types_that_run_as_their_submitter() {
    let t = TestSpool::builder()
        .http()
        .ty(
            "who",
            "command = [\"/bin/sh\", \"-c\", \"id -u\"]\nuser = \"@submitter\"",
        )
        .start();
    let addr = crate::http::addr(&t);
    let r = crate::http::post(&addr, "/jobs", &serde_json::json!({"type": "who"}));
    r.expect(422);
    assert!(r.text().contains("@submitter"), "{}", r.text());
}
