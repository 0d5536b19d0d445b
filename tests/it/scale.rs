//! Scale: a flood of submissions against `max_queued` (SPEC §8).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::http::{addr, get};
use crate::support::*;

/// The sum of `raccoond_jobs{state="queued",…}` in a `/metrics` body.
fn queued_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("raccoond_jobs{state=\"queued\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn with_max_queued_5_fifty_jobs_all_run_once_and_at_most_5_are_ever_queued() {
    let ran = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "echo \"$RACCOON_JOB_ID\" >> {}; sleep 0.02",
        ran.path().display()
    );
    let mut t = TestSpool::builder()
        .top("total = 1\nmax_queued = 5")
        .sh("t", &script)
        .http()
        .start();
    t.stop(PROMPT);
    // 30 wait in new/ before the daemon starts, settled long ago: it
    // reads only 5 of them.
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..30 {
        let name = format!("a{i:02}.toml");
        t.drop_job(&name, "type = \"t\"\n");
        let f = std::fs::File::options()
            .write(true)
            .open(t.path("new").join(&name))
            .unwrap();
        f.set_modified(long_ago + Duration::from_secs(i)).unwrap();
    }
    t.launch();
    let ready = t.log();
    // Five read: one started (the oldest file), four queued.
    assert!(ready.contains("total 1, 4 queued, 1 running"), "{ready}");
    assert!(ready.contains("a00: started"), "{ready}");
    assert!(ready.contains("max_queued = 5"), "{ready}");
    // 20 more arrive while it runs: announced by inotify, left unread.
    for i in 0..20 {
        t.drop_job(&format!("b{i:02}.toml"), "type = \"t\"\n");
    }
    let a = addr(&t);
    let mut most = 0;
    let records = wait_for("the 50 records", Duration::from_secs(120), || {
        most = most.max(queued_in(&get(&a, "/metrics").text()));
        let records = t.records();
        (records.len() == 50).then_some(records)
    });
    assert!(most <= 5, "/metrics showed {most} queued");
    for (id, rec) in &records {
        assert_eq!(status_of(rec), "succeeded", "{id}: {rec}");
        assert_eq!(rec["attempts"].as_integer(), Some(1), "{id}: {rec}");
    }
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for id in std::fs::read_to_string(ran.path()).unwrap().lines() {
        *runs.entry(id.to_string()).or_default() += 1;
    }
    assert_eq!(runs.len(), 50, "{runs:?}");
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    assert!(t.ls("new").is_empty(), "{:?}", t.ls("new"));
}

#[test]
fn a_job_that_prints_nothing_leaves_no_output_files_and_reads_as_empty_output() {
    let t = TestSpool::builder()
        .sh("quiet", "true")
        .sh("loud", "echo hi; echo oops >&2")
        .http()
        .start();
    t.drop_job("quiet.toml", "type = \"quiet\"\n");
    t.drop_job("loud.toml", "type = \"loud\"\n");
    let rec = t.wait_record("quiet");
    assert_eq!(status_of(&rec), "succeeded", "{rec}");
    t.wait_record("loud");
    // Only what the job needed: its record and its files folder.
    let done = t.ls("done");
    let quiet: Vec<&String> = done.iter().filter(|n| n.starts_with("quiet.")).collect();
    assert_eq!(quiet, ["quiet.files", "quiet.toml"], "{done:?}");
    assert!(done.contains(&"loud.out".to_string()), "{done:?}");
    assert!(done.contains(&"loud.err".to_string()), "{done:?}");
    // Every reader takes the absent files as empty output.
    let a = addr(&t);
    for target in [
        "/jobs/quiet/output",
        "/jobs/quiet/stderr",
        "/done/quiet.out",
        "/done/quiet.err",
    ] {
        assert_eq!(get(&a, target).expect(200).text(), "", "{target}");
    }
    get(&a, "/done/nosuchjob.out").expect(404);
    assert_eq!(get(&a, "/jobs/loud/output").expect(200).text(), "hi\n");
    for args in [&["output", "quiet"][..], &["output", "--stderr", "quiet"]] {
        let out = t.client(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
    let shown = t.client(&["show", "quiet"]);
    assert!(shown.status.success(), "{shown:?}");
}
