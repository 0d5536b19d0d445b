//! Following a job's output as its task writes it (SPEC §13, Follow):
//! `raccoon output --follow` and `GET /jobs/<id>/output?follow=1` read a
//! [`Follower`], which gives what the task wrote, waits for more, and ends
//! when the job ends.
//!
//! How it knows: a task's output is `running/<id>.out` (or `.err`) while
//! it runs, moved to `done/` with the job's record when it ends. The
//! follower keeps the running file's descriptor open and reads it to its
//! end, then waits; the descriptor still reads the file after the move,
//! so nothing written before the end is missed. The job has ended when
//! its record is in `done/`: the follower then reads what is left, and,
//! when what it held was not the job's final output (none was there yet,
//! or an earlier attempt's, removed when the job was retried), reads
//! `done/`'s. A queued job is waited for until its output appears in
//! `running/`; a retried job's next attempt is followed on from the
//! previous one's.
//!
//! Waiting: inotify on `running/` and `done/` (names coming and going)
//! and on the open output (writes), through the follower's own descriptor
//! ([`crate::inotify`]); a look at the job every [`RECHECK`] whatever inotify
//! says (it does not see what another host writes on a shared file
//! system). Without inotify (no instance left, no watch), a look every
//! [`POLL`]. A follower may also be given a connection to watch (a client
//! that goes away ends the wait), a flag that ends it (a server that
//! stops), and a deadline.
//!
//! Reads only, through [`spool::query`](crate::spool::query): every file
//! opened without following a symlink, never a path of its own making.
//! Never writes, moves or deletes anything; never blocks other than in
//! its wait, which is bounded by [`RECHECK`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::inotify::{FOLDER_EVENTS, Inotify};
use crate::record::Record;
use crate::spool::Spool;
use crate::spool::query::{Stage, Stream, Trail};

/// How often a follower looks at its job when nothing woke it: inotify
/// misses what other hosts write on a shared spool.
pub const RECHECK: Duration = Duration::from_secs(1);
/// How often it looks without inotify.
pub const POLL: Duration = Duration::from_millis(100);

/// A job's output as it is written: [`Read`] gives the bytes the task
/// wrote, waits when there are none yet, and gives `Ok(0)` once the job
/// has ended and everything it wrote was read (or the deadline passed, or
/// the job vanished without a record). An `Err` of kind
/// `ConnectionAborted` says the watched peer went away or the stop flag
/// was raised.
#[derive(Debug)]
pub struct Follower {
    /// Where the job is looked for and its output opened (through the
    /// query only).
    spool: Spool,
    /// The job, a valid id.
    id: String,
    /// Which of its outputs.
    stream: Stream,
    /// The output being read: the task's file in `running/` (its
    /// descriptor still reads it once moved to `done/`), or `done/`'s.
    file: Option<File>,
    /// How far the follow is.
    phase: Phase,
    /// Whether the job is to be looked at before the next wait: at the
    /// start, after an event about its files, and every [`RECHECK`].
    look: bool,
    /// inotify, when it could be set up; `None`: a look every [`POLL`].
    watch: Option<Watch>,
    /// The job's record, once it has ended.
    record: Option<Record>,
    /// When to give up (an HTTP stream's cap); `None`: never.
    deadline: Option<Instant>,
    /// A connection whose hang-up ends the wait (an HTTP client).
    peer: Option<OwnedFd>,
    /// A flag whose raising ends the wait (the server stops).
    stop: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The job has not ended: read, then wait for more.
    Live,
    /// The record is there: read what is left of the file held, then the
    /// final output if that was not it.
    Ending,
    /// Nothing more will come.
    Over,
}

/// A follower's inotify: watches on the two folders and the open output.
#[derive(Debug)]
struct Watch {
    ino: Inotify,
    /// The watches of `running/` and `done/`.
    folders: [i32; 2],
    /// The watch of the output held, when it could be set.
    file: Option<i32>,
    /// The folders and the names in them that matter.
    trail: Trail,
}

impl Watch {
    fn new(trail: Trail) -> io::Result<Watch> {
        let ino = Inotify::new()?;
        let folders = [
            ino.watch_folder(&trail.running, FOLDER_EVENTS)?,
            ino.watch_folder(&trail.done, FOLDER_EVENTS)?,
        ];
        Ok(Watch {
            ino,
            folders,
            file: None,
            trail,
        })
    }
}

