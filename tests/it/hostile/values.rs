//! Values at the edge of their range (SPEC §3) and a token file anyone can
//! read (SPEC §0): refused with the key and the range, never a crash.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::http::{addr, post};

// Finding 1: values at the edge of their range.

#[test]
fn values_out_of_range_are_rejected_naming_key_and_range_and_never_crash_the_daemon() {
    let mut t = TestSpool::builder()
        .sh("ok", "echo fine")
        .sh("untimed", "true")
        .http()
        .start();
    let cases = [
        (
            "huge_timeout",
            "type = \"untimed\"\ntimeout = \"9223372036854775807s\"\n",
            "timeout",
        ),
        (
            "int_timeout",
            "type = \"untimed\"\ntimeout = 9223372036854775807\n",
            "timeout",
        ),
        (
            "neg_timeout",
            "type = \"untimed\"\ntimeout = -1\n",
            "timeout",
        ),
        ("far_keep", "type = \"ok\"\nkeep = \"200years\"\n", "keep"),
        (
            "late_not_before",
            "type = \"ok\"\nnot_before = 9999-12-31T23:59:59-00:01\n",
            "not_before",
        ),
        (
            "early_submitted",
            "type = \"ok\"\nsubmitted = 1970-01-01T00:00:00+00:01\n",
            "submitted",
        ),
        (
            "wrapping_attempts",
            "type = \"ok\"\nattempts = 4294967295\n",
            "attempts",
        ),
        (
            "many_retries",
            "type = \"ok\"\nretries = 1000001\n",
            "retries",
        ),
        (
            "high_priority",
            "type = \"ok\"\npriority = 1000001\n",
            "priority",
        ),
        (
            "low_priority",
            "type = \"ok\"\npriority = -9223372036854775808\n",
            "priority",
        ),
    ];
    for (id, text, _) in &cases {
        t.drop_job(&format!("{id}.toml"), text);
    }
    for (id, _, key) in &cases {
        let r = t.wait_record(id);
        assert_eq!(status_of(&r), "rejected", "{id}: {r:?}");
        let error = text_of(&r, "error");
        assert!(
            error.contains(key),
            "{id}: the error must name {key}: {error}"
        );
        assert!(
            error.contains("range")
                || error.contains("between")
                || error.contains("at most")
                || error.contains("at least"),
            "{id}: the error must give the range: {error}"
        );
    }
    // The edges themselves are admitted and run.
    t.drop_job(
        "edges.toml",
        "type = \"untimed\"\ntimeout = \"36500d\"\nretries = 1000000\npriority = -1000000\nattempts = 0\n\
         submitted = 1970-01-01T00:00:00Z\nnot_before = 1970-01-01T00:00:00Z\n",
    );
    assert_eq!(status_of(&t.wait_record("edges")), "succeeded");
    // Over HTTP the same values are a 422 at once.
    let a = addr(&t);
    let r = post(
        &a,
        "/jobs",
        &json!({"type": "untimed", "timeout": "9223372036854775807s"}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("timeout"), "{}", r.text());
    let r = post(
        &a,
        "/jobs",
        &json!({"type": "ok", "not_before": "9999-12-31T23:59:59-00:01"}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    // A restart finds nothing that stops it, and still serves.
    t.kill9();
    t.launch();
    still_serves(&t, "after_edges");
}

#[test]
fn configuration_values_out_of_range_stop_the_daemon_with_exit_78_naming_the_key() {
    for (key, line) in [
        ("keep", "keep = \"9223372036854775807s\""),
        (
            "retry_delay",
            "[types.x]\ncommand = [\"true\"]\nretry_delay = \"200years\"",
        ),
        (
            "timeout",
            "[types.x]\ncommand = [\"true\"]\ntimeout = 9223372036854775807",
        ),
        (
            "retries",
            "[types.x]\ncommand = [\"true\"]\nretries = 4294967296",
        ),
        ("kill_grace", "kill_grace = \"101years\""),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("raccoond.toml");
        let mut text = format!("spool = \"spool\"\n{line}\n");
        if text.contains("[types.x]") {
            text.push_str(&format!("user = \"{}\"\n", me()));
        }
        fs::write(&cfg, text).unwrap();
        let out = run(Command::new(raccoond_bin()).arg("--config").arg(&cfg));
        let err = &out.stderr;
        assert_eq!(out.status.code(), Some(78), "{key}: {err}");
        assert!(
            err.contains(key),
            "{key}: the error must name the key: {err}"
        );
    }
}

// Finding 10: a token file others can read.

#[test]
fn a_token_file_readable_by_others_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    fs::write(&token, "s3cret\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = dir.path().join("raccoond.toml");
    fs::write(
        &cfg,
        format!(
            "spool = \"spool\"\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = {}\n",
            toml_str(&token.display().to_string())
        ),
    )
    .unwrap();
    let out = run(Command::new(raccoond_bin()).arg("--config").arg(&cfg));
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("token") && err.contains("644"), "{err}");
    // 0600 is accepted.
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = Command::new(raccoond_bin())
        .arg("--config")
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = poll_until(Duration::from_secs(2), || child.try_wait().unwrap());
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        started.is_none(),
        "a 0600 token file must be accepted: exited {started:?}"
    );
}
