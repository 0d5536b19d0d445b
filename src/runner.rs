//! Starting a task and watching it until its output is closed.
//!
//! Takes a claimed job and its type; gives a running child in its own
//! session with a clean environment, its limits applied before exec, its
//! params on standard input, and its output going to `running/<id>.out`
//! and `.err` through the [`Supervisor`], one thread for all tasks. It
//! names and creates no path in the spool itself: the spool makes the
//! task's places ready ([`Spool::create_outputs`]) and the supervisor
//! creates the output files it was handed.
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

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::config::TypeConfig;
use crate::job::{self, Job};
use crate::spool::{OutputFile, Spool};
use crate::values;

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

/// The soft limit on open files the daemon started with. The daemon
/// raises its own (idle HTTP clients each hold a descriptor); tasks get
/// this one back, since some programs misbehave with a large one.
static TASK_NOFILE: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raises the daemon's soft limit on open files to the hard limit,
/// remembering the old one for tasks. Call once, early.
pub fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with valid pointers.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let _ = TASK_NOFILE.set(lim);
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
}

/// The environment's `PATH` for tasks: the daemon's own, or a sane one.
fn task_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
}

/// Starts the task and hands it to the supervisor, which reports its exit
/// once its main process has exited and its output is written.
pub fn start(l: &Launch, supervisor: &Supervisor) -> io::Result<Task> {
    let owner = l.ty.user.as_ref().map(|u| (u.uid, u.gid));
    let outputs = l.spool.create_outputs(l.id, owner)?;
    let stdin = params_stdin(l.job)?;

    let argv = job::argv(l.ty, l.job);
    let path = task_path();
    let mut env: Vec<(String, String)> = vec![("PATH".into(), path.clone())];
    env.extend(l.ty.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let dir = l.ty.dir.clone().unwrap_or_else(|| outputs.files.clone());
    for (k, v) in [
        ("RACCOON_JOB_ID", l.id.to_string()),
        ("RACCOON_JOB_TYPE", l.ty.name.clone()),
        ("RACCOON_JOB_FILE", outputs.job.display().to_string()),
        ("RACCOON_FILES", outputs.files.display().to_string()),
        ("RACCOON_RESULT", outputs.result.display().to_string()),
        ("RACCOON_ATTEMPT", l.attempt.to_string()),
    ] {
        env.push((k.to_string(), v));
    }
    for (name, value) in &l.job.params {
        if job::is_scalar(value) {
            let key = format!(
                "RACCOON_PARAM_{}",
                name.to_ascii_uppercase().replace('-', "_")
            );
            env.push((key, job::scalar_text(value)));
        }
    }
    let program = resolve_program(&argv[0], &path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot start {:?}: no such program on PATH", argv[0]),
        )
    })?;
    let (stdout, stdout_w) = pipe()?;
    let (stderr, stderr_w) = pipe()?;
    let spec = Spec::new(&program, &argv, &env, &dir, Limits::of(l.ty), l.lock_fd)?;
    let pid = spawn(
        &spec,
        stdin.as_raw_fd(),
        stdout_w.as_raw_fd(),
        stderr_w.as_raw_fd(),
    )
    .map_err(|e| io::Error::new(e.kind(), format!("cannot start {:?}: {e}", argv[0])))?;
    drop((stdin, stdout_w, stderr_w));
    let child = Task { pid };
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
        pipes: [stdout, stderr],
        // The output files are created by the supervisor thread, off the
        // main loop: creating inodes is a large part of a short job's cost.
        streams: [outputs.out, outputs.err],
        cap: l.max_output_bytes,
    });
    Ok(child)
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

/// Standard input: the params as one JSON object, in an anonymous memory
/// file, so that a task that never reads it cannot block anyone.
fn params_stdin(job: &Job) -> io::Result<File> {
    let json = serde_json::Value::Object(
        job.params
            .iter()
            .map(|(k, v)| (k.clone(), values::toml_to_json(v)))
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
    Ok(f)
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

/// Limits applied in the child between clone and exec, prepared before.
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
}

/// A started task: its pid, which is also its process group.
#[derive(Debug)]
pub struct Task {
    pid: i32,
}

impl Task {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Reaps the task (it has exited: the supervisor saw its pidfd).
    pub fn wait(&self) -> io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid out pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The program to exec: a path with a slash as it is, else the first
/// executable match on the task's `PATH` (looked up before the spawn, so
/// that the child does nothing but system calls).
fn resolve_program(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A pipe whose ends close on exec: (read end, write end).
fn pipe() -> io::Result<(File, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io::Error::other(format!("pipe2: {e}")))?;
    Ok((File::from(r), w))
}

/// Everything the child needs, as C strings and pointers prepared in the
/// parent: between clone and exec the child may not allocate.
struct Spec {
    program: CString,
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    dir: CString,
    limits: Limits,
    lock_fd: RawFd,
    parent: libc::pid_t,
    /// The child's errno when a step before exec failed (shared memory:
    /// the child runs in the parent's address space until it execs).
    error: std::sync::atomic::AtomicI32,
    /// Which step failed, for the message.
    step: std::sync::atomic::AtomicUsize,
}

const STEPS: [&str; 12] = [
    "",
    "reset signals",
    "setsid",
    "set the death signal",
    "keep the job lock",
    "redirect stdio",
    "set resource limits",
    "set nice",
    "change folder",
    "set groups",
    "set group or user",
    "exec",
];

fn cstring(s: &str, what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

impl Spec {
    fn new(
        program: &Path,
        argv: &[String],
        env: &[(String, String)],
        dir: &Path,
        limits: Limits,
        lock_fd: RawFd,
    ) -> io::Result<Spec> {
        let program = CString::new(program.as_os_str().as_encoded_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the program path contains a NUL byte",
            )
        })?;
        let argv_c: Vec<CString> = argv
            .iter()
            .map(|a| cstring(a, "an argument"))
            .collect::<io::Result<_>>()?;
        let envp_c: Vec<CString> = env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}"), "an environment value"))
            .collect::<io::Result<_>>()?;
        let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());
        let dir = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the folder contains a NUL byte",
            )
        })?;
        Ok(Spec {
            program,
            _argv: argv_c,
            argv,
            _envp: envp_c,
            envp,
            dir,
            limits,
            lock_fd,
            parent: nix::unistd::getpid().as_raw(),
            error: std::sync::atomic::AtomicI32::new(0),
            step: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}

/// What the child gets: the spec and the three descriptors for 0, 1, 2.
struct ChildArgs<'a> {
    spec: &'a Spec,
    stdio: [RawFd; 3],
}