impl Follower {
    /// Starts following `stream` of job `id`; `None` when no job has that
    /// id (or it is not a valid one). The folders are watched before the
    /// first look, so that nothing after it goes unseen.
    pub fn start(spool: &Spool, id: &str, stream: Stream) -> io::Result<Option<Follower>> {
        // No job file is read: only where the job is matters here.
        let q = spool.query(0);
        let Some(trail) = q.trail(id, stream) else {
            return Ok(None);
        };
        // Without inotify (no instance left), a look every POLL instead.
        let watch = Watch::new(trail).ok();
        if q.find(id)?.is_none() {
            return Ok(None);
        }
        Ok(Some(Follower {
            spool: spool.clone(),
            id: id.to_string(),
            stream,
            file: None,
            phase: Phase::Live,
            look: true,
            watch,
            record: None,
            deadline: None,
            peer: None,
            stop: None,
        }))
    }

    /// Ends the follow at `deadline` (`Ok(0)`), job ended or not.
    pub fn until(mut self, deadline: Instant) -> Follower {
        self.deadline = Some(deadline);
        self
    }

    /// Ends the wait with an error as soon as `peer` hangs up.
    pub fn watch_peer(&mut self, peer: OwnedFd) {
        self.peer = Some(peer);
    }

    /// Ends the wait with an error once `flag` is raised (seen within
    /// [`RECHECK`]).
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// The job's record, once the follow has read to the end of a job
    /// that ended; `None` before, or when it ended otherwise (deadline,
    /// job gone).
    pub fn record(&self) -> Option<&Record> {
        self.record.as_ref()
    }

    /// Whether inotify tells this follower of changes (else it polls).
    pub fn is_notified(&self) -> bool {
        self.watch.is_some()
    }

    /// Looks at the job: ended (its record), or an output to read that is
    /// not the one held. `true` when something changed.
    fn look_at_job(&mut self) -> io::Result<bool> {
        let q = self.spool.query(0);
        if let Some(rec) = q.record(&self.id)? {
            self.record = Some(rec);
            self.phase = Phase::Ending;
            return Ok(true);
        }
        // The output held is the current one while it has a name: it is
        // removed (not moved) only when the attempt is put back in new/.
        let live = self
            .file
            .as_ref()
            .is_some_and(|f| f.metadata().is_ok_and(|m| m.nlink() > 0));
        if live {
            return Ok(false);
        }
        if let Some((file, meta)) = q.output_in(Stage::Running, &self.id, self.stream)?
            && !self.holds(&meta)
        {
            self.take(file);
            return Ok(true);
        }
        if self.file.is_none() && q.find(&self.id)?.is_none() {
            // Gone without a record (deleted by hand): nothing will come.
            self.phase = Phase::Over;
            return Ok(true);
        }
        Ok(false)
    }

    /// After the end: the final output, in `done/`, when the file held was
    /// not it.
    fn take_final(&mut self) -> io::Result<()> {
        let q = self.spool.query(0);
        if let Some((file, meta)) = q.output_in(Stage::Done, &self.id, self.stream)?
            && !self.holds(&meta)
        {
            self.take(file);
        }
        Ok(())
    }

    /// Whether the file held is the one `meta` describes.
    fn holds(&self, meta: &std::fs::Metadata) -> bool {
        self.file.as_ref().is_some_and(|f| {
            f.metadata()
                .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
        })
    }

    /// Reads `file` from now on, watched for writes while the job runs.
    fn take(&mut self, file: File) {
        if let Some(w) = &mut self.watch {
            if let Some(wd) = w.file.take() {
                w.ino.unwatch(wd);
            }
            if self.phase == Phase::Live {
                w.file = w.ino.watch_open_file(&file).ok();
            }
        }
        self.file = Some(file);
    }

