//! Starting a task and watching it until its output is closed.
//!
//! Takes a claimed job and its type; gives a running child in its own
//! session with a clean environment, its limits applied before exec, its
//! params on standard input, and its output going to `running/<id>.out`
//! and `.err` through the [`Supervisor`], one thread for all tasks.
//!
//! Architecture Invariant: every child is spawned from the daemon's main
//! loop thread, which lives as long as the daemon, because
//! `PR_SET_PDEATHSIG` fires when the *spawning thread* exits.
//!
//! The supervisor polls every task's two pipes and pidfd. When a task's
//! main process exits it kills what is left of the process group, drains
//! the pipes for a moment, and reports once. It never reaps the child: the
//! main loop does, so that the loop never signals a pid that could have
//! been reused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::config::TypeConfig;
use crate::job::{self, Job};
use crate::spool::{Spool, io_context};

/// How long the pipes may stay open after the main process exits (held by
/// a grandchild that left the process group) before output is cut off.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Everything needed to start one task.
pub struct Launch<'a> {
    pub id: &'a str,
    pub job: &'a Job,
    pub ty: &'a TypeConfig,
    /// This run's number, from 1.
    pub attempt: u32,
    pub spool: &'a Spool,
    /// The locked job file; the child inherits it so that the lock lives
    /// exactly as long as some process of the job does.
    pub lock_fd: RawFd,
    pub max_output_bytes: u64,
}

/// What the supervisor saw of the output when the task ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Whether a stream was cut at `max_output_bytes`.
    pub cut: bool,
}

/// The environment's `PATH` for tasks: the daemon's own, or a sane one.
fn task_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
}

/// Starts the task. `on_exit` is called once, from the supervisor thread,
/// after the main process has exited and its output is written.
pub fn start(l: &Launch, supervisor: &Supervisor) -> io::Result<Child> {
    let spool = l.spool;
    let files = spool.running_files(l.id);
    match std::fs::create_dir(&files) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_context("create folder", &files, e)),
    }
    let result = spool.running_result(l.id);
    if let Some(user) = &l.ty.user {
        // The task may write only its own files folder and result file.
        chown(&files, user.uid, user.gid)?;
        File::create(&result).map_err(|e| io_context("create", &result, e))?;
        chown(&result, user.uid, user.gid)?;
    }
    // The output files are created by the supervisor thread, off the main
    // loop: creating inodes is a large part of a short job's cost.
    let (out, err) = (spool.running_out(l.id), spool.running_err(l.id));
    let stdin = params_stdin(l.job)?;

    let argv = job::argv(l.ty, l.job);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", task_path())
        .envs(&l.ty.env)
        .env("RACCOON_JOB_ID", l.id)
        .env("RACCOON_JOB_TYPE", &l.ty.name)
        .env("RACCOON_JOB_FILE", spool.running_job(l.id))
        .env("RACCOON_FILES", &files)
        .env("RACCOON_RESULT", &result)
        .env("RACCOON_ATTEMPT", l.attempt.to_string())
        .current_dir(l.ty.dir.as_deref().unwrap_or(&files))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in &l.job.params {
        if job::is_scalar(value) {
            cmd.env(
                format!(
                    "RACCOON_PARAM_{}",
                    name.to_ascii_uppercase().replace('-', "_")
                ),
                job::scalar_text(value),
            );
        }
    }
    let limits = Limits::of(l.ty);
    let lock_fd = l.lock_fd;
    let parent = nix::unistd::getpid().as_raw();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions on values prepared before the fork;
    // it allocates nothing.
    unsafe {
        cmd.pre_exec(move || limits.apply_in_child(lock_fd, parent));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {:?}: {e}", argv[0])))?;
    let pid = child.id() as i32;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io::Error::other("child has no pipes"));
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::SIGKILL,
            );
            let _ = child.wait();
            return Err(e);
        }
    };
    supervisor.watch(Watched {
        id: l.id.to_string(),
        pid,
        pidfd,
        pipes: [
            File::from(OwnedFd::from(stdout)),
            File::from(OwnedFd::from(stderr)),
        ],
        paths: [out, err],
        cap: l.max_output_bytes,
    });
    Ok(child)
}

fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| io_context("chown", path, e))
}

/// Opens an output file; when that fails the stream is still drained (so
/// the task never blocks) into nowhere, and the failure is logged.
fn create_output(path: &Path) -> Option<File> {
    match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            crate::log!("cannot create {}: {e}; that output is lost", path.display());
            None
        }
    }
}

/// Standard input: the params as one JSON object, in an anonymous memory
/// file, so that a task that never reads it cannot block anyone.
fn params_stdin(job: &Job) -> io::Result<Stdio> {
    let json = serde_json::Value::Object(
        job.params
            .iter()
            .map(|(k, v)| (k.clone(), job::toml_to_json(v)))
            .collect(),
    );
    let fd =
        nix::sys::memfd::memfd_create(c"raccoon-params", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| io::Error::other(format!("memfd_create: {e}")))?;
    let mut f = File::from(fd);
    let mut text = json.to_string();
    text.push('\n');
    f.write_all(text.as_bytes())?;
    use std::io::Seek;
    f.rewind()?;
    Ok(Stdio::from(f))
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::other(format!(
            "pidfd_open({pid}): {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the kernel just gave us this descriptor; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Limits applied in the child between fork and exec, prepared before.
#[derive(Clone)]
struct Limits {
    memory: Option<u64>,
    cpu: Option<u64>,
    processes: Option<u64>,
    nice: Option<i32>,
    user: Option<(u32, u32, Vec<libc::gid_t>)>,
}

impl Limits {
    fn of(ty: &TypeConfig) -> Limits {
        Limits {
            memory: ty.max_memory,
            cpu: ty.max_cpu.map(|d| d.as_secs().max(1)),
            processes: ty.max_processes,
            nice: ty.nice,
            user: ty.user.as_ref().map(|u| (u.uid, u.gid, u.groups.clone())),
        }
    }

    /// Runs in the child. Order matters: limits are set while still
    /// privileged (an unprivileged process cannot raise them), the user is
    /// dropped last.
    fn apply_in_child(&self, lock_fd: RawFd, parent: i32) -> io::Result<()> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: plain syscalls on values owned by this closure.
        unsafe {
            check(libc::setsid())?;
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ))?;
            if libc::getppid() != parent {
                // The daemon died between fork and prctl.
                libc::_exit(1);
            }
            check(libc::fcntl(lock_fd, libc::F_SETFD, 0))?;
            let set = |res, v: u64| {
                let lim = libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                };
                check(libc::setrlimit(res, &lim))
            };
            if let Some(v) = self.memory {
                set(libc::RLIMIT_AS, v)?;
            }
            if let Some(v) = self.cpu {
                set(libc::RLIMIT_CPU, v)?;
            }
            if let Some(v) = self.processes {
                set(libc::RLIMIT_NPROC, v)?;
            }
            if let Some(n) = self.nice {
                check(libc::setpriority(libc::PRIO_PROCESS, 0, n))?;
            }
            libc::umask(0o022);
            if let Some((uid, gid, groups)) = &self.user {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(*gid))?;
                check(libc::setuid(*uid))?;
            }
        }
        Ok(())
    }
}

/// Copies a stream into its file up to the cap, then notes the cut once
/// and discards the rest (reading on, so that the task never blocks).
struct Sink {
    file: Option<File>,
    written: u64,
    cap: u64,
    cut: bool,
}

impl Sink {
    fn take(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.written) as usize;
        let keep = data.len().min(room);
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

/// A task handed to the supervisor.
pub struct Watched {
    id: String,
    pid: i32,
    pidfd: OwnedFd,
    /// stdout, stderr.
    pipes: [File; 2],
    /// `.out`, `.err`: created by the supervisor.
    paths: [PathBuf; 2],
    cap: u64,
}

/// One long-lived thread that copies every task's output into its files
/// and notices every exit, by polling all pipes and pidfds at once: no
/// thread per task.
pub struct Supervisor {
    tx: crossbeam_channel::Sender<Watched>,
    /// Written to wake the thread when a task is added.
    wake: File,
}

struct Task {
    id: String,
    pid: i32,
    pidfd: OwnedFd,
    pipes: [File; 2],
    open: [bool; 2],
    sinks: [Sink; 2],
    exited_at: Option<Instant>,
}

impl Supervisor {
    /// Starts the thread; `on_exit(id, output)` is called from it once per
    /// task, after its main process exited and its output is written.
    pub fn start<F>(on_exit: F) -> io::Result<Supervisor>
    where
        F: Fn(String, Output) + Send + 'static,
    {
        let (rx_fd, tx_fd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| io::Error::other(format!("pipe2: {e}")))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || supervise(File::from(rx_fd), rx, on_exit))?;
        Ok(Supervisor {
            tx,
            wake: File::from(tx_fd),
        })
    }

