//! The spool pipeline from new/ to done/: submission, params, limits,
//! order, rejections, the client and the examples.

use std::io::Write;
use std::time::{Duration, SystemTime};

use crate::support::*;

#[test]
fn a_renamed_job_and_a_copied_job_both_succeed_with_output() {
    let t = TestSpool::builder()
        .sh("hello", "echo hi from $RACCOON_JOB_ID")
        .start();
    t.drop_job("renamed.toml", "type = \"hello\"\n");
    t.cp_job("copied.toml", "type = \"hello\"\n");
    for id in ["renamed", "copied"] {
        let r = t.wait_record(id);
        assert_eq!(status_of(&r), "succeeded", "{r:?}");
        assert_eq!(r["exit_code"].as_integer(), Some(0));
        assert_eq!(t.read(&format!("done/{id}.out")), format!("hi from {id}\n"));
    }
    assert!(t.ls("new").is_empty() && t.ls("running").is_empty());
}

#[test]
fn a_slow_writer_is_never_read_half_written() {
    let t = TestSpool::builder()
        .sh("p", "echo \"$RACCOON_PARAM_WORD\"")
        .start();
    let path = t.path("new").join("slow.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"type = \"p\"\n").unwrap();
    f.flush().unwrap();
    // The writer pauses with the file open: half a job must not be taken.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        !t.record_path("slow").exists(),
        "the half-written job was taken"
    );
    f.write_all(b"[params]\nword = \"whole\"\n").unwrap();
    drop(f);
    let r = t.wait_record("slow");
    assert_eq!(status_of(&r), "succeeded", "{r:?}");
    assert_eq!(t.read("done/slow.out"), "whole\n");
}

