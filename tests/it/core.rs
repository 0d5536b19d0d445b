//! The spool pipeline from new/ to done/.

use crate::support::*;

#[test]
fn a_renamed_job_and_a_copied_job_both_succeed_with_output() {
    let t = TestSpool::builder().sh("hello", "echo hi from $RACCOON_JOB_ID").start();
    t.drop_job("renamed.toml", "type = \"hello\"\n");
    t.cp_job("copied.toml", "type = \"hello\"\n");
    for id in ["renamed", "copied"] {
        let r = t.wait_record(id);
        assert_eq!(status_of(&r), "succeeded", "{r:?}");
        assert_eq!(r["exit_code"].as_integer(), Some(0));
        assert_eq!(t.read(&format!("done/{id}.out")), format!("hi from {id}\n"));
    }
}
