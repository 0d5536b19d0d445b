//! Schedules: each tick submits one job, exactly once across the daemons
//! sharing a spool (and one claim per tick through two mounts standing in
//! for two hosts); `catch_up` after a crash; what the client and the
//! report say; configuration errors.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use raccoond::schedule::Tick;

use crate::support::*;

/// A schedule `beat` of a job that appends its id to `ran.log` in a
/// folder of its own (so that every run is counted, not only every
/// record), kept as long as the returned folder.
fn beat_spool(schedule: &str) -> (TestSpool, tempfile::TempDir) {
    let keep = tempfile::tempdir().unwrap();
    let log = keep.path().join("ran.log");
    let t = TestSpool::builder()
        .top(&format!(
            "[schedules.beat]\n{schedule}\njob = {{ type = \"beat\" }}"
        ))
        .sh(
            "beat",
            &format!("echo $RACCOON_JOB_ID >> {}", log.display()),
        )
        .start();
    (t, keep)
}

/// The ticks of `beat` jobs anywhere in the spool (queued, running or
/// finished), from their ids, with how many files each has: a tick
/// submitted twice would show twice (the second under a fresh id, with
/// `submitted_as` naming the first).
fn beat_jobs(t: &TestSpool) -> BTreeMap<Tick, usize> {
    let mut seen = BTreeMap::new();
    for dir in ["new", "running"] {
        for name in t.ls(dir) {
            if let Some(tick) = beat_tick(name.strip_suffix(".toml").unwrap_or("")) {
                *seen.entry(tick).or_default() += 1;
            }
        }
    }
    for (id, rec) in t.records() {
        let asked = rec
            .get("submitted_as")
            .and_then(|v| v.as_str())
            .map(|n| n.trim_end_matches(".toml").to_string())
            .unwrap_or(id);
        if let Some(tick) = beat_tick(&asked) {
            *seen.entry(tick).or_default() += 1;
        }
    }
    seen
}

fn beat_tick(id: &str) -> Option<Tick> {
    id.strip_prefix("beat-").and_then(Tick::parse_stamp)
}

fn beat_id(tick: Tick) -> String {
    format!("beat-{}", tick.stamp())
}

fn tick_at(secs: i64) -> Tick {
    Tick::from_secs(secs).unwrap()
}

fn now_secs() -> i64 {
    Tick::floor(SystemTime::now()).secs()
}

/// Sleeps until the wall clock reads `secs` (plus `extra`): waiting for a
/// moment on the clock, not for a condition.
fn sleep_until(secs: i64, extra: Duration) {
    let target = tick_at(secs).time() + extra;
    if let Ok(d) = target.duration_since(SystemTime::now()) {
        std::thread::sleep(d);
    }
}

/// How many times each job id was run, from the task's own log.
fn runs(log: &std::path::Path) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for id in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *count.entry(id.to_string()).or_default() += 1;
    }
    count
}

/// Another daemon on the same spool and configuration, its log kept.
fn another_daemon(t: &TestSpool, n: usize) -> (Child, std::path::PathBuf) {
    let log = t.dir().join(format!("peer.{n}.log"));
    let child = Command::new(raccoond_bin())
        .arg("--config")
        .arg(&t.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

#[test]
fn three_daemons_on_one_spool_submit_each_tick_of_a_one_second_schedule_exactly_once() {
    let (mut t, keep) = beat_spool("every = \"1s\"");
    let ran = keep.path().join("ran.log");
    let peers: Vec<(Child, std::path::PathBuf)> = (0..2).map(|n| another_daemon(&t, n)).collect();
    for (_, log) in &peers {
        t.wait_logged("a peer to be ready", PROMPT, || {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains(": ready,")
                .then_some(())
        });
    }
    // Ten ticks, all after the three daemons were up.
    let first = now_secs() + 1;
    let ten: Vec<Tick> = (first..first + 10).map(tick_at).collect();
    for tick in &ten {
        t.wait_record_for(&beat_id(*tick), Duration::from_secs(30));
    }
    for (mut child, _) in peers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_for("a peer to stop", PROMPT, || child.try_wait().ok().flatten());
    }
    t.stop(PROMPT);
    let jobs = beat_jobs(&t);
    for tick in &ten {
        assert_eq!(jobs.get(tick), Some(&1), "{}: {jobs:?}", beat_id(*tick));
    }
    // Over the whole run: one job per tick, and no tick passed over while a
    // daemon was up.
    assert!(
        jobs.values().all(|n| *n == 1),
        "a tick submitted twice: {jobs:?}"
    );
    let ticks: Vec<i64> = jobs.keys().map(|t| t.secs()).collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "ticks are not consecutive: {ticks:?}"
    );
    let runs = runs(&ran);
    for tick in &ten {
        assert_eq!(runs.get(&beat_id(*tick)), Some(&1), "{runs:?}");
    }
    assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
    // Each tick was submitted by one daemon, and its log says so.
    let mut logs = t.log();
    for n in 0..2 {
        logs.push_str(&std::fs::read_to_string(t.dir().join(format!("peer.{n}.log"))).unwrap());
    }
    for tick in &ten {
        let line = format!("{}: submitted by schedule beat", beat_id(*tick));
        assert_eq!(logs.matches(&line).count(), 1, "{line}\n{logs}");
    }
}

