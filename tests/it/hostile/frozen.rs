//! A finished job's files against later tasks of the same user (SPEC §0:
//! once its job has ended, no task can change that job's files).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::still_serves;
use crate::support::*;

// Finding 8: a finished job's files, and a later task of the same user.

#[test]
fn a_finished_jobs_files_are_frozen_against_later_tasks_of_the_same_user() {
    require_root("running tasks as nobody");
    // One type for both jobs: the second is the attacker, the same user.
    let script = "echo original > $RACCOON_FILES/report.txt; VICTIM=\"$RACCOON_PARAM_VICTIM\"; \
                  if [ -n \"$VICTIM\" ]; then echo tampered > \"$VICTIM\" 2>/dev/null && echo WROTE; \
                  touch \"$(dirname \"$VICTIM\")/added\" 2>/dev/null && echo ADDED; \
                  rm -f \"$VICTIM\" 2>/dev/null; fi; true";
    let t = TestSpool::builder()
        .sh("ok", "echo fine")
        .ty(
            "files",
            &format!(
                "command = [\"/bin/sh\", \"-c\", {}]\nuser = \"nobody\"\nparams = {{ victim = \"string?\" }}",
                toml_str(script)
            ),
        )
        .start();
    fs::set_permissions(t.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    t.drop_job("first.toml", "type = \"files\"\n");
    assert_eq!(status_of(&t.wait_record("first")), "succeeded");
    let frozen = t.path("done").join("first.files");
    let meta = fs::metadata(&frozen).unwrap();
    assert_eq!(
        meta.uid(),
        nix::unistd::geteuid().as_raw(),
        "the files folder must be the daemon's"
    );
    assert_eq!(
        meta.mode() & 0o022,
        0,
        "the files folder must not be writable by group or others"
    );
    let victim = frozen.join("report.txt");
    t.drop_job(
        "second.toml",
        &format!(
            "type = \"files\"\n[params]\nvictim = {}\n",
            toml_str(&victim.display().to_string())
        ),
    );
    let r = t.wait_record("second");
    assert_eq!(status_of(&r), "succeeded", "{r:?}");
    // An absent .out is empty output (SPEC §1): the defence prints nothing.
    let out = fs::read_to_string(t.path("done/second.out")).unwrap_or_default();
    assert!(!out.contains("WROTE") && !out.contains("ADDED"), "{out}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "original\n");
    let file_meta = fs::metadata(&victim).unwrap();
    assert_eq!(file_meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(file_meta.mode() & 0o022, 0);
    still_serves(&t, "after_tamper");
}
