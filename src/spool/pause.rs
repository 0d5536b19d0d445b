//! Pause requests: `pause/<type>` holds new starts of a type,
//! `pause/ALL` of every type; removing the file resumes (SPEC §13).
//!
//! Owns the `pause/` folder's paths: making a request (as `touch` would,
//! never through a symlink), taking one back, and listing what is there.
//! The client, HTTP (`POST /pause`, `POST /resume`) and an operator's
//! `touch` all end up as the same file; the daemon lists the folder when
//! inotify says it changed and at each rescan, and decides what a name
//! means (a type, `ALL`, or nothing it knows).
//!
//! Never decides anything about jobs; never follows a link; never touches
//! a name that is not a valid type name (or `ALL`).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::Spool;
use crate::fsio::io_context;
use crate::ids::valid_id;

pub use crate::ids::PAUSE_ALL;

impl Spool {
    /// `pause/`: watched by the daemon.
    pub fn pause_dir(&self) -> PathBuf {
        self.root().join("pause")
    }

    /// The request file of a type, or of every type; refused for a name
    /// that is neither a type name nor `ALL` (never a path).
    fn pause_path(&self, name: &str) -> io::Result<PathBuf> {
        if !valid_id(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pause: {name:?} is not a type name"),
            ));
        }
        Ok(self.pause_dir().join(name))
    }

    /// Holds new starts of a type (or of every type, for `ALL`): creates
    /// `pause/<name>`, as `touch` would. Returns whether it was not there
    /// already.
    pub fn request_pause(&self, name: &str) -> io::Result<bool> {
        let path = self.pause_path(name)?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(_) => Ok(true),
            // Already there (a file, or something else someone put there:
            // the daemon reads the name, never the entry).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_context("create", &path, e)),
        }
    }

    /// Lets new starts of a type (or of every type) go again: removes
    /// `pause/<name>`. Returns whether it was there.
    pub fn clear_pause(&self, name: &str) -> io::Result<bool> {
        let path = self.pause_path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_context("remove", &path, e)),
        }
    }

    /// The names in `pause/`, dot-files left out, sorted. A missing folder
    /// is an empty one (a spool made before pause/ existed).
    pub fn pause_names(&self) -> io::Result<Vec<String>> {
        let dir = self.pause_dir();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut names = self.names(&dir)?;
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_requests_are_made_listed_and_taken_back_by_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        assert!(spool.pause_names().unwrap().is_empty());
        assert!(spool.request_pause("build").unwrap());
        assert!(!spool.request_pause("build").unwrap(), "already paused");
        assert!(spool.request_pause(PAUSE_ALL).unwrap());
        assert_eq!(spool.pause_names().unwrap(), ["ALL", "build"]);
        assert!(spool.clear_pause("build").unwrap());
        assert!(!spool.clear_pause("build").unwrap());
        for bad in ["../new/x", "", ".hidden", "a/b"] {
            assert!(spool.request_pause(bad).is_err(), "{bad:?}");
            assert!(spool.clear_pause(bad).is_err(), "{bad:?}");
        }
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, spool.pause_dir().join("linked")).unwrap();
        assert!(!spool.request_pause("linked").unwrap());
        assert!(!target.exists(), "the link was followed");
    }
}
