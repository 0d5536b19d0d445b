//! The daemon's own folder, `.tmp/` (mode 0700): the names of what is in
//! it, random names for `tmp/`, and the cleanup of what a dead daemon left
//! there.
//!
//! Owns the name format `<host>.<pid>-<start>.<nonce>.<n>.<tag>` of the
//! daemon's temporary files (`job`: a job file being copied; `rec`: a
//! record or the report; `trash`: something on its way out) and
//! `<id>.<host>.<pid>-<start>.<nonce>.<n>.claim` for a submission taken out
//! of `new/` for job `<id>`, and reading them back. Never looks at a name
//! it did not make, nor at another host's.
//!
//! Invariant: a name carries its writer's pid *and* start time, so a pid
//! reused by an unrelated process never keeps a dead writer's leftovers
//! alive, and a live writer's file is never touched. A dead writer's claim
//! is never deleted unless its job went on (a copy in `running/`, a record,
//! a requeued copy in `new/`): otherwise it goes back into `new/`, so a
//! crash between a claim and its copy loses no submission.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Spool, list, remove_any, rename_noreplace};

/// A name unique to this process, for a file in `.tmp/`:
/// `<host>.<pid>-<start>.<nonce>.<n>.<tag>`, so that a later start on the
/// same host can tell the leftovers of a dead writer from a live one's.
pub(super) fn name(tag: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.{}.{:08x}.{n}.{tag}",
        host_tag(),
        writer_tag(),
        crate::ids::nonce()
    )
}

/// The name in `.tmp/` of a submission taken out of `new/` for job `id`
/// (a valid id: no `/`, and the host tag after it has no dot, so the name
/// reads back from the right).
pub(super) fn claim_name(id: &str) -> String {
    format!("{id}.{}", name("claim"))
}

