//! The supervisor: one long-lived thread that copies every task's output
//! into its files, notices every exit, and ends each job's processes.
//!
//! It polls every task's two pipes and pidfd at once (no thread per task).
//! When a task's main process exits it kills what is left of the job: the
//! whole cgroup when the job has one (`cgroup.kill` reaches processes that
//! left the process group: `setsid`, double fork), else the process group.
//! It then drains the pipes for a moment, waits (on `cgroup.events`, with a
//! deadline) until the cgroup is empty, reads what the cgroup measured,
//! removes it, and reports once. A cgroup that will not go is tried again
//! now and then, off the main loop.
//!
//! Never reaps a task: the main loop does, so that the loop never signals
//! a pid that could have been reused. Never makes the main loop wait.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::Output;
use crate::cgroup::{self, JobCgroup, Tree};
use crate::spool::OutputFile;

/// How long the pipes may stay open after the main process exits (held by
/// a grandchild that left the process group, without cgroups) before
/// output is cut off.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// How long a job's killed processes may take to leave its cgroup before
/// the task is reported anyway (and its cgroup removed later).
const CGROUP_GRACE: Duration = Duration::from_secs(2);
/// How often the emptiness of a cgroup is read again when its
/// `cgroup.events` cannot be polled.
const CGROUP_RECHECK: Duration = Duration::from_millis(10);
/// How often a cgroup that would not go is tried again, and for how long.
const LINGER_RETRY: Duration = Duration::from_secs(1);
const LINGER_MAX: Duration = Duration::from_secs(600);

/// Copies a stream into its file up to the cap, then notes the cut once
/// and discards the rest (reading on, so that the task never blocks). The
/// file is created when the first byte arrives: a silent stream costs no
/// inode (an absent output is empty output, SPEC §1).
struct Sink {
    /// Where the stream goes, created at its first byte.
    place: OutputFile,
    /// Open once the first byte came; `None` before, or when creating it
    /// failed (`failed`), the stream then drained into nowhere.
    file: Option<File>,
    /// Creating the file failed once: not tried again for every read.
    failed: bool,
    written: u64,
    cap: u64,
    cut: bool,
}

impl Sink {
    fn new(place: OutputFile, cap: u64) -> Sink {
        Sink {
            place,
            file: None,
            failed: false,
            written: 0,
            cap,
            cut: false,
        }
    }

    fn take(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.written) as usize;
        let keep = data.len().min(room);
        if self.file.is_none() && !self.failed && !data.is_empty() {
            self.file = create_output(&self.place);
            self.failed = self.file.is_none();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if keep > 0 && file.write_all(&data[..keep]).is_ok() {
            self.written += keep as u64;
        }
        if keep < data.len() && !self.cut {
            self.cut = true;
            let _ = write!(
                file,
                "\n[raccoond: output cut at {} bytes (max_output_bytes)]\n",
                self.cap
            );
        }
    }
}

/// Creates an output file; when that fails the stream is still drained
/// (so the task never blocks) into nowhere, and the failure is logged.
fn create_output(file: &OutputFile) -> Option<File> {
    match file.create() {
        Ok(f) => Some(f),
        Err(e) => {
            crate::log!("cannot {e}; that output is lost");
            None
        }
    }
}

/// A task handed to the supervisor.
pub struct Watched {
    pub(super) id: String,
    pub(super) pid: i32,
    pub(super) pidfd: OwnedFd,
    /// stdout, stderr.
    pub(super) pipes: [File; 2],
    /// `.out`, `.err`: created by the supervisor.
    pub(super) streams: [OutputFile; 2],
    pub(super) cap: u64,
    /// The job's cgroup, shared with the main loop's [`super::Task`].
    pub(super) cgroup: Option<Arc<JobCgroup>>,
    /// Whether an earlier attempt may have left outputs in `running/`
    /// (a retry, a recovery): only then is an absent stream's name
    /// cleared at the end (a first attempt's never exist).
    pub(super) retry: bool,
}

/// One long-lived thread that copies every task's output into its files
/// and notices every exit; it also owns the daemon's cgroups.
pub struct Supervisor {
    tx: crossbeam_channel::Sender<Watched>,
    /// Written to wake the thread when a task is added.
    wake: File,
    /// The daemon's cgroups; `None` when jobs run in process groups only.
    cgroups: Option<Arc<Tree>>,
}

/// A task the thread watches.
struct Watching {
    id: String,
    pid: i32,
    pidfd: OwnedFd,
    pipes: [File; 2],
    open: [bool; 2],
    sinks: [Sink; 2],
    exited_at: Option<Instant>,
    cgroup: Option<Arc<JobCgroup>>,
    /// See [`Watched::retry`].
    retry: bool,
    /// `cgroup.events`, open from the main process's exit until the
    /// cgroup is empty.
    events: Option<File>,
    /// Whether the job's processes are all gone (always, without cgroup).
    emptied: bool,
}