/// Starts the task with `clone(CLONE_VM | CLONE_VFORK)`, as posix_spawn
/// does: no page tables are copied and the parent's memory is never
/// write-protected, which matters when hundreds of tasks start a second.
/// The child only makes system calls, on data prepared by the parent,
/// then execs; the calling thread waits until it has.
fn spawn(spec: &Spec, stdin: RawFd, stdout: RawFd, stderr: RawFd) -> io::Result<i32> {
    let args = ChildArgs {
        spec,
        stdio: [stdin, stdout, stderr],
    };
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the stack grows down from the end of a buffer that outlives
    // the child's use of it (CLONE_VFORK suspends us until exec or exit);
    // all signals are blocked around clone so that no handler of ours runs
    // on the child's stack; the child resets them before unblocking.
    unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as *mut libc::c_void;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        let errno = spec.error.load(std::sync::atomic::Ordering::SeqCst);
        if errno != 0 {
            let step = STEPS
                .get(spec.step.load(std::sync::atomic::Ordering::SeqCst))
                .copied()
                .unwrap_or("");
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            let e = io::Error::from_raw_os_error(errno);
            return Err(io::Error::new(e.kind(), format!("{step}: {e}")));
        }
        Ok(pid)
    }
}

/// The child, between clone and exec. Only raw system calls: glibc's
/// set*id wrappers would signal the parent's threads, and nothing here may
/// allocate or take a lock.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildArgs the parent passed and keeps alive
    // while it is suspended.
    let args = unsafe { &*(arg as *const ChildArgs) };
    let spec = args.spec;
    let fail = |step: usize| -> libc::c_int {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        spec.step.store(step, std::sync::atomic::Ordering::SeqCst);
        spec.error
            .store(errno.max(1), std::sync::atomic::Ordering::SeqCst);
        // SAFETY: leaving the child without running any destructor.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: system calls on values prepared by the parent.
    unsafe {
        // Handlers belong to the parent: the child starts from defaults.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const libc::sigaction,
                    std::ptr::null::<libc::sigaction>(),
                    8usize,
                );
            }
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        if libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const libc::sigset_t,
            std::ptr::null::<libc::sigset_t>(),
            8usize,
        ) < 0
        {
            return fail(1);
        }
        if libc::setsid() < 0 {
            return fail(2);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) < 0
        {
            return fail(3);
        }
        if libc::getppid() != spec.parent {
            // The daemon died before the death signal was armed.
            libc::_exit(1);
        }
        if libc::fcntl(spec.lock_fd, libc::F_SETFD, 0) < 0 {
            return fail(4);
        }
        for (target, fd) in args.stdio.iter().enumerate() {
            if libc::dup2(*fd, target as libc::c_int) < 0 {
                return fail(5);
            }
        }
        let l = &spec.limits;
        let set = |res, v: u64| {
            let lim = libc::rlimit {
                rlim_cur: v,
                rlim_max: v,
            };
            libc::setrlimit(res, &lim)
        };
        for (res, v) in [
            (libc::RLIMIT_AS, l.memory),
            (libc::RLIMIT_CPU, l.cpu),
            (libc::RLIMIT_NPROC, l.processes),
        ] {
            if let Some(v) = v
                && set(res, v) < 0
            {
                return fail(6);
            }
        }
        if let Some(lim) = TASK_NOFILE.get()
            && libc::setrlimit(libc::RLIMIT_NOFILE, lim) < 0
        {
            return fail(6);
        }
        if let Some(n) = l.nice
            && libc::setpriority(libc::PRIO_PROCESS, 0, n) < 0
        {
            return fail(7);
        }
        libc::umask(0o022);
        if libc::chdir(spec.dir.as_ptr()) < 0 {
            return fail(8);
        }
        if let Some((uid, gid, groups)) = &l.user {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0 {
                return fail(9);
            }
            if libc::syscall(libc::SYS_setresgid, *gid, *gid, *gid) < 0
                || libc::syscall(libc::SYS_setresuid, *uid, *uid, *uid) < 0
            {
                return fail(10);
            }
        }
        libc::execve(
            spec.program.as_ptr(),
            spec.argv.as_ptr(),
            spec.envp.as_ptr(),
        );
        fail(11)
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
    streams: [OutputFile; 2],
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

struct Watching {
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
    pub fn start<F>(threads: &crate::threads::Threads, on_exit: F) -> io::Result<Supervisor>
    where
        F: Fn(String, Output) + Send + 'static,
    {
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
    let mut tasks: Vec<Watching> = Vec::new();
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
                    let [out, err] = w.streams;
                    tasks.push(Watching {
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