/// 32 hex digits from the kernel's random source: a name nobody can guess
/// before it exists (for files the daemon makes in `tmp/`, which everyone
/// in the spool's group can write).
pub(super) fn random_hex() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`, which we own.
    let got = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if usize::try_from(got).ok() != Some(b.len()) {
        // Only without getrandom(2) (Linux < 3.17): the same source.
        let read = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
        if read.is_err() {
            // No randomness at all: unique still, only guessable.
            let t = crate::time::unix_millis(crate::time::now());
            b[..8].copy_from_slice(&t.to_le_bytes());
            b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
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

/// The host name, cut down to what is safe in a file name (no dot).
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

/// Who wrote a file in `.tmp/`, as its name says.
#[derive(Debug, PartialEq, Eq)]
struct Writer<'a> {
    /// The job a claim was taken for; `None` for other files.
    claim: Option<&'a str>,
    pid: i32,
    start: u64,
}

/// The process of this host that wrote a file in `.tmp/`, when the name
/// says so.
fn writer(name: &str) -> Option<Writer<'_>> {
    let mut parts = name.rsplitn(6, '.');
    let (tag, _n, _nonce, writer, host) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let claim = match (tag, parts.next()) {
        ("claim", Some(id)) if crate::ids::valid_id(id) => Some(id),
        ("claim", _) => return None,
        (_, None) => None,
        (_, Some(_)) => return None,
    };
    if host != host_tag() {
        return None;
    }
    let (pid, start) = writer.split_once('-')?;
    Some(Writer {
        claim,
        pid: pid.parse().ok()?,
        start: start.parse().ok()?,
    })
}

impl Spool {
    /// Clears what raccoond processes of this host left in `.tmp/` when
    /// they died: half-written copies and records are deleted; a
    /// submission one of them had taken out of `new/` is deleted if its
    /// job went on, else put back into `new/`. Files of live processes and
    /// of other hosts stay.
    pub fn clean_dead_tmp(&self) {
        let dir = self.private_dir();
        let Ok(names) = list(&dir) else {
            return;
        };
        for name in names {
            let Some(name) = name.to_str() else {
                continue;
            };
            let Some(w) = writer(name) else {
                continue;
            };
            if process_start(w.pid) == Some(w.start) {
                continue;
            }
            let path = dir.join(name);
            match w.claim {
                Some(id) => self.settle_claim(&path, id),
                None => {
                    if let Err(e) = remove_any(&path) {
                        crate::log!("recover: {e}");
                    }
                }
            }
        }
    }

    /// Whether `running/<id>.toml` is a copy of the claim at `claim` that
    /// lost its text: not fsynced (see `claim`), a power cut can leave it
    /// empty or short. While its claim is in `.tmp/`, a job's copy holds
    /// the claim's very bytes (it is never rewritten), so any difference
    /// is a loss; a copy someone holds locked is a live job, left alone.
    fn copy_lost_its_text(&self, claim: &Path, id: &str) -> bool {
        let Ok(Some((copy, meta))) = crate::fsio::open_regular(&self.running_job(id)) else {
            return false;
        };
        let Ok(Some((taken, taken_meta))) = crate::fsio::open_regular(claim) else {
            return false;
        };
        // The claim itself can be anything a submitter renamed into new/.
        if taken_meta.nlink() > 1 || meta.nlink() > 1 {
            return false;
        }
        let Ok(copy) = nix::fcntl::Flock::lock(copy, nix::fcntl::FlockArg::LockExclusiveNonblock)
        else {
            return false;
        };
        let mut claimed = Vec::with_capacity(taken_meta.len() as usize);
        if (&taken)
            .take(taken_meta.len() + 1)
            .read_to_end(&mut claimed)
            .is_err()
        {
            return false;
        }
        !super::look::holds_exactly(&copy, meta.len(), &claimed)
    }

    /// A dead daemon's claim for job `id`: gone if the job went on, else
    /// back into `new/` as `<id>.toml` (under a fresh id when that name is
    /// taken by someone else's file).
    fn settle_claim(&self, path: &Path, id: &str) {
        if self.copy_lost_its_text(path, id) {
            crate::log!(
                "{id}: recover: running/{id}.toml lost its text (a power cut before it reached the disk); the job goes back"
            );
            let _ = fs::remove_file(self.running_job(id));
            self.remove_host(id);
        }
        let went_on = self.running_job(id).symlink_metadata().is_ok()
            || self.done_record(id).symlink_metadata().is_ok()
            || Spool::is_own_file(&self.new_path(&format!("{id}.toml")));
        if went_on {
            if let Err(e) = remove_any(path) {
                crate::log!("{id}: recover: {e}");
            }
            return;
        }
        let mut name = format!("{id}.toml");
        for _ in 0..10 {
            let dest = self.new_path(&name);
            match rename_noreplace(path, &dest) {
                Ok(()) => {
                    crate::log!(
                        "{id}: recover: new/{name} put back (a daemon died before it had copied it)"
                    );
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    name = format!("{}.toml", crate::ids::fresh_id());
                }
                Err(e) => {
                    crate::log!("{id}: recover: cannot put {} back: {e}", path.display());
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{Flock, FlockArg};

    #[test]
    fn private_names_say_which_process_of_which_host_wrote_them() {
        let me = std::process::id() as i32;
        let start = process_start(me).unwrap();
        assert!(start > 0);
        let rec = name("rec");
        assert_eq!(
            writer(&rec),
            Some(Writer {
                claim: None,
                pid: me,
                start
            })
        );
        let claim = claim_name("a.b-c");
        assert_eq!(
            writer(&claim),
            Some(Writer {
                claim: Some("a.b-c"),
                pid: me,
                start
            })
        );
        assert_eq!(writer("otherhost.12-34.abcd.1.rec"), None);
        assert_eq!(writer("job.part"), None);
        assert_eq!(writer(&format!("x.{rec}")), None);
        let a = random_hex();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex());
    }

    #[test]
    fn a_dead_daemons_leftovers_go_and_its_claims_go_back_unless_their_job_went_on() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let private = spool.private_dir();
        let host = host_tag();
        // pid 1 never started at tick 1: a dead writer.
        let dead = |tag: &str| format!("{host}.1-1.0000abcd.7.{tag}");
        fs::write(private.join(dead("rec")), "half a record").unwrap();
        fs::write(
            private.join(format!("lost.{}", dead("claim"))),
            "type = \"x\"\n",
        )
        .unwrap();
        fs::write(
            private.join(format!("ran.{}", dead("claim"))),
            "type = \"x\"\n",
        )
        .unwrap();
        fs::write(spool.running_job("ran"), "type = \"x\"\n").unwrap();
        let mine = name("rec");
        fs::write(private.join(&mine), "live").unwrap();
        spool.clean_dead_tmp();
        let left: Vec<String> = spool.names(&private).unwrap();
        assert_eq!(left, vec![mine]);
        assert_eq!(
            fs::read_to_string(spool.new_path("lost.toml")).unwrap(),
            "type = \"x\"\n"
        );
        assert!(!spool.new_path("ran.toml").exists());
        assert!(spool.running_job("ran").exists());
    }

    /// A claim's copy is not fsynced: after a power cut it can be empty or
    /// short while its claim is whole. The job goes back into `new/`; a
    /// copy a live task holds locked is its job going on, left alone.
    #[test]
    fn a_copy_that_lost_its_text_in_a_power_cut_sends_its_claim_back() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let private = spool.private_dir();
        let host = host_tag();
        let dead = |id: &str| format!("{id}.{host}.1-1.0000abcd.7.claim");
        let text = "type = \"x\"\n";
        for (id, copy) in [
            ("empty", ""),
            ("short", "type = "),
            ("other", "type = \"y\"\n"),
        ] {
            fs::write(private.join(dead(id)), text).unwrap();
            fs::write(spool.running_job(id), copy).unwrap();
        }
        fs::write(private.join(dead("held")), text).unwrap();
        fs::write(spool.running_job("held"), "").unwrap();
        let held = Flock::lock(
            File::open(spool.running_job("held")).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        spool.clean_dead_tmp();
        for id in ["empty", "short", "other"] {
            assert_eq!(
                fs::read_to_string(spool.new_path(&format!("{id}.toml"))).unwrap(),
                text,
                "{id}"
            );
            assert!(!spool.running_job(id).exists(), "{id}");
        }
        assert!(spool.running_job("held").exists());
        assert!(!spool.new_path("held.toml").exists());
        assert!(spool.names(&private).unwrap().is_empty());
        drop(held);
    }
}
