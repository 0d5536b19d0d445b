//! Who wrote a file in `tmp/` or `.spares/`: the names the spool gives its
//! own temporary files, and the cleanup of those whose writer died.
//!
//! Owns the name format `<host>.<pid>-<start>.<nonce>.<n>.<tag>` and reading
//! it back. Never looks at a name it did not make (another host's, a
//! submitter's `tmp/x.part`): those are left to the 36-hour rule.
//!
//! Invariant: a name carries its writer's pid *and* start time, so a pid
//! reused by an unrelated process never keeps a dead writer's leftovers
//! alive, and a live writer's file is never removed.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Spool;

/// A name unique to this process, for files in `tmp/`:
/// `<host>.<pid>.<nonce>.<n>.<tag>`, so that a later start on the same
/// host can tell the leftovers of a dead writer from a live one's.
pub(super) fn tmp_name(tag: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.{}.{:08x}.{n}.{tag}",
        host_tag(),
        writer_tag(),
        crate::ids::nonce()
    )
}

/// `<pid>-<start time>`: a pid alone can be reused by another process by
/// the time someone asks whether its writer is alive.
fn writer_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let pid = std::process::id() as i32;
        format!("{pid}-{}", process_start(pid).unwrap_or(0))
    })
}

/// When a process started (clock ticks after boot, `/proc/<pid>/stat`).
pub(super) fn process_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: starttime is
    // the 22nd field of the line, the 20th after ")".
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The host name, cut down to what is safe in a file name.
fn host_tag() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let h: String = crate::ids::hostname()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if h.is_empty() { "host".into() } else { h }
    })
}

/// The process (pid and start time) of this host that wrote a `tmp/` or
/// `.spares/` file, when the name says so.
fn tmp_writer(name: &str) -> Option<(i32, u64)> {
    let mut parts = name.rsplitn(5, '.');
    let (_tag, _n, _nonce, writer, host) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if host != host_tag() {
        return None;
    }
    let (pid, start) = writer.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

impl Spool {
    /// Deletes the `tmp/` files that raccoond processes of this host left
    /// when they died mid-write (half a record, half a submission). Files
    /// of live processes, of other hosts and of other writers stay (the
    /// 36-hour rule takes care of those).
    pub fn clean_dead_tmp(&self) {
        for dir in [self.tmp_dir(), self.spares_dir()] {
            self.clean_dead_in(&dir);
        }
    }

    fn clean_dead_in(&self, dir: &Path) {
        let Ok(names) = self.names(dir) else {
            return;
        };
        for name in names {
            let Some((pid, start)) = tmp_writer(&name) else {
                continue;
            };
            if process_start(pid) != Some(start) {
                let _ = fs::remove_file(dir.join(&name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_names_say_which_process_of_which_host_wrote_them() {
        let name = tmp_name("rec");
        let me = std::process::id() as i32;
        assert_eq!(tmp_writer(&name), Some((me, process_start(me).unwrap())));
        assert!(process_start(me).unwrap() > 0);
        assert_eq!(tmp_writer("otherhost.12-34.abcd.1.rec"), None);
        assert_eq!(tmp_writer("job.part"), None);
    }
}
