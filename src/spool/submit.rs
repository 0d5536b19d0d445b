//! The submitters' side of the spool: `tmp/`, `new/` and `cancel/`, as the
//! client and the HTTP API write them, and the 36-hour rule for `tmp/`.
//!
//! Owns [`Spool::submit`] (a job through `tmp/` into `new/`, as every
//! writer must), [`Spool::request_cancel`], [`Spool::clear_cancel`] and
//! [`Spool::clean_tmp`]. Never reads a submitter's file and never writes
//! into one: `tmp/` is shared by everyone in the spool's group, so a name
//! there is created fresh (`O_CREAT | O_EXCL | O_NOFOLLOW`), random and
//! unguessable, and a name someone already took is simply another try.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use super::{Spool, private, query, rename_noreplace};
use crate::fsio::io_context;
use crate::ids::{fresh_id, valid_id};

/// How many random names `submit` tries in `tmp/` before it gives up (each
/// is 128 random bits: only a name planted on purpose ever collides, and
/// nobody can plant the next one).
const NAME_TRIES: usize = 16;

impl Spool {
    /// Writes a job into `new/<id>.toml` through `tmp/`, as every writer
    /// must. With `id = None` (or an id already taken) a fresh id is used.
    /// Returns the id once the file is in `new/` (and durable, with fsync).
    pub fn submit(&self, id: Option<&str>, bytes: &[u8]) -> io::Result<String> {
        let tmp = self.write_submission(bytes)?;
        let mut want = id.map(str::to_string);
        for _ in 0..100 {
            let id = want.take().unwrap_or_else(fresh_id);
            if self.done_record(&id).exists() || self.running_job(&id).exists() {
                continue;
            }
            let dest = self.new_path(&format!("{id}.toml"));
            match rename_noreplace(&tmp, &dest) {
                Ok(()) => {
                    self.sync_dir(&self.new_dir())?;
                    return Ok(id);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(io_context("rename into new/", &dest, e));
                }
            }
        }
        let _ = fs::remove_file(&tmp);
        Err(io::Error::other(
            "could not find a free job id after 100 tries",
        ))
    }

    /// Writes a submission to a fresh file in `tmp/` under a random name,
    /// fsynced when configured. Never opens a name that exists: whatever
    /// someone put there (a file, a symlink) is left alone.
    fn write_submission(&self, bytes: &[u8]) -> io::Result<PathBuf> {
        let mut last = None;
        for _ in 0..NAME_TRIES {
            let path = self
                .tmp_dir()
                .join(format!("{}.submit", private::random_hex()));
            let mut f = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last = Some(io_context("create", &path, e));
                    continue;
                }
                Err(e) => return Err(io_context("create", &path, e)),
            };
            let written = f
                .write_all(bytes)
                .and_then(|()| if self.fsync { f.sync_all() } else { Ok(()) });
            if let Err(e) = written {
                let _ = fs::remove_file(&path);
                return Err(io_context("write", &path, e));
            }
            return Ok(path);
        }
        Err(last.unwrap_or_else(|| io::Error::other("tmp/: no free name")))
    }

    /// Asks the daemon to cancel a job: creates `cancel/<id>`, as `touch`
    /// would (a request already there is left as it is), never through a
    /// symlink someone put there.
    pub fn request_cancel(&self, id: &str) -> io::Result<()> {
        if !valid_id(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cancel: invalid job id {id:?}"),
            ));
        }
        let path = self.cancel_path(id);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map(drop)
            .map_err(|e| io_context("create", &path, e))
    }

    /// Removes a cancel request once it has been acted on, or when it
    /// names no job. `name` is whatever appeared in `cancel/` (not always
    /// a valid id), but must be one visible path component. A request
    /// already gone is not an error.
    pub fn clear_cancel(&self, name: &str) -> io::Result<()> {
        if !query::valid_file_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cancel: {name:?} is not a name in cancel/"),
            ));
        }
        let path = self.cancel_path(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_context("remove", &path, e)),
            _ => Ok(()),
        }
    }

    /// Deletes files in `tmp/` older than `age` (the maildir rule: 36 h).
    /// Returns the modification time of the oldest file kept.
    pub fn clean_tmp(&self, now: SystemTime, age: std::time::Duration) -> Option<SystemTime> {
        let dir = self.tmp_dir();
        let mut oldest: Option<SystemTime> = None;
        let Ok(rd) = fs::read_dir(&dir) else {
            return None;
        };
        for entry in rd.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let Ok(mtime) = meta.modified() else {
                continue;
            };
            if now.duration_since(mtime).is_ok_and(|d| d > age) {
                let p = entry.path();
                let r = if meta.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                match r {
                    Ok(()) => crate::log!("tmp: removed {} (older than 36h)", p.display()),
                    Err(e) => crate::log!("tmp: cannot remove {}: {e}", p.display()),
                }
            } else {
                oldest = Some(oldest.map_or(mtime, |o| o.min(mtime)));
            }
        }
        oldest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_requests_are_made_and_cleared_by_name_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let cancel = spool.root().join("cancel");
        spool.request_cancel("job-1").unwrap();
        spool.request_cancel("job-1").unwrap();
        assert!(cancel.join("job-1").is_file());
        spool.clear_cancel("job-1").unwrap();
        assert!(!cancel.join("job-1").exists());
        spool.clear_cancel("job-1").unwrap();
        // Junk that is not an id is still cleared; paths are not.
        fs::write(cancel.join("not an id"), "").unwrap();
        spool.clear_cancel("not an id").unwrap();
        assert!(!cancel.join("not an id").exists());
        fs::write(spool.root().join("keep"), "").unwrap();
        for bad in ["../keep", ".hidden", "", ".."] {
            assert!(spool.clear_cancel(bad).is_err(), "{bad:?}");
        }
        assert!(spool.root().join("keep").exists());
        assert!(spool.request_cancel("../keep").is_err());
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, cancel.join("linked")).unwrap();
        assert!(spool.request_cancel("linked").is_err());
        assert!(!target.exists(), "the link was followed");
    }

    #[test]
    fn submissions_go_through_fresh_random_names_in_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let a = spool.write_submission(b"a").unwrap();
        let b = spool.write_submission(b"b").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(spool.tmp_dir().as_path()));
        let id = spool.submit(Some("x"), b"type = \"t\"\n").unwrap();
        assert_eq!(id, "x");
        assert_eq!(
            fs::read_to_string(spool.new_path("x.toml")).unwrap(),
            "type = \"t\"\n"
        );
        // The id is taken in new/: a fresh one, and x is left as it was.
        let other = spool.submit(Some("x"), b"other").unwrap();
        assert_ne!(other, "x");
        assert_eq!(
            fs::read_to_string(spool.new_path("x.toml")).unwrap(),
            "type = \"t\"\n"
        );
    }
}
