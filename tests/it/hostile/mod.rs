//! Hostile submitters and tasks, each written as the attacker would do it
//! (SPEC §0, §3, §7): values at the edge of every range, descriptors kept
//! open on submitted files, hard links, entries swapped for folders,
//! predictable temporary names, shared locks, names that are not UTF-8,
//! tampering with a finished job's files, links and FIFOs in `new/`, and a
//! token anyone can read. Every test ends by checking that the daemon is
//! alive and a normal job still succeeds.

#![allow(dead_code)] // helpers for the attack files; each uses some

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::support::*;

// One file per kind of attack; each test ends with `still_serves`.

/// Entries in new/ and running/: open descriptors, hard links, swaps,
/// planted tmp/ names, shared locks, raw names, links and FIFOs.
mod entries;
/// A finished job's files against later tasks of the same user.
mod frozen;
/// Finding 1 (values past their range) and 10 (a token file others can read).
mod values;

/// The daemon is alive and still runs an ordinary job to success.
#[track_caller]
pub fn still_serves(t: &TestSpool, id: &str) {
    t.drop_job(&format!("{id}.toml"), "type = \"ok\"\n");
    let r = t.wait_record(id);
    assert_eq!(status_of(&r), "succeeded", "{r:?}\nthe log:\n{}", t.log());
}

pub fn ok_spool() -> TestSpool {
    TestSpool::builder().sh("ok", "echo fine").start()
}

/// Every inode number under `dir`, recursively (links not followed).
pub fn inodes_under(dir: &Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        out.push((meta.ino(), e.path().display().to_string()));
        if meta.is_dir() {
            out.extend(inodes_under(&e.path()));
        }
    }
    out
}

/// Every entry under `dir` that is neither a regular file nor a folder.
pub fn odd_entries_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            out.extend(odd_entries_under(&e.path()));
        } else if !meta.is_file() {
            out.push(e.path().display().to_string());
        }
    }
    out
}

pub fn text_of<'a>(r: &'a toml::Table, key: &str) -> &'a str {
    r.get(key).and_then(|v| v.as_str()).unwrap_or("")
}