impl Watching {
    /// The main process exited: everything else of the job goes too, and
    /// lets go of the pipes.
    fn main_exited(&mut self, now: Instant) {
        self.exited_at = Some(now);
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::SIGKILL,
        );
        let Some(cg) = &self.cgroup else {
            return;
        };
        // Opened before reading, so that no change is missed in between.
        self.events = cg.open_events().ok();
        let populated = || match &self.events {
            Some(f) => cgroup::events_populated(f),
            None => cg.populated(),
        };
        // Killed only when something is left: a killed cgroup is not
        // reused (see `cgroup`), and most jobs leave nothing.
        let mut left = populated();
        if left != Some(false) {
            if let Err(e) = cg.kill() {
                crate::log!("{}: cannot kill its cgroup: {e}", self.id);
            }
            left = populated();
        }
        self.emptied = left != Some(true);
    }

    /// When the thread must look at this task again without a wake-up.
    fn next_look(&self, now: Instant) -> Option<Instant> {
        let at = self.exited_at?;
        let mut next: Option<Instant> = None;
        // Only what is still ahead: a grace that has passed wakes no one.
        let mut consider = |t: Instant| {
            if t > now {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        if self.open.iter().any(|o| *o) {
            consider(at + DRAIN_GRACE);
        }
        if !self.emptied {
            consider(at + CGROUP_GRACE);
            if self.events.is_none() {
                consider(now + CGROUP_RECHECK);
            }
        }
        next
    }

    /// Whether it can be reported: its output is closed (or had its
    /// grace) and its processes are gone (or had theirs).
    fn done(&self, now: Instant) -> bool {
        self.exited_at.is_some_and(|at| {
            let waited = now.duration_since(at);
            (!self.open.iter().any(|o| *o) || waited >= DRAIN_GRACE)
                && (self.emptied || waited >= CGROUP_GRACE)
        })
    }
}

/// A job's cgroup that would not be removed yet.
struct Lingering {
    cgroup: Arc<JobCgroup>,
    since: Instant,
    next: Instant,
}

impl Supervisor {
    /// Sets up the daemon's cgroups (or says once why there are none),
    /// then starts the thread; `on_exit(id, output)` is called from it
    /// once per task, after its main process exited, the rest of its
    /// processes are gone and its output is written.
    pub fn start<F>(threads: &crate::threads::Threads, on_exit: F) -> io::Result<Supervisor>
    where
        F: Fn(String, Output) + Send + 'static,
    {
        let cgroups = match Tree::setup() {
            Ok(tree) => {
                crate::log!("cgroups: {}", tree.describe());
                Some(Arc::new(tree))
            }
            Err(why) => {
                crate::log!(
                    "cgroups: none ({why}); a job's end, timeout and cancel reach its process \
                     group only, not processes that left it"
                );
                None
            }
        };
        let (rx_fd, tx_fd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| io::Error::other(format!("pipe2: {e}")))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        threads.spawn("supervisor", move || {
            supervise(File::from(rx_fd), rx, on_exit)
        })?;
        Ok(Supervisor {
            tx,
            wake: File::from(tx_fd),
            cgroups,
        })
    }

    /// The daemon's cgroups, when jobs get one each.
    pub(super) fn cgroups(&self) -> Option<&Tree> {
        self.cgroups.as_deref()
    }

    /// Kills and removes what dead daemons left in cgroups beside this
    /// one (background processes of their tasks, which the death signal
    /// does not reach) and logs it. Waits a moment at most; call it at
    /// start, before recovering `running/`, so that the jobs those
    /// processes held are free.
    pub fn remove_dead_cgroups(&self) {
        let Some(tree) = &self.cgroups else {
            return;
        };
        let swept = tree.remove_dead();
        if swept.folders > 0 {
            crate::log!(
                "cgroups: removed {} dead daemon folder(s), killing what was left of {} job(s)",
                swept.folders,
                swept.populated_jobs
            );
        }
        for path in swept.busy {
            crate::log!(
                "cgroups: cannot remove {} yet: processes in it do not die",
                path.display()
            );
        }
    }

    pub(super) fn watch(&self, w: Watched) {
        if self.tx.send(w).is_ok() {
            // A full pipe already means "wake up": the error is harmless.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(tree) = &self.cgroups {
            tree.close();
        }
    }
}

/// What a polled descriptor belongs to.
#[derive(Clone, Copy)]
enum Source {
    Wake,
    Pipe(usize, usize),
    Exit(usize),
    CgroupEvents(usize),
}

fn supervise<F: Fn(String, Output)>(
    mut wake: File,
    rx: crossbeam_channel::Receiver<Watched>,
    on_exit: F,
) {
    let mut tasks: Vec<Watching> = Vec::new();
    let mut lingering: Vec<Lingering> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sources: Vec<Source> = Vec::new();
    loop {
        let now = Instant::now();
        let next = tasks
            .iter()
            .filter_map(|t| t.next_look(now))
            .chain(lingering.iter().map(|l| l.next))
            .min();
        let timeout = next.map_or(PollTimeout::NONE, |at| {
            let d = at
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX)
        });
        sources.clear();
        let mut fds = Vec::with_capacity(1 + tasks.len() * 3);
        fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
        sources.push(Source::Wake);
        for (i, t) in tasks.iter().enumerate() {
            for k in 0..2 {
                if t.open[k] {
                    fds.push(PollFd::new(t.pipes[k].as_fd(), PollFlags::POLLIN));
                    sources.push(Source::Pipe(i, k));
                }
            }
            if t.exited_at.is_none() {
                fds.push(PollFd::new(t.pidfd.as_fd(), PollFlags::POLLIN));
                sources.push(Source::Exit(i));
            } else if let (false, Some(events)) = (t.emptied, &t.events) {
                // cgroup files wake pollers with POLLPRI when they change.
                fds.push(PollFd::new(events.as_fd(), PollFlags::POLLPRI));
                sources.push(Source::CgroupEvents(i));
            }
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                crate::log!("supervisor: poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let ready: Vec<Source> = fds
            .iter()
            .zip(&sources)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, s)| *s)
            .collect();
        drop(fds);
        for source in ready {
            match source {
                Source::Wake => {
                    let mut drain = [0u8; 256];
                    while matches!(wake.read(&mut drain), Ok(n) if n > 0) {}
                }
                Source::Exit(i) => tasks[i].main_exited(Instant::now()),
                Source::CgroupEvents(i) => {
                    let t = &mut tasks[i];
                    if let Some(events) = &t.events {
                        t.emptied = cgroup::events_populated(events) != Some(true);
                    }
                }
                Source::Pipe(i, k) => {
                    let t = &mut tasks[i];
                    match t.pipes[k].read(&mut buf) {
                        Ok(0) => t.open[k] = false,
                        Ok(n) => t.sinks[k].take(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => t.open[k] = false,
                    }
                }
            }
        }
        // Without a pollable cgroup.events, emptiness is read again.
        for t in tasks.iter_mut() {
            if let (Some(_), false, None, Some(cg)) = (t.exited_at, t.emptied, &t.events, &t.cgroup)
            {
                t.emptied = cg.populated() != Some(true);
            }
        }
        // New tasks, taken after the poll so that the wake byte is drained.
        loop {
            match rx.try_recv() {
                Ok(w) => {
                    let [out, err] = w.streams;
                    tasks.push(Watching {
                        id: w.id,
                        pid: w.pid,
                        pidfd: w.pidfd,
                        pipes: w.pipes,
                        open: [true, true],
                        sinks: [Sink::new(out, w.cap), Sink::new(err, w.cap)],
                        exited_at: None,
                        cgroup: w.cgroup,
                        retry: w.retry,
                        events: None,
                        emptied: true,
                    })
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    if tasks.is_empty() {
                        return;
                    }
                    break;
                }
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < tasks.len() {
            if !tasks[i].done(now) {
                i += 1;
                continue;
            }
            let t = tasks.swap_remove(i);
            for sink in &t.sinks {
                if t.retry && sink.file.is_none() && !sink.failed {
                    sink.place.remove_stale();
                }
            }
            let mut output = Output {
                stdout_bytes: t.sinks[0].written,
                stderr_bytes: t.sinks[1].written,
                cut: t.sinks[0].cut || t.sinks[1].cut,
                ..Output::default()
            };
            drop(t.pipes);
            drop(t.events);
            if let Some(cg) = &t.cgroup {
                output.measured = cg.stats();
            }
            // The job ends first: removing its emptied cgroup is tidying.
            on_exit(t.id, output);
            if let Some(cg) = t.cgroup
                && cg.retire().is_err()
            {
                lingering.push(Lingering {
                    cgroup: cg,
                    since: now,
                    next: now + LINGER_RETRY,
                });
            }
        }
        lingering.retain_mut(|l| {
            if l.next > now {
                return true;
            }
            match l.cgroup.remove() {
                Ok(()) => false,
                Err(e) if now.duration_since(l.since) >= LINGER_MAX => {
                    crate::log!("cannot {e}; it is left for the next start");
                    false
                }
                Err(_) => {
                    l.next = now + LINGER_RETRY;
                    true
                }
            }
        });
    }
}
