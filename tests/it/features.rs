//! Beyond the queue (SPEC §13), from outside: dependencies (a diamond with
//! a failing branch; a parent another daemon ran), unique jobs under 200
//! concurrent submissions from files, HTTP and the client, counted
//! resources (never over-committed, each task told its units), and pause
//! and resume.

// Tests may unwrap: a panic is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{addr, get, post};
use crate::support::*;

fn error_of(t: &toml::Table) -> &str {
    t.get("error").and_then(|v| v.as_str()).unwrap_or("")
}

/// The lines of a log file the tasks append to.
fn lines(path: &std::path::Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A diamond a → (b, c) → d, with e after d, f after_any c, g after b.
/// c fails: d is cancelled (it needs c to succeed), then e (it needs d);
/// f and g run, each after its parent ended, and nothing runs before a.
#[test]
fn a_diamond_with_a_failing_branch_cancels_the_right_children_and_runs_the_others_in_order() {
    let keep = tempfile::tempdir().unwrap();
    let log = keep.path().join("ran.log");
    let script = format!(
        "echo \"start $RACCOON_JOB_ID\" >> {log}; echo \"end $RACCOON_JOB_ID\" >> {log}; exit \"${{RACCOON_PARAM_CODE:-0}}\"",
        log = log.display()
    );
    let t = TestSpool::builder()
        .top("total = 4")
        .sh("step", &script)
        .http()
        .start();
    let a = addr(&t);
    // Paused first, to look at what the queued jobs wait for.
    t.client(&["pause", "step"]);
    t.wait_logged("the pause to be seen", PROMPT, || {
        t.log().contains("pause: step paused").then_some(())
    });
    // A parent must exist when its child is submitted: a first.
    t.drop_job("a.toml", "type = \"step\"\n");
    let jobs = [
        ("b", "after = [\"a\"]"),
        ("c", "after = [\"a\"]\nparams = { code = 3 }"),
        ("d", "after = [\"b\", \"c\"]"),
        ("e", "after = [\"d\"]"),
        ("f", "after_any = [\"c\"]"),
        ("g", "after = [\"b\"]"),
    ];
    for (id, deps) in jobs {
        t.drop_job(&format!("{id}.toml"), &format!("type = \"step\"\n{deps}\n"));
    }
    let d = t.wait_logged("d to be read", PROMPT, || {
        let v = get(&a, "/jobs/d").json();
        v.get("waiting_for").is_some().then_some(v)
    });
    assert_eq!(d["waiting_for"], json!(["b", "c"]), "{d}");
    let shown = String::from_utf8_lossy(&t.client(&["show", "d"]).stdout).into_owned();
    assert!(
        shown.contains("its dependencies: b (queued), c (queued)"),
        "{shown}"
    );
    let html = t.wait_logged("the report to show what d waits for", PROMPT, || {
        let html = get(&a, "/").text();
        html.contains("<td class=\"why\">b, c</td>").then_some(html)
    });
    assert!(html.contains("Paused: step."), "{html}");
    t.client(&["resume", "step"]);
    let want = [
        ("a", "succeeded", ""),
        ("b", "succeeded", ""),
        ("c", "failed", "exited with status 3"),
        ("d", "cancelled", "dependency c failed"),
        ("e", "cancelled", "dependency d cancelled"),
        ("f", "succeeded", ""),
        ("g", "succeeded", ""),
    ];
    for (id, status, error) in want {
        let r = t.wait_record(id);
        assert_eq!(status_of(&r), status, "{id}: {r:?}\n{}", t.log());
        assert_eq!(error_of(&r), error, "{id}: {r:?}");
        if status == "cancelled" {
            assert!(r.get("started").is_none(), "{id} never ran: {r:?}");
            assert_eq!(
                r["after"].as_array().map(Vec::len),
                Some(1 + usize::from(id == "d"))
            );
        }
    }
    let ran = lines(&log);
    let at = |line: &str| {
        ran.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line:?} not in {ran:?}"))
    };
    for (parent, child) in [("a", "b"), ("a", "c"), ("b", "g"), ("c", "f")] {
        assert!(
            at(&format!("end {parent}")) < at(&format!("start {child}")),
            "{child} started before {parent} ended: {ran:?}"
        );
    }
    for never in ["d", "e"] {
        assert!(
            !ran.iter().any(|l| l.ends_with(&format!(" {never}"))),
            "{ran:?}"
        );
    }
    // A job naming a job that is nowhere is refused at submission.
    t.drop_job(
        "orphan.toml",
        "type = \"step\"\nafter = [\"no-such-job\"]\n",
    );
    let r = t.wait_record("orphan");
    assert_eq!(status_of(&r), "rejected");
    assert_eq!(error_of(&r), "unknown dependency no-such-job");
    let out = t.client(&["submit", "step", "--after", "no-such-job"]);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    let r = post(
        &a,
        "/jobs",
        &json!({"type": "step", "after_any": ["no-such-job"]}),
    );
    r.expect(422);
    assert_eq!(r.json()["error"], "unknown dependency no-such-job");
    // Over HTTP, as a JSON list: a child of a finished parent runs.
    let r = post(&a, "/jobs", &json!({"type": "step", "after": ["g"]}));
    r.expect(201);
    assert_eq!(
        status_of(&t.wait_record(r.json()["id"].as_str().unwrap())),
        "succeeded"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown dependency no-such-job"),
        "{out:?}"
    );
}

