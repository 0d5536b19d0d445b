//! What a running task writes: its files folder, its result file and its
//! two output files in `running/`, created by the spool for the runner.
//!
//! Owns creating `running/<id>.files/`, `<id>.result`, `<id>.out` and
//! `<id>.err`, and handing the task the one folder and one file it may
//! write (chowned to the type's user). Never creates anything outside
//! `running/`, never removes anything (finish and requeue do), never
//! decides who the task runs as.
//!
//! Inodes are most of a short job's cost, so a job gets only those it
//! uses: the files folder (its working folder), and `.out`/`.err` only when
//! the first byte of that stream arrives (an absent `.out` is empty output,
//! SPEC §1). `.result` is made in advance only for a task that runs as
//! another user than the daemon's, who could not create it in `running/`;
//! a task running as the daemon's user creates it if it has a result.
//!
//! Invariant: with a `user` other than the daemon's, the files folder and
//! the result file are that user's and nothing else in `running/` is: a
//! task can write its own outputs there, never its job file or another
//! job's.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Spool;
use crate::fsio::io_context;

/// A job's places in `running/`, made ready for its task.
#[derive(Debug)]
pub struct Outputs {
    /// `running/<id>.toml`: the task is told where its job file is.
    pub job: PathBuf,
    /// `running/<id>.files/`: where the task leaves files for the record
    /// and the mail; its working folder unless the type names one.
    pub files: PathBuf,
    /// `running/<id>.result`: where the task may write its result.
    pub result: PathBuf,
    /// `running/<id>.out`, not created yet (see [`OutputFile::create`]).
    pub out: OutputFile,
    /// `running/<id>.err`, not created yet.
    pub err: OutputFile,
}

/// An output file the supervisor creates when the first byte of a task's
/// stream arrives: creating inodes is a large part of a short job's cost,
/// so a silent stream gets none, and the one it gets is made off the main
/// loop.
#[derive(Debug)]
pub struct OutputFile(PathBuf);

impl OutputFile {
    /// Creates the file empty (or empties one a previous attempt left),
    /// the daemon's own: `running/` is the daemon's folder, and the task
    /// only ever gets a pipe to it.
    pub fn create(&self) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.0)
            .map_err(|e| io_context("create", &self.0, e))
    }

    /// Removes what an earlier attempt (of a daemon that died) may have
    /// left at this path, for a stream that wrote nothing this time: an
    /// absent file is this attempt's empty output.
    pub fn remove_stale(&self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl Spool {
    /// Creates a claimed job's files folder and, when its task runs as
    /// another user than the daemon's (`owner`: uid, gid), its result
    /// file, both given to that user. The output files are only named here.
    pub fn create_outputs(&self, id: &str, owner: Option<(u32, u32)>) -> io::Result<Outputs> {
        // The daemon's own user needs nothing made or given in advance.
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let owner = owner.filter(|o| *o != me);
        let files = self.running_files(id);
        match fs::create_dir(&files) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_context("create folder", &files, e)),
        }
        let result = self.running_result(id);
        if let Some((uid, gid)) = owner {
            // The task may write only its own files folder and result file.
            chown(&files, uid, gid)?;
            File::create(&result).map_err(|e| io_context("create", &result, e))?;
            chown(&result, uid, gid)?;
        }
        Ok(Outputs {
            job: self.running_job(id),
            files,
            result,
            out: OutputFile(self.running_out(id)),
            err: OutputFile(self.running_err(id)),
        })
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| io_context("chown", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn outputs_are_made_in_running_and_given_to_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        // The daemon's own user: only the folder is made.
        let mine = spool.create_outputs("m", Some(me)).unwrap();
        assert!(mine.files.is_dir() && !mine.result.exists());
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let other = (65534, 65534);
        let o = spool.create_outputs("j", Some(other)).unwrap();
        let running = spool.root().join("running");
        assert_eq!(o.files, running.join("j.files"));
        assert_eq!(o.job, running.join("j.toml"));
        assert!(o.files.is_dir());
        let result = fs::metadata(&o.result).unwrap();
        assert_eq!((result.uid(), result.gid()), other);
        let files = fs::metadata(&o.files).unwrap();
        assert_eq!((files.uid(), files.gid()), other);
        assert!(
            !running.join("j.out").exists(),
            "outputs wait for the supervisor"
        );
        o.out.create().unwrap().write_all(b"old").unwrap();
        o.out.create().unwrap();
        assert_eq!(fs::read(running.join("j.out")).unwrap(), b"");
        // Again (a retry): the folder is kept; without an owner, no result
        // file is made.
        let again = spool.create_outputs("k", None).unwrap();
        assert!(again.files.is_dir() && !again.result.exists());
        assert!(spool.create_outputs("j", None).is_ok());
    }
}
