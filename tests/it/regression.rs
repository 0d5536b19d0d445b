//! Regressions, each named after the bug it pins: what went wrong, in the
//! test's name and first comment, so that a failure says which old bug is
//! back (as ripgrep's tests/regression.rs does).

use crate::support::*;

/// A retry put back with no delay was claimed while its old file was
/// still in running/, and ran on under a fresh id.
#[test]
fn requeue_race_a_retry_without_delay_ran_under_a_fresh_id() {
    let t = TestSpool::builder()
        .ty(
            "again",
            "command = [\"/bin/sh\", \"-c\", \"[ \\\"$RACCOON_ATTEMPT\\\" -ge 2 ]\"]\nretries = 1\nretry_delay = \"0\"",
        )
        .start();
    for i in 0..200 {
        t.drop_job(&format!("z{i}.toml"), "type = \"again\"\n");
    }
    for i in 0..200 {
        let r = t.wait_record(&format!("z{i}"));
        assert_eq!(status_of(&r), "succeeded", "{r:?}");
        assert_eq!(r["attempts"].as_integer(), Some(2));
    }
    assert_eq!(t.records().len(), 200, "a retry ran under another id");
}

/// A job turned away after it was granted resource units (a root-owned
/// submission to a type that runs as its submitter) kept them: the one GPU
/// stayed taken and every later job needing it waited for ever.
#[test]
fn resource_leak_a_job_turned_away_at_start_kept_its_units() {
    require_root("a root-owned submission is what gets turned away");
    let t = TestSpool::builder()
        .top("[resources]\ngpu = 1")
        .ty(
            "mine",
            "command = [\"true\"]\nuser = \"@submitter\"\nneeds = { gpu = 1 }",
        )
        .ty("gpu", "command = [\"true\"]\nneeds = { gpu = 1 }")
        .start();
    t.drop_job("turned.toml", "type = \"mine\"\n");
    assert_eq!(status_of(&t.wait_record("turned")), "rejected");
    t.drop_job("after.toml", "type = \"gpu\"\n");
    let r = t.wait_record("after");
    assert_eq!(status_of(&r), "succeeded", "{r:?}\n{}", t.log());
}