/// Kills the daemon with SIGKILL just after a tick of an `every = "4s"`
/// schedule, restarts it after the next tick has passed, and returns that
/// missed tick, the tick fired before the kill, and the running spool
/// (with the folder of its task's log).
fn kill_across_a_tick(catch_up: bool) -> (TestSpool, tempfile::TempDir, Tick, Tick) {
    let (mut t, keep) = beat_spool(&format!("every = \"4s\"\ncatch_up = {catch_up}"));
    let before = wait_for("a first tick's job", Duration::from_secs(15), || {
        beat_jobs(&t).keys().next_back().copied()
    });
    // Killed with no beat job queued or running: one left there would be
    // put back at the restart and hold `unique = beat`, making the missed
    // tick a duplicate (as it should be), which is not what this tests.
    let idle = |t: &TestSpool| {
        ["new", "running"]
            .iter()
            .all(|d| t.ls(d).iter().all(|n| !n.starts_with("beat-")))
    };
    wait_for(
        "the beat jobs so far to end",
        Duration::from_secs(15),
        || idle(&t).then_some(()),
    );
    t.kill9();
    // Whatever fired before the kill is on disk now: nothing fires after.
    let fired = *beat_jobs(&t).keys().next_back().unwrap();
    assert!(fired >= before);
    // The first tick after it that can still be missed: its second must be
    // over before the daemon starts again (a tick in the start's own
    // second is not missed, it fires), with time left to start before the
    // tick after it.
    let mut missed = fired.secs() + 4;
    while now_secs() > missed + 1 {
        missed += 4;
    }
    sleep_until(missed + 1, Duration::from_millis(200));
    t.launch();
    let started = SystemTime::now();
    assert!(
        started < tick_at(missed + 4).time(),
        "the restart took until the next tick; the test cannot tell catch-up from it\n{}",
        t.log()
    );
    (t, keep, tick_at(missed), fired)
}

#[test]
fn a_tick_missed_while_killed_is_submitted_once_at_restart_with_catch_up() {
    let (mut t, _keep, missed, fired) = kill_across_a_tick(true);
    let rec = t.wait_record(&beat_id(missed));
    assert_eq!(status_of(&rec), "succeeded", "{rec:?}");
    // The tick after it fires as usual.
    let next = tick_at(missed.secs() + 4);
    t.wait_record_for(&beat_id(next), Duration::from_secs(15));
    t.stop(PROMPT);
    let jobs = beat_jobs(&t);
    assert_eq!(jobs.get(&missed), Some(&1), "{jobs:?}");
    // Only the latest missed tick is caught up.
    for (tick, n) in &jobs {
        assert_eq!(*n, 1, "{jobs:?}");
        assert!(
            *tick <= fired || *tick >= missed,
            "{} between the kill and the restart: {jobs:?}",
            beat_id(*tick)
        );
    }
    let log = t.log();
    assert_eq!(
        log.matches(&format!("{}: submitted by schedule beat", beat_id(missed)))
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("was missed while no daemon ran; submitting it once (catch_up)"),
        "{log}"
    );
}

#[test]
fn a_tick_missed_while_killed_is_not_submitted_without_catch_up() {
    let (mut t, _keep, missed, fired) = kill_across_a_tick(false);
    let next = tick_at(missed.secs() + 4);
    t.wait_record_for(&beat_id(next), Duration::from_secs(15));
    t.stop(PROMPT);
    let jobs = beat_jobs(&t);
    assert_eq!(jobs.get(&missed), None, "{jobs:?}");
    for (tick, n) in &jobs {
        assert_eq!(*n, 1, "{jobs:?}");
        assert!(*tick <= fired || *tick >= next, "{jobs:?}");
    }
    assert!(!t.log().contains(&beat_id(missed)), "{}", t.log());
}