/// A parent run by one daemon, a child queued in both: the daemon that
/// ran the parent cannot start the child (its own limit of the child's
/// type is taken), the other learns of the parent's end at its rescan and
/// starts it. A child submitted after its parent ended, which no daemon's
/// memory holds, starts too: the record in done/ counts.
#[test]
fn a_parent_finished_by_another_daemon_on_the_spool_releases_its_child() {
    let keep = tempfile::tempdir().unwrap();
    let (gate1, gate2, log) = (
        keep.path().join("gate1"),
        keep.path().join("gate2"),
        keep.path().join("ran.log"),
    );
    let wait_gate = "while [ -n \"$RACCOON_PARAM_GATE\" ] && [ ! -e \"$RACCOON_PARAM_GATE\" ]; do sleep 0.02; done";
    let t = TestSpool::builder()
        .top("total = 4\nrescan = \"1s\"")
        .sh("parent", wait_gate)
        .sh(
            "child",
            &format!("{wait_gate}; echo \"$RACCOON_JOB_ID\" >> {}", log.display()),
        )
        // This daemon runs one child at a time.
        .arg("--child=1")
        .start();
    let gate = |p: &std::path::Path| p.display().to_string();
    t.drop_job(
        "hog.toml",
        &format!(
            "type = \"child\"\nparams = {{ gate = {} }}\n",
            toml_str(&gate(&gate2))
        ),
    );
    t.drop_job(
        "p.toml",
        &format!(
            "type = \"parent\"\nparams = {{ gate = {} }}\n",
            toml_str(&gate(&gate1))
        ),
    );
    t.wait_logged("hog and p to start here", PROMPT, || {
        let log = t.log();
        (log.contains("hog: started") && log.contains("p: started")).then_some(())
    });
    // The other daemon, same spool and configuration, its own limits.
    let other_log = keep.path().join("other.log");
    let mut other = Command::new(raccoond_bin())
        .arg("--config")
        .arg(&t.config)
        .stderr(fs::File::create(&other_log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let other_text = || fs::read_to_string(&other_log).unwrap_or_default();
    wait_for("the other daemon to be ready", PROMPT, || {
        other_text().contains(": ready,").then_some(())
    });
    t.drop_job("c.toml", "type = \"child\"\nafter = [\"p\"]\n");
    // Both have read c and hold it for p.
    wait_for("both daemons to hold c", PROMPT, || {
        let held = |text: String| text.contains("c: started");
        (!held(t.log()) && !held(other_text()) && t.ls("new") == ["c.toml"]).then_some(())
    });
    fs::write(&gate1, "").unwrap();
    assert_eq!(status_of(&t.wait_record("p")), "succeeded");
    let r = t.wait_record("c");
    assert_eq!(status_of(&r), "succeeded", "{r:?}");
    assert!(
        other_text().contains("c: started"),
        "the other daemon ran c:\n{}\n---\n{}",
        other_text(),
        t.log()
    );
    assert!(!t.log().contains("c: started"), "{}", t.log());
    // Submitted now, its parent known to no daemon's memory but done/.
    t.drop_job("late.toml", "type = \"child\"\nafter = [\"c\"]\n");
    assert_eq!(status_of(&t.wait_record("late")), "succeeded");
    fs::write(&gate2, "").unwrap();
    assert_eq!(status_of(&t.wait_record("hog")), "succeeded");
    assert_eq!(
        lines(&log).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from(["c".into(), "hog".into(), "late".into()])
    );
    let _ = other.kill();
    let _ = other.wait();
}

/// A child held for a parent when the daemon is killed: after the
/// restart the parent is recovered (and run again, as it has a retry
/// left), the child held again, and run once the parent has succeeded.
#[test]
fn a_child_still_waits_for_its_parent_after_a_crash_and_runs_after_it() {
    let keep = tempfile::tempdir().unwrap();
    let (gate, log) = (keep.path().join("gate"), keep.path().join("ran.log"));
    let mut t = TestSpool::builder()
        .top("total = 4")
        .ty(
            "parent",
            &format!(
                "command = [\"/bin/sh\", \"-c\", {}]\nretries = 1\nretry_delay = \"0s\"",
                toml_str(&format!(
                    "while [ ! -e {} ]; do sleep 0.02; done",
                    gate.display()
                ))
            ),
        )
        .sh(
            "child",
            &format!("echo \"$RACCOON_JOB_ID\" >> {}", log.display()),
        )
        .start();
    t.drop_job("p.toml", "type = \"parent\"\n");
    t.wait_logged("p to start", PROMPT, || {
        t.log().contains("p: started").then_some(())
    });
    t.drop_job("c.toml", "type = \"child\"\nafter = [\"p\"]\n");
    t.drop_job("d.toml", "type = \"child\"\n");
    // d was read after c: once it has run, c was read and held.
    assert_eq!(status_of(&t.wait_record("d")), "succeeded");
    assert!(t.ls("new").contains(&"c.toml".to_string()));
    t.kill9();
    t.launch();
    t.wait_logged("p to be recovered and started again", PROMPT, || {
        (t.log().matches("p: started").count() == 2).then_some(())
    });
    assert!(!t.record_path("c").exists(), "c waits for p again");
    fs::write(&gate, "").unwrap();
    let p = t.wait_record("p");
    assert_eq!(
        (status_of(&p), p["attempts"].as_integer()),
        ("succeeded", Some(2))
    );
    assert_eq!(status_of(&t.wait_record("c")), "succeeded");
    assert_eq!(lines(&log), ["d", "c"]);
}

/// How each of the 200 submissions was answered.
#[derive(Debug)]
enum Answer {
    /// A file dropped into new/ under this name (its id: the name).
    File(String),
    /// HTTP: 201 with this id, or 409 naming the holder.
    Created(String),
    Conflict(String),
    /// The client's printed id, and whether it said the key was held.
    Client(String, bool),
}

/// 200 submissions of one (type, unique) at once, from file drops, HTTP
/// and the client: exactly one job is queued; every HTTP loser is a 409
/// naming it, every client loser printed its id (or, having lost a race
/// after its look, was rejected as its duplicate), every file loser is
/// rejected `duplicate of <id>`.
#[test]
fn two_hundred_submissions_of_one_key_queue_exactly_one_job() {
    let t = TestSpool::builder()
        .top("total = 4")
        .sh("nightly", "true")
        .http()
        .start();
    let a = addr(&t);
    // Paused: the winner stays queued while the rest arrive.
    t.client(&["pause", "nightly"]);
    t.wait_logged("the pause to be seen", PROMPT, || {
        t.log().contains("pause: nightly paused").then_some(())
    });
    let text = "type = \"nightly\"\nunique = \"2026-11-29\"\n";
    let n = 200;
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (t, a) = (&t, &a);
                s.spawn(move || match i % 3 {
                    0 => {
                        let name = format!("f{i:03}");
                        t.drop_job(&format!("{name}.toml"), text);
                        Answer::File(name)
                    }
                    1 => {
                        let body = json!({"type": "nightly", "unique": "2026-11-29"});
                        let r = post(a, "/jobs", &body);
                        let v = r.json();
                        let id = v["id"].as_str().unwrap_or_default().to_string();
                        match r.status {
                            201 => Answer::Created(id),
                            409 => {
                                assert_eq!(v["error"], format!("duplicate of {id}"), "{v}");
                                Answer::Conflict(id)
                            }
                            other => panic!("POST /jobs answered {other}: {v}"),
                        }
                    }
                    _ => {
                        let out = t.client(&["submit", "nightly", "--unique", "2026-11-29"]);
                        assert_eq!(out.status.code(), Some(0), "{out:?}");
                        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
                        let held = String::from_utf8_lossy(&out.stderr).contains("already holds");
                        Answer::Client(id, held)
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every submission that reached new/ ends up queued (one) or rejected.
    let mut submitted: BTreeSet<String> = BTreeSet::new();
    for answer in &answers {
        match answer {
            Answer::File(id) | Answer::Created(id) => {
                submitted.insert(id.clone());
            }
            Answer::Client(id, false) => {
                submitted.insert(id.clone());
            }
            Answer::Conflict(_) | Answer::Client(_, true) => {}
        }
    }
    let winner = t.wait_logged("all but one submission to be rejected", PROMPT, || {
        let queued: Vec<String> = t
            .ls("new")
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect();
        let recorded: BTreeSet<String> = t.records().into_iter().map(|(id, _)| id).collect();
        let open: Vec<&String> = submitted
            .iter()
            .filter(|id| !recorded.contains(*id))
            .collect();
        (queued.len() == 1 && open.len() == 1 && t.ls("running").is_empty())
            .then(|| queued[0].trim_end_matches(".toml").to_string())
    });
    assert!(submitted.contains(&winner), "{winner} was submitted");
    let records: BTreeMap<String, toml::Table> = t.records().into_iter().collect();
    for (id, r) in &records {
        assert_eq!(status_of(r), "rejected", "{id}: {r:?}");
        assert_eq!(error_of(r), format!("duplicate of {winner}"), "{id}: {r:?}");
    }
    for answer in &answers {
        match answer {
            Answer::Conflict(id) | Answer::Client(id, true) => {
                assert_eq!(*id, winner, "{answer:?}\n{}", t.log())
            }
            Answer::Created(id) | Answer::File(id) | Answer::Client(id, false) => {
                assert!(
                    *id == winner || records.contains_key(id),
                    "{id}: {answer:?}"
                )
            }
        }
    }
    let conflicts = answers
        .iter()
        .filter(|a| matches!(a, Answer::Conflict(_)))
        .count();
    assert!(conflicts > 0, "some HTTP submissions met the winner");
    // Once the winner has ended, the key is free again.
    fs::write(t.path(&format!("cancel/{winner}")), "").unwrap();
    assert_eq!(status_of(&t.wait_record(&winner)), "cancelled");
    t.client(&["resume", "nightly"]);
    let r = post(
        &a,
        "/jobs",
        &json!({"type": "nightly", "unique": "2026-11-29"}),
    );
    r.expect(201);
    assert_eq!(
        status_of(&t.wait_record(r.json()["id"].as_str().unwrap())),
        "succeeded"
    );
}

/// Three jobs needing one GPU each on two GPUs: never more than two at
/// once, each told a GPU no other running job holds; a job needing three
/// is rejected; a bare count hands out slot numbers.
#[test]
fn three_one_gpu_jobs_on_two_gpus_run_two_at_a_time_on_distinct_gpus() {
    let keep = tempfile::tempdir().unwrap();
    let log = keep.path().join("gpu.log");
    let gate = keep.path().join("gate");
    // Each holds its GPU until the gate opens, so that two are seen
    // running together; the third can only start once one has ended.
    let script = format!(
        "echo \"start $RACCOON_JOB_ID $RACCOON_RESOURCE_GPU\" >> {log}; \
         while [ ! -e {gate} ]; do sleep 0.02; done; \
         echo \"end $RACCOON_JOB_ID $RACCOON_RESOURCE_GPU\" >> {log}",
        log = log.display(),
        gate = gate.display()
    );
    let t = TestSpool::builder()
        .top("total = 4\n[resources]\ngpu = [\"0\", \"1\"]\nlicense = 2")
        .ty(
            "train",
            &format!(
                "command = [\"/bin/sh\", \"-c\", {}]\nneeds = {{ gpu = 1 }}",
                toml_str(&script)
            ),
        )
        .sh("licensed", "echo \"$RACCOON_RESOURCE_LICENSE\"")
        .start();
    for i in 0..3 {
        t.drop_job(&format!("t{i}.toml"), "type = \"train\"\n");
    }
    t.wait_logged("two of them to start", PROMPT, || {
        (lines(&log).len() == 2).then_some(())
    });
    // The third is queued: it was read (the daemon lists its new/ file
    // only as queued once read; give it a job of another type to prove
    // the loop went round).
    t.drop_job("lic.toml", "type = \"licensed\"\nneeds = { license = 2 }\n");
    let r = t.wait_record("lic");
    assert_eq!(status_of(&r), "succeeded");
    assert_eq!(r["result"].as_str(), Some("1,2\n"), "{r:?}");
    assert_eq!(lines(&log).len(), 2, "the third waits: {:?}", lines(&log));
    fs::write(&gate, "").unwrap();
    for i in 0..3 {
        assert_eq!(status_of(&t.wait_record(&format!("t{i}"))), "succeeded");
    }
    // Replay the log: never more than two at once, never one GPU twice.
    let mut running: BTreeMap<String, String> = BTreeMap::new();
    let mut most = 0;
    let mut seen = BTreeSet::new();
    for line in lines(&log) {
        let f: Vec<&str> = line.split(' ').collect();
        let (what, id, gpu) = (f[0], f[1].to_string(), f.get(2).copied().unwrap_or(""));
        assert!(["0", "1"].contains(&gpu), "{line}");
        match what {
            "start" => {
                assert!(
                    !running.values().any(|g| g == gpu),
                    "GPU {gpu} twice: {line}"
                );
                running.insert(id.clone(), gpu.to_string());
                seen.insert(id);
                most = most.max(running.len());
            }
            _ => assert_eq!(running.remove(&id).as_deref(), Some(gpu), "{line}"),
        }
    }
    assert_eq!((most, seen.len()), (2, 3), "{:?}", lines(&log));
    // More than exists: rejected, as a file, by the client and over HTTP.
    t.drop_job("greedy.toml", "type = \"train\"\nneeds = { gpu = 3 }\n");
    let r = t.wait_record("greedy");
    assert_eq!(status_of(&r), "rejected");
    assert_eq!(
        error_of(&r),
        "needs: gpu = 3, more than this daemon has (2)"
    );
    let out = t.client(&["submit", "train", "--needs", "gpu=3"]);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    let out = t.client(&["submit", "train", "--needs", "tpu=1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no resource \"tpu\""),
        "{out:?}"
    );
}

/// `pause/<type>` stops new starts of that type within a second while
/// other types go on; `raccoon resume` lets them go; `POST /pause` holds
/// every type, `POST /resume` lets them go. The report's data, `/metrics`,
/// types.json and the log say what is paused.
#[test]
fn pause_holds_new_starts_within_a_second_and_resume_lets_them_go() {
    let t = TestSpool::builder()
        .top("total = 4")
        .sh("held", "true")
        .sh("free", "true")
        .http()
        .start();
    let a = addr(&t);
    let out = t.client(&["pause", "held"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let paused_at = Instant::now();
    t.wait_logged(
        "the daemon to see the pause",
        Duration::from_secs(1),
        || t.log().contains("pause: held paused").then_some(()),
    );
    assert!(paused_at.elapsed() < Duration::from_secs(1));
    // Submitted in this order: once the second has run, the first was read
    // and passed over.
    t.drop_job("h1.toml", "type = \"held\"\n");
    t.drop_job("f1.toml", "type = \"free\"\n");
    assert_eq!(status_of(&t.wait_record("f1")), "succeeded");
    assert_eq!(t.ls("new"), ["h1.toml"]);
    assert!(!t.record_path("h1").exists());
    let metrics = t.wait_logged("/metrics to say held is paused", PROMPT, || {
        let m = get(&a, "/metrics").text();
        m.contains("raccoond_paused{type=\"held\"} 1\n")
            .then_some(m)
    });
    assert!(
        metrics.contains("raccoond_paused{type=\"free\"} 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("raccoond_paused_all 0\n"), "{metrics}");
    let types: Value = serde_json::from_str(&t.read("types.json")).unwrap();
    let held = types["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ty| ty["name"] == "held")
        .unwrap();
    assert_eq!(
        (held["paused"].clone(), types["paused"].clone()),
        (json!(true), json!(false))
    );
    let shown = String::from_utf8_lossy(&t.client(&["show", "h1"]).stdout).into_owned();
    assert!(
        shown.contains("a resume: pause/held holds new starts"),
        "{shown}"
    );

    let out = t.client(&["resume", "held"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(status_of(&t.wait_record("h1")), "succeeded");
    assert!(t.log().contains("pause: held resumed"));

    // Every type, over HTTP.
    let r = post(&a, "/pause", &json!({}));
    r.expect(200);
    assert_eq!(r.json()["type"], "ALL");
    assert!(t.path("pause/ALL").exists());
    t.wait_logged(
        "the daemon to see pause/ALL",
        Duration::from_secs(1),
        || t.log().contains("pause: paused (every type)").then_some(()),
    );
    t.drop_job("f2.toml", "type = \"free\"\n");
    t.wait_logged("f2 to be read and held", PROMPT, || {
        let m = get(&a, "/metrics").text();
        m.contains("raccoond_jobs{state=\"queued\",type=\"free\"} 1\n")
            .then_some(())
    });
    assert!(!t.record_path("f2").exists() && t.ls("running").is_empty());
    let m = get(&a, "/metrics").text();
    assert!(m.contains("raccoond_paused_all 1\n"), "{m}");
    let html = get(&a, "/").text();
    assert!(html.contains("<code>pause/ALL</code>"), "{html}");
    post(&a, "/pause?type=nope", &json!({})).expect(422);
    post(&a, "/resume", &json!({})).expect(200);
    assert_eq!(status_of(&t.wait_record("f2")), "succeeded");
    // A name that is no type is ignored, and said so once.
    fs::write(t.path("pause/typo"), "").unwrap();
    t.drop_job("f3.toml", "type = \"free\"\n");
    assert_eq!(status_of(&t.wait_record("f3")), "succeeded");
    t.wait_logged("the ignored name to be logged", PROMPT, || {
        t.log().contains("pause/typo: not a type").then_some(())
    });
}
