//! Who submitted a job, and who a task of a `user = "@submitter"` type
//! runs as (the at(1) model, SPEC §13).
//!
//! The submitter is the owner of the submitted file, as the claim's
//! `fstat` found it; a file of the daemon's own (a requeued copy) names
//! its first submitter in its `submitter` key, which the daemon wrote.
//! Never runs a task as root for `@submitter`, and never as a uid the
//! passwd database does not know.

use nix::unistd::{Gid, Uid, User, getgrouplist};

use crate::config::RunAs;

/// The uid a job was submitted by: `owner` of the claimed file, unless
/// that is the daemon's own user and the job's `submitter` key (written
/// by the daemon into a requeued copy) names someone.
pub(super) fn submitter_uid(owner: Option<u32>, key: Option<&str>) -> Option<u32> {
    let me = nix::unistd::geteuid().as_raw();
    match (owner, key) {
        (Some(o), Some(name)) if o == me => User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .or(owner),
        _ => owner,
    }
}

/// A user's name for records and the report: the passwd name, else the
/// number.
pub(super) fn name_of(uid: u32) -> String {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// [`name_of`] from a cache, for the report and records (the snapshot
/// names up to a few hundred rows a second, and each record its
/// submitter: without it, every job read the user database). A name is
/// looked up again after a minute, so a renamed user shows its new name
/// soon enough.
pub(super) fn shown_name(uid: u32) -> String {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::time::{Duration, Instant};
    const FRESH: Duration = Duration::from_secs(60);
    thread_local! {
        static NAMES: RefCell<HashMap<u32, (String, Instant)>> = RefCell::new(HashMap::new());
    }
    NAMES.with(|n| {
        let mut n = n.borrow_mut();
        if n.len() > 10_000 {
            n.clear();
        }
        let now = Instant::now();
        match n.get(&uid) {
            Some((name, at)) if now.duration_since(*at) < FRESH => name.clone(),
            _ => {
                let name = name_of(uid);
                n.insert(uid, (name.clone(), now));
                name
            }
        }
    })
}

/// Who a task of an `@submitter` type runs as, for submitter `uid`; the
/// error is the record's `error`.
pub(super) fn run_as(uid: Option<u32>) -> Result<RunAs, String> {
    let Some(uid) = uid else {
        return Err("user = \"@submitter\": who submitted the job is unknown".into());
    };
    if uid == 0 {
        return Err("user = \"@submitter\": a submission owned by root never runs as root".into());
    }
    let user = User::from_uid(Uid::from_raw(uid))
        .map_err(|e| format!("user = \"@submitter\": cannot look up uid {uid}: {e}"))?
        .ok_or_else(|| {
            format!("user = \"@submitter\": submitter uid {uid} is not in the passwd database")
        })?;
    let me = nix::unistd::geteuid();
    if !me.is_root() && user.uid != me {
        return Err(format!(
            "user = \"@submitter\": raccoond does not run as root and cannot run tasks as {}",
            user.name
        ));
    }
    let cname = std::ffi::CString::new(user.name.clone())
        .map_err(|_| format!("user {:?}: contains NUL", user.name))?;
    let groups = getgrouplist(&cname, user.gid)
        .map_err(|e| format!("user {}: cannot list its groups: {e}", user.name))?;
    Ok(RunAs {
        name: user.name,
        uid,
        gid: user.gid.as_raw(),
        groups: groups.iter().map(|g: &Gid| g.as_raw()).collect(),
    })
}

/// Whether the owner `by` of a cancel request may cancel a job submitted
/// by `submitter`: its submitter, root, or the daemon's own user.
pub(super) fn may_cancel(by: u32, submitter: Option<u32>) -> bool {
    by == 0 || by == nix::unistd::geteuid().as_raw() || Some(by) == submitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_cancel_and_who_runs() {
        let me = nix::unistd::geteuid().as_raw();
        for (by, submitter, ok) in [
            (0, Some(1000), true),
            (me, Some(1000), true),
            (1000, Some(1000), true),
            (1001, Some(1000), me == 1001),
            (1001, None, me == 1001),
        ] {
            assert_eq!(may_cancel(by, submitter), ok, "{by} {submitter:?}");
        }
        assert!(run_as(Some(0)).unwrap_err().contains("root"));
        assert!(run_as(None).is_err());
        assert!(
            run_as(Some(4_000_000_000))
                .unwrap_err()
                .contains("not in the passwd database")
        );
        assert_eq!(submitter_uid(Some(1234), Some("root")), Some(1234));
        assert_eq!(submitter_uid(None, None), None);
        assert_eq!(name_of(0), "root");
    }
}