#[test]
fn raccoon_schedules_and_the_report_show_next_tick_and_last_job() {
    let t = TestSpool::builder()
        .top(
            "[schedules.beat]\nevery = \"1s\"\njob = { type = \"beat\" }\n\
             [schedules.nightly]\ncron = \"30 2 * * *\"\ntz = \"Europe/Paris\"\ncatch_up = true\n\
             job = { type = \"beat\", priority = 3 }",
        )
        .sh("beat", "true")
        .start();
    let first = wait_for("a first tick", PROMPT, || {
        beat_jobs(&t).keys().next().copied()
    });
    t.wait_record(&beat_id(first));
    let out = t.client(&["schedules", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let beat = &list[0];
    assert_eq!(beat["name"], "beat");
    assert_eq!(beat["every"], "1s");
    assert_eq!(beat["type"], "beat");
    let last = beat_tick(beat["last"].as_str().unwrap()).unwrap();
    assert!(last >= first, "{beat}");
    let next = raccoond::time::parse_rfc3339(beat["next"].as_str().unwrap()).unwrap();
    assert!(next > last.time(), "{beat}");
    let nightly = &list[1];
    assert_eq!(
        (&nightly["cron"], &nightly["tz"], &nightly["catch_up"]),
        (&"30 2 * * *".into(), &"Europe/Paris".into(), &true.into())
    );
    assert_eq!(nightly["last"], serde_json::Value::Null);
    let text = t.client(&["schedules"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("nightly   cron \"30 2 * * *\" (Europe/Paris)  beat  yes"),
        "{text}"
    );
    let html = wait_for("the report's Schedules card", PROMPT, || {
        let html = std::fs::read_to_string(t.path("report.html")).ok()?;
        html.contains("<h2>Schedules").then_some(html)
    });
    assert!(
        html.contains("<td>cron &quot;30 2 * * *&quot; (Europe/Paris)</td>"),
        "{html}"
    );
    assert!(html.contains("<td class=\"id\">beat-"), "{html}");
    // What the spool holds: the job as submitted, with unique = NAME.
    let rec = t.wait_record(&beat_id(first));
    assert_eq!(status_of(&rec), "succeeded", "{rec:?}");
}

#[test]
fn a_bad_schedule_stops_the_daemon_with_exit_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "cron = \"0 3 * *\"\njob = { type = \"t\" }",
            "schedules.x.cron: \"0 3 * *\"",
        ),
        (
            "every = \"1h\"\ntz = \"Mars/Olympus\"\njob = { type = \"t\" }",
            "schedules.x.tz",
        ),
        (
            "every = \"1h\"\njob = { type = \"nope\" }",
            "schedules.x.job: unknown type \"nope\"",
        ),
        (
            "cron = \"0 3 * * *\"\nevery = \"1h\"\njob = { type = \"t\" }",
            "set cron or every, not both",
        ),
        (
            "every = \"1h\"\njob = { type = \"t\" }\ncatchup = true",
            "catchup",
        ),
    ];
    for (body, want) in cases {
        let config = dir.path().join("raccoond.toml");
        std::fs::write(
            &config,
            format!(
                "spool = \"spool\"\n[types.t]\ncommand = [\"true\"]\nuser = \"{}\"\n[schedules.x]\n{body}\n",
                me()
            ),
        )
        .unwrap();
        let ran = run(Command::new(raccoond_bin()).arg("--config").arg(&config));
        assert_eq!(ran.status.code(), Some(78), "{body}: {}", ran.stderr);
        assert!(
            ran.stderr.contains(&config.display().to_string()) && ran.stderr.contains(want),
            "{body}: {}",
            ran.stderr
        );
    }
}

/// Two bindfs mounts of one folder stand in for two hosts on a shared
/// file system (FACTS.md: no inotify across them, `flock` not shared,
/// `RENAME_NOREPLACE` refused): the `O_EXCL` claim of a tick still has
/// exactly one winner, tick after tick, with both racing for each.
#[test]
fn through_two_mounts_of_one_spool_each_tick_is_claimed_once() {
    require_root("mounting bindfs");
    let bindfs = tool("bindfs", "bindfs");
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("spool");
    raccoond::spool::Spool::open(&real, true).unwrap();
    let mounts: Vec<Mount> = ["a", "b"]
        .iter()
        .map(|m| {
            let at = dir.path().join(m);
            std::fs::create_dir(&at).unwrap();
            let ran = run(Command::new(&bindfs).arg(&real).arg(&at));
            assert!(ran.status.success(), "bindfs: {}", ran.stderr);
            Mount(at)
        })
        .collect();
    let hosts: Vec<raccoond::spool::Spool> = mounts
        .iter()
        .map(|m| raccoond::spool::Spool::open(&m.0, true).unwrap())
        .collect();
    let ticks: Vec<Tick> = (0..200).map(|i| tick_at(1_800_000_000 + i)).collect();
    let barrier = std::sync::Barrier::new(hosts.len());
    let wins: Vec<Vec<bool>> = std::thread::scope(|s| {
        let racers: Vec<_> = hosts
            .iter()
            .map(|h| {
                let (ticks, barrier) = (&ticks, &barrier);
                s.spawn(move || {
                    ticks
                        .iter()
                        .map(|t| {
                            barrier.wait();
                            h.claim_tick("race", *t).unwrap()
                        })
                        .collect::<Vec<bool>>()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (i, t) in ticks.iter().enumerate() {
        let winners = wins.iter().filter(|w| w[i]).count();
        assert_eq!(winners, 1, "{t:?}: {winners} winners");
    }
    // Both views, and the folder itself, list the same markers.
    let real_view = raccoond::spool::Spool::open(&real, false).unwrap();
    for h in hosts.iter().chain([&real_view]) {
        assert_eq!(h.fired_ticks("race").unwrap(), ticks);
    }
}

/// A bindfs mount, unmounted when the test ends (passed or not).
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount").arg("-u").arg(&self.0).status();
    }
}