    /// Waits for a change, at most [`RECHECK`] (or [`POLL`] when a change
    /// could go unseen), and notes whether the job is to be looked at.
    fn wait(&mut self) -> io::Result<()> {
        if self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            return Err(aborted("the server stops"));
        }
        let notified = self
            .watch
            .as_ref()
            .is_some_and(|w| self.file.is_none() || w.file.is_some());
        let mut timeout = if notified { RECHECK } else { POLL };
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.phase = Phase::Over;
                return Ok(());
            }
            timeout = timeout.min(left);
        }
        // poll(2) itself: nix hides POLLRDHUP in what a poll returns.
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2);
        let at = |fd: std::os::fd::BorrowedFd, events: libc::c_short| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        if let Some(w) = &self.watch {
            fds.push(at(w.ino.fd(), libc::POLLIN));
        }
        if let Some(p) = &self.peer {
            fds.push(at(p.as_fd(), libc::POLLRDHUP));
        }
        // Rounded up, so that a wait for the deadline does not spin.
        let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a live array of `fds.len()` pollfds whose
        // descriptors are held by `self` for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(io::Error::new(e.kind(), format!("poll: {e}")));
        }
        if n == 0 {
            self.look = true;
            return Ok(());
        }
        let hangup = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
        let (mut ino_ready, mut peer_gone) = (false, false);
        let mut polled = fds.iter();
        if self.watch.is_some() {
            ino_ready = polled.next().is_some_and(|p| p.revents != 0);
        }
        if self.peer.is_some() {
            peer_gone = polled.next().is_some_and(|p| p.revents & hangup != 0);
        }
        if peer_gone {
            return Err(aborted("the client went away"));
        }
        if ino_ready && let Some(w) = &mut self.watch {
            for e in w.ino.drain()? {
                let about_the_job = w.folders.contains(&e.wd)
                    && (e.name == w.trail.job.as_bytes() || e.name == w.trail.output.as_bytes());
                // A write to the file held needs no look: reading shows it.
                if e.overflowed() || about_the_job {
                    self.look = true;
                }
            }
        }
        Ok(())
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(file) = &mut self.file {
                let n = read_some(file, buf)?;
                if n > 0 {
                    return Ok(n);
                }
                rewind_if_emptied(file)?;
            }
            match self.phase {
                Phase::Over => return Ok(0),
                Phase::Ending => {
                    self.phase = Phase::Over;
                    self.take_final()?;
                    continue;
                }
                Phase::Live => {}
            }
            if self.look {
                self.look = false;
                if self.look_at_job()? {
                    continue;
                }
            }
            self.wait()?;
        }
    }
}

fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A file emptied under the reader (the output of an earlier attempt
/// made again in place) is read again from its start.
fn rewind_if_emptied(file: &mut File) -> io::Result<()> {
    let at = file.stream_position()?;
    if file.metadata()?.len() < at {
        file.seek(SeekFrom::Start(0))?;
    }
    Ok(())
}

fn aborted(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::path::Path;
    use std::sync::mpsc;

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        (dir, spool)
    }

    const RECORD: &str = "id = \"j\"\ntype = \"t\"\nstatus = \"succeeded\"\n";

    /// Reads a follower on a thread of its own, handing over each read.
    fn reader(mut f: Follower) -> (mpsc::Receiver<Vec<u8>>, std::thread::JoinHandle<Follower>) {
        let (tx, rx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                let n = f.read(&mut buf).unwrap();
                let _ = tx.send(buf[..n].to_vec());
                if n == 0 {
                    return f;
                }
            }
        });
        (rx, h)
    }

    fn next(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    /// What the commit thread does at a job's end: the output into
    /// `done/`, then the record.
    fn finish(root: &Path, id: &str, record: &str) {
        let out = root.join(format!("running/{id}.out"));
        if out.exists() {
            fs::rename(&out, root.join(format!("done/{id}.out"))).unwrap();
        }
        fs::write(root.join(format!("tmp/{id}")), record).unwrap();
        fs::rename(
            root.join(format!("tmp/{id}")),
            root.join(format!("done/{id}.toml")),
        )
        .unwrap();
        let _ = fs::remove_file(root.join(format!("running/{id}.toml")));
    }

    #[test]
    fn a_queued_job_is_followed_from_its_start_to_its_record() {
        let (_d, spool) = spool();
        let root = spool.root().to_path_buf();
        assert!(Follower::start(&spool, "j", Stream::Out).unwrap().is_none());
        assert!(
            Follower::start(&spool, "../x", Stream::Out)
                .unwrap()
                .is_none()
        );
        fs::write(root.join("new/j.toml"), "type = \"t\"\n").unwrap();
        let f = Follower::start(&spool, "j", Stream::Out).unwrap().unwrap();
        assert!(f.is_notified());
        let (rx, h) = reader(f);
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "nothing before it starts"
        );
        // Claimed, then its output made and written line by line.
        fs::rename(root.join("new/j.toml"), root.join("running/j.toml")).unwrap();
        let mut out = File::create(root.join("running/j.out")).unwrap();
        out.write_all(b"one\n").unwrap();
        assert_eq!(next(&rx), b"one\n");
        out.write_all(b"two\n").unwrap();
        assert_eq!(next(&rx), b"two\n");
        // Written after its last read, then moved with the record.
        out.write_all(b"three\n").unwrap();
        finish(&root, "j", RECORD);
        let mut rest = Vec::new();
        loop {
            let b = next(&rx);
            if b.is_empty() {
                break;
            }
            rest.extend(b);
        }
        assert_eq!(rest, b"three\n");
        let f = h.join().unwrap();
        assert_eq!(f.record().unwrap().id, "j");
    }

    #[test]
    fn a_finished_job_gives_its_output_and_ends() {
        let (_d, spool) = spool();
        let root = spool.root().to_path_buf();
        fs::write(root.join("done/j.out"), "all of it\n").unwrap();
        fs::write(root.join("done/j.toml"), RECORD).unwrap();
        let mut f = Follower::start(&spool, "j", Stream::Out).unwrap().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "all of it\n");
        assert!(f.record().is_some());
        // No output at all (stderr here): empty, and over.
        let mut f = Follower::start(&spool, "j", Stream::Err).unwrap().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "");
    }

    #[test]
    fn a_retried_job_is_followed_into_its_next_attempt() {
        let (_d, spool) = spool();
        let root = spool.root().to_path_buf();
        fs::write(root.join("running/j.toml"), "type = \"t\"\n").unwrap();
        fs::write(root.join("running/j.out"), "first try\n").unwrap();
        let f = Follower::start(&spool, "j", Stream::Out).unwrap().unwrap();
        let (rx, h) = reader(f);
        assert_eq!(next(&rx), b"first try\n");
        // Put back in new/ (the output removed), then claimed again.
        fs::write(root.join("new/j.toml"), "type = \"t\"\nattempts = 1\n").unwrap();
        fs::remove_file(root.join("running/j.out")).unwrap();
        fs::remove_file(root.join("running/j.toml")).unwrap();
        fs::rename(root.join("new/j.toml"), root.join("running/j.toml")).unwrap();
        fs::write(root.join("running/j.out"), "second try\n").unwrap();
        assert_eq!(next(&rx), b"second try\n");
        finish(&root, "j", RECORD);
        assert_eq!(next(&rx), b"");
        h.join().unwrap();
    }

    #[test]
    fn a_deadline_a_stop_and_a_symlink_end_or_skip_as_they_should() {
        let (d, spool) = spool();
        let root = spool.root().to_path_buf();
        fs::write(root.join("running/j.toml"), "type = \"t\"\n").unwrap();
        // A symlink where the output should be is never read.
        let secret = d.path().join("secret");
        fs::write(&secret, "secret\n").unwrap();
        std::os::unix::fs::symlink(&secret, root.join("running/j.out")).unwrap();
        let mut f = Follower::start(&spool, "j", Stream::Out)
            .unwrap()
            .unwrap()
            .until(Instant::now() + Duration::from_millis(300));
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "", "nothing read through the link, and ended");
        assert!(f.record().is_none());

        let mut f = Follower::start(&spool, "j", Stream::Out).unwrap().unwrap();
        let flag = Arc::new(AtomicBool::new(true));
        f.stop_on(flag);
        let e = f.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[test]
    fn a_peer_that_hangs_up_ends_the_wait() {
        let (_d, spool) = spool();
        let root = spool.root().to_path_buf();
        fs::write(root.join("running/j.toml"), "type = \"t\"\n").unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut f = Follower::start(&spool, "j", Stream::Out).unwrap().unwrap();
        f.watch_peer(OwnedFd::from(a));
        let (rx, h) = {
            let (tx, rx) = mpsc::channel();
            let h = std::thread::spawn(move || {
                let _ = tx.send(f.read(&mut [0u8; 8]).map_err(|e| e.kind()));
            });
            (rx, h)
        };
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(b);
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got, Err(io::ErrorKind::ConnectionAborted));
        h.join().unwrap();
    }
}