    fn watch(&self, w: Watched) {
        if self.tx.send(w).is_ok() {
            // A full pipe already means "wake up": the error is harmless.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

fn supervise<F: Fn(String, Output)>(
    mut wake: File,
    rx: crossbeam_channel::Receiver<Watched>,
    on_exit: F,
) {
    let mut tasks: Vec<Task> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // (task index, which: 0 stdout, 1 stderr, 2 pidfd), parallel to fds.
    let mut which: Vec<(usize, usize)> = Vec::new();
    loop {
        let now = Instant::now();
        let timeout = tasks
            .iter()
            .filter_map(|t| t.exited_at)
            .map(|at| DRAIN_GRACE.saturating_sub(now - at))
            .min()
            .map_or(PollTimeout::NONE, |d| {
                PollTimeout::try_from(d.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX)
            });
        which.clear();
        let mut fds = Vec::with_capacity(1 + tasks.len() * 3);
        fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
        which.push((usize::MAX, 0));
        for (i, t) in tasks.iter().enumerate() {
            for k in 0..2 {
                if t.open[k] {
                    fds.push(PollFd::new(t.pipes[k].as_fd(), PollFlags::POLLIN));
                    which.push((i, k));
                }
            }
            if t.exited_at.is_none() {
                fds.push(PollFd::new(t.pidfd.as_fd(), PollFlags::POLLIN));
                which.push((i, 2));
            }
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                crate::log!("supervisor: poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let ready: Vec<(usize, usize)> = fds
            .iter()
            .zip(&which)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, w)| *w)
            .collect();
        drop(fds);
        for (i, k) in ready {
            if i == usize::MAX {
                let mut drain = [0u8; 256];
                while matches!(wake.read(&mut drain), Ok(n) if n > 0) {}
                continue;
            }
            let t = &mut tasks[i];
            if k == 2 {
                t.exited_at = Some(Instant::now());
                // The main process is gone: what is left of its group
                // (background children) goes with it and lets go of the pipes.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(t.pid),
                    nix::sys::signal::SIGKILL,
                );
                continue;
            }
            match t.pipes[k].read(&mut buf) {
                Ok(0) => t.open[k] = false,
                Ok(n) => t.sinks[k].take(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => t.open[k] = false,
            }
        }
        // New tasks, taken after the poll so that the wake byte is drained.
        loop {
            match rx.try_recv() {
                Ok(w) => {
                    let [out, err] = w.paths;
                    tasks.push(Task {
                        id: w.id,
                        pid: w.pid,
                        pidfd: w.pidfd,
                        pipes: w.pipes,
                        open: [true, true],
                        sinks: [
                            Sink {
                                file: create_output(&out),
                                written: 0,
                                cap: w.cap,
                                cut: false,
                            },
                            Sink {
                                file: create_output(&err),
                                written: 0,
                                cap: w.cap,
                                cut: false,
                            },
                        ],
                        exited_at: None,
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
            let t = &tasks[i];
            let done = t.exited_at.is_some_and(|at| {
                !t.open.iter().any(|o| *o) || now.duration_since(at) >= DRAIN_GRACE
            });
            if done {
                let t = tasks.swap_remove(i);
                let output = Output {
                    stdout_bytes: t.sinks[0].written,
                    stderr_bytes: t.sinks[1].written,
                    cut: t.sinks[0].cut || t.sinks[1].cut,
                };
                drop(t.pipes);
                on_exit(t.id, output);
            } else {
                i += 1;
            }
        }
    }
}