#[test]
fn params_reach_the_task_by_stdin_env_and_placeholder() {
    let t = TestSpool::builder()
        .ty(
            "p",
            r#"command = ["/bin/sh", "-c", "echo \"argc=$#\"; echo \"arg1=$1\"; echo \"env=$RACCOON_PARAM_TITLE n=$RACCOON_PARAM_N\"; echo \"stdin=$(cat)\"", "sh", "{title}", "--n={n}"]"#,
        )
        .start();
    t.drop_job(
        "p1.toml",
        "type = \"p\"\n[params]\ntitle = \"a b  c\"\nn = 7\n",
    );
    let r = t.wait_record("p1");
    assert_eq!(status_of(&r), "succeeded", "{r:?}");
    let out = t.read("done/p1.out");
    assert!(out.contains("argc=2\n"), "{out}");
    assert!(out.contains("arg1=a b  c\n"), "{out}");
    assert!(out.contains("env=a b  c n=7\n"), "{out}");
    assert!(out.contains(r#"stdin={"title":"a b  c","n":7}"#), "{out}");
}

#[test]
fn the_task_sees_its_environment_and_leaves_files_and_a_result() {
    let t = TestSpool::builder()
        .sh(
            "r",
            "env | grep -E '^(RACCOON_|PATH=|HOME=)' | sort; echo data > \"$RACCOON_FILES/out.txt\"; printf 'rows = 3\\n' > \"$RACCOON_RESULT\"",
        )
        .start();
    t.drop_job("r1.toml", "type = \"r\"\n");
    let r = t.wait_record("r1");
    assert_eq!(status_of(&r), "succeeded", "{r:?}");
    assert_eq!(r["result"]["rows"].as_integer(), Some(3), "{r:?}");
    assert_eq!(t.read("done/r1.files/out.txt"), "data\n");
    let out = t.read("done/r1.out");
    for var in [
        "RACCOON_JOB_ID=r1",
        "RACCOON_JOB_TYPE=r",
        "RACCOON_ATTEMPT=1",
        "RACCOON_JOB_FILE=",
        "RACCOON_FILES=",
        "RACCOON_RESULT=",
        "PATH=",
    ] {
        assert!(out.contains(var), "{var} missing in {out}");
    }
    assert!(
        !out.contains("HOME="),
        "the environment is not clean: {out}"
    );
}

#[test]
fn a_short_stdout_becomes_the_result_when_there_is_no_result_file() {
    let t = TestSpool::builder().sh("e", "echo 42").start();
    t.drop_job("e1.toml", "type = \"e\"\n");
    let r = t.wait_record("e1");
    assert_eq!(r["result"].as_str(), Some("42\n"), "{r:?}");
}

/// The highest number of tasks of each kind (and in all) that ran at once,
/// as the tasks themselves logged it.
fn max_concurrency(log: &str) -> (usize, std::collections::HashMap<String, usize>) {
    let mut now_total = 0usize;
    let mut max_total = 0usize;
    let mut now: std::collections::HashMap<String, usize> = Default::default();
    let mut max: std::collections::HashMap<String, usize> = Default::default();
    for line in log.lines() {
        let (sign, kind) = line.split_at(1);
        let kind = kind.trim().to_string();
        let c = now.entry(kind.clone()).or_default();
        if sign == "+" {
            *c += 1;
            now_total += 1;
        } else {
            *c -= 1;
            now_total -= 1;
        }
        let m = max.entry(kind).or_default();
        *m = (*m).max(*c);
        max_total = max_total.max(now_total);
    }
    (max_total, max)
}

#[test]
fn total_and_type_limits_are_never_exceeded() {
    let keep = tempfile::tempdir().unwrap();
    let log = keep.path().join("conc.log");
    let script = format!(
        "echo \"+ $RACCOON_JOB_TYPE\" >> {l}; sleep 0.15; echo \"- $RACCOON_JOB_TYPE\" >> {l}",
        l = log.display()
    );
    let t = TestSpool::builder()
        .top("total = 3")
        .sh("a", &script)
        .ty(
            "b",
            &format!("command = [\"/bin/sh\", \"-c\", {}]", toml_str(&script)),
        )
        .ty(
            "c",
            &format!(
                "command = [\"/bin/sh\", \"-c\", {}]\nlimit = 1",
                toml_str(&script)
            ),
        )
        .top("")
        .start();
    // Type a gets limit 2 through the command line equivalent in the file.
    let cfg = std::fs::read_to_string(&t.config)
        .unwrap()
        .replace("[types.a]\n", "[types.a]\nlimit = 2\n");
    std::fs::write(&t.config, cfg).unwrap();
    t.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the reload", PROMPT, || {
        t.log()
            .contains("reload: configuration read again")
            .then_some(())
    });
    let mut ids = Vec::new();
    for i in 0..8 {
        for kind in ["a", "b", "c"] {
            let id = format!("{kind}{i}");
            t.drop_job(&format!("{id}.toml"), &format!("type = \"{kind}\"\n"));
            ids.push(id);
        }
    }
    for id in &ids {
        assert_eq!(
            status_of(&t.wait_record_for(id, Duration::from_secs(30))),
            "succeeded"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let (total, per) = max_concurrency(&text);
    assert!(total <= 3, "total concurrency {total}");
    assert!(per["a"] <= 2, "a ran {} at once", per["a"]);
    assert!(per["c"] <= 1, "c ran {} at once", per["c"]);
    assert!(total >= 2, "nothing ran in parallel: {text}");
}

#[test]
fn higher_priority_starts_first_and_fifo_within_a_priority() {
    let keep = tempfile::tempdir().unwrap();
    let log = keep.path().join("order.log");
    let t = TestSpool::builder()
        .top("total = 1")
        .sh("block", "sleep 0.5")
        .sh("o", &format!("echo $RACCOON_JOB_ID >> {}", log.display()))
        .start();
    t.drop_job("blocker.toml", "type = \"block\"\n");
    wait_for("the blocker to start", PROMPT, || {
        t.log().contains("blocker: started").then_some(())
    });
    for (name, prio) in [
        ("low1", 0),
        ("high1", 5),
        ("low2", 0),
        ("high2", 5),
        ("mid", 2),
    ] {
        t.drop_job(
            &format!("{name}.toml"),
            &format!("type = \"o\"\npriority = {prio}\n"),
        );
        std::thread::sleep(Duration::from_millis(15)); // distinct submission times
    }
    for id in ["low1", "high1", "low2", "high2", "mid"] {
        t.wait_record(id);
    }
    let order = std::fs::read_to_string(&log).unwrap();
    assert_eq!(order, "high1\nhigh2\nmid\nlow1\nlow2\n");
}

#[test]
fn not_before_delays_a_job_until_its_time() {
    let t = TestSpool::builder().sh("o", "true").start();
    let at = SystemTime::now() + Duration::from_millis(1500);
    let stamp = humantime::format_rfc3339_millis(at).to_string();
    t.drop_job(
        "later.toml",
        &format!("type = \"o\"\nnot_before = {stamp}\n"),
    );
    t.drop_job("now.toml", "type = \"o\"\n");
    let now = t.wait_record("now");
    assert_eq!(status_of(&now), "succeeded");
    assert!(
        !t.record_path("later").exists(),
        "the delayed job ran early"
    );
    let later = t.wait_record("later");
    let started = later["started"].as_datetime().unwrap().to_string();
    let started = humantime::parse_rfc3339_weak(&started).unwrap();
    assert!(
        started >= at - Duration::from_millis(5),
        "started {started:?} before {at:?}"
    );
}

fn rejected(t: &TestSpool, id: &str) -> (String, String) {
    let r = t.wait_record(id);
    assert_eq!(status_of(&r), "rejected", "{r:?}");
    (
        r["error"].as_str().unwrap_or("").to_string(),
        r.get("source")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
    )
}

#[test]
fn every_bad_job_is_rejected_with_what_and_where_and_its_source_kept() {
    let t = TestSpool::builder()
        .ty(
            "need",
            "command = [\"/bin/echo\", \"{num}\"]\nparams = { num = \"integer\" }",
        )
        .sh("ok", "true")
        .start();
    let cases = [
        ("badtoml", "type = \"ok\"\npriority = [1,\n", "line 2"),
        ("unknowntype", "type = \"nope\"\n", "unknown type \"nope\""),
        ("unknownkey", "type = \"ok\"\ntimout = \"5s\"\n", "timout"),
        ("missingparam", "type = \"need\"\n", "missing param \"num\""),
        (
            "wrongparam",
            "type = \"need\"\nparams = { num = \"ten\" }\n",
            "expected an integer",
        ),
        ("notype", "priority = 1\n", "type"),
    ];
    for (id, text, _) in &cases {
        t.drop_job(&format!("{id}.toml"), text);
    }
    for (id, text, want) in &cases {
        let (error, source) = rejected(&t, id);
        assert!(error.contains(want), "{id}: {error}");
        assert_eq!(&source, text, "{id}: source not kept");
    }
    let (error, _) = rejected(&t, "unknownkey");
    assert!(error.contains("line 2, column 1"), "{error}");
}

/// SPEC §7: nothing that is not a regular file with one link, within
/// `max_job_bytes`, is ever read; what it was goes into the record, and it
/// is removed, so that `done/` holds only regular files and folders. A file
/// that is not UTF-8 is kept whole in `source`, escaped.
#[test]
fn too_large_binary_and_irregular_entries_are_rejected_and_said_in_the_record() {
    let t = TestSpool::builder()
        .top("max_job_bytes = 1000")
        .sh("ok", "true")
        .start();
    let big = format!("type = \"ok\"\n#{}\n", "x".repeat(5000));
    t.drop_job("big.toml", &big);
    let bin = t.path("tmp").join("bin");
    let bytes = b"type = \"ok\"\n\xff\xfe\x00\x01\\";
    std::fs::write(&bin, bytes).unwrap();
    std::fs::rename(&bin, t.path("new").join("bin.toml")).unwrap();
    let (e, src) = rejected(&t, "big");
    assert!(e.contains("too large"), "{e}");
    assert!(
        src.contains(&big.len().to_string()) && src.contains("not read"),
        "{src}"
    );
    let (e, src) = rejected(&t, "bin");
    assert!(e.contains("not UTF-8"), "{e}");
    assert!(src.starts_with("type = \"ok\""), "{src}");
    assert_eq!(raccoond::escape::unescape(&src), bytes, "{src}");

    std::os::unix::fs::symlink("/etc/passwd", t.path("new").join("link.toml")).unwrap();
    nix::unistd::mkfifo(
        &t.path("new").join("fifo.toml"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::fs::create_dir(t.path("new").join("dir.toml")).unwrap();
    std::fs::write(t.path("new").join("dir.toml").join("inside"), "x").unwrap();
    for (id, kind, source) in [
        ("link", "symlink", "symlink to /etc/passwd"),
        ("fifo", "FIFO", "FIFO"),
        ("dir", "directory", "directory"),
    ] {
        let (e, src) = rejected(&t, id);
        assert!(e.contains("not a regular file") && e.contains(kind), "{e}");
        assert_eq!(src, source);
    }
    t.drop_job("after.toml", "type = \"ok\"\n");
    assert_eq!(status_of(&t.wait_record("after")), "succeeded");
    assert!(t.ls("new").is_empty(), "{:?}", t.ls("new"));
    for id in ["big", "bin", "link", "fifo", "dir"] {
        let files = t.path("done").join(format!("{id}.files"));
        assert!(files.symlink_metadata().is_err(), "{id}: kept in done/");
    }
    for n in t.ls("done") {
        let meta = t.path("done").join(&n).symlink_metadata().unwrap();
        assert!(meta.is_file() || meta.is_dir(), "done/{n}");
    }
}

#[test]
fn a_name_that_is_not_an_id_or_is_taken_gets_a_fresh_id() {
    let t = TestSpool::builder().sh("ok", "true").start();
    t.drop_job("my job!.toml", "type = \"ok\"\n");
    t.drop_job("same.toml", "type = \"ok\"\n");
    t.wait_record("same");
    t.drop_job("same.toml", "type = \"ok\"\n");
    let find = |name: &str, n: usize| {
        wait_for(&format!("{n} record(s) for {name}"), PROMPT, || {
            let v: Vec<(String, toml::Table)> = t
                .records()
                .into_iter()
                .filter(|(_, r)| r.get("submitted_as").and_then(|v| v.as_str()) == Some(name))
                .collect();
            (v.len() == n).then_some(v)
        })
    };
    let odd = find("my job!.toml", 1);
    assert_eq!(status_of(&odd[0].1), "succeeded");
    assert_ne!(odd[0].0, "my job!");
    let again = find("same.toml", 1);
    assert_ne!(again[0].0, "same");
    assert_eq!(status_of(&again[0].1), "succeeded");
}

#[test]
fn the_client_submits_waits_and_reports() {
    let t = TestSpool::builder()
        .sh("greet", "echo \"hello $RACCOON_PARAM_WHO\"")
        .start();
    let out = t.client(&["submit", "greet", "who=big world", "n=3"]);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!id.is_empty());
    let waited = t.client(&["wait", &id]);
    assert!(waited.status.success(), "{waited:?}");
    let st = t.client(&["--json", "status", &id]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["params"]["n"], 3);
    let o = t.client(&["output", &id]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello big world\n");
    let l = t.client(&["--json", "list", "--status", "succeeded"]);
    let v: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|j| j["id"] == id.as_str()));
}

/// Each daemon keeps a log of the records it places (`.finished/`, one
/// log a daemon, a line a record, written before the record), which
/// `raccoon list --limit` reads instead of listing `done/`; a daemon that
/// starts after a crash takes the dead one's log into its own.
#[test]
fn the_ledger_has_a_line_for_every_record_and_outlives_a_crash() {
    let lines_of = |t: &TestSpool| -> Vec<String> {
        let dir = t.path(".finished");
        let logs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert_eq!(logs.len(), 1, "one log: {logs:?}");
        let text = std::fs::read_to_string(&logs[0]).unwrap();
        let mut lines = text.lines();
        assert!(
            lines.next().unwrap().starts_with("raccoond-ledger 1 "),
            "{text}"
        );
        lines
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect()
    };
    let mut t = TestSpool::builder().sh("ok", "true").start();
    for i in 0..3 {
        t.drop_job(&format!("a{i}.toml"), "type = \"ok\"\n");
        t.wait_record(&format!("a{i}"));
    }
    let mut ids = lines_of(&t);
    ids.sort();
    assert_eq!(ids, ["a0", "a1", "a2"]);
    t.kill9();
    t.launch();
    t.drop_job("b0.toml", "type = \"ok\"\n");
    t.wait_record("b0");
    let mut ids = lines_of(&t);
    ids.sort();
    assert_eq!(ids, ["a0", "a1", "a2", "b0"]);
    // Limited or not, the same newest jobs.
    let all = t.listed(&[]);
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(t.listed(&["--limit", "2"]), all[..2]);
}

#[test]
fn the_client_wait_fails_when_the_job_fails() {
    let t = TestSpool::builder().sh("bad", "exit 3").start();
    let out = t.client(&["submit", "bad", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let missing = t.client(&["status", "no-such-job"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn every_example_parses_and_every_example_job_succeeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = root.join("examples");
    let mut t = TestSpool::builder().start();
    t.kill9();
    let text = std::fs::read_to_string(examples.join("raccoond.toml")).unwrap();
    // The example runs its types as root; a non-root test runs them as itself.
    let text = text
        .replace("user = \"root\"", &format!("user = \"{}\"", me()))
        .replace("\"tasks/", &format!("\"{}/tasks/", examples.display()))
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"\"")
        .replace(
            "spool = \"../spool\"",
            &format!("spool = {}", toml_str(&t.spool.display().to_string())),
        )
        .replace("fsync = true", "fsync = false");
    let cfg = t.dir().join("example.toml");
    std::fs::write(&cfg, text).unwrap();
    t.config = cfg;
    t.launch();
    let jobs = examples.join("jobs");
    let mut names: Vec<String> = std::fs::read_dir(&jobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 3);
    for name in &names {
        let text = std::fs::read_to_string(jobs.join(name)).unwrap();
        t.drop_job(name, &text);
    }
    for name in &names {
        let id = name.trim_end_matches(".toml");
        let r = t.wait_record_for(id, Duration::from_secs(30));
        assert_eq!(status_of(&r), "succeeded", "{name}: {r:?}\n{}", t.log());
    }
    assert!(
        t.read("done/make_report.files/report.txt")
            .contains("row 10")
    );
}
