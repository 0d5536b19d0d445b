//! Starting a task, and what it used once it ended.
//!
//! Takes a claimed job and its type; gives a running child in its own
//! session (and, when the daemon has cgroups, in a cgroup of its own) with
//! a clean environment, its limits applied before exec, its params on
//! standard input, and its output going to `running/<id>.out` and `.err`
//! through the [`Supervisor`], one thread for all tasks. It names and
//! creates no path in the spool itself: the spool makes the task's places
//! ready ([`Spool::create_outputs`]) and the supervisor creates the output
//! files it was handed.
//!
//! `spawn` is clone to exec; `supervise` is the supervisor thread (output,
//! exits, the end of a job's processes); `crate::cgroup` owns the cgroup
//! files. The main loop reaps each task ([`Task::reap`], `wait4(2)`), which
//! completes the [`Output`] with the task's [`Usage`].
//!
//! Architecture Invariant: every child is spawned from the daemon's main
//! loop thread, which lives as long as the daemon, because
//! `PR_SET_PDEATHSIG` fires when the *spawning thread* exits; the death
//! signal is armed after the task's credentials change, which would clear
//! it.

mod spawn;
mod supervise;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;

pub use supervise::Supervisor;

use crate::cgroup::{JobCgroup, Stats};
use crate::config::TypeConfig;
use crate::job::{self, Job};
use crate::record::Usage;
use crate::spool::Spool;
use crate::values;
use spawn::{Limits, Place, Spec};
use supervise::Watched;

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
    /// More variables for the task (`RACCOON_RESOURCE_<NAME>`).
    pub env: &'a [(String, String)],
}

/// What the supervisor saw when the task ended, completed with its usage
/// when the main loop reaps it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Whether a stream was cut at `max_output_bytes`.
    pub cut: bool,
    /// What the task used; `None` until [`Task::reap`].
    pub usage: Option<Usage>,
    /// What the job's cgroup measured (nothing without cgroups), for
    /// [`Task::reap`] to combine with `wait4`'s figures.
    measured: Stats,
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
/// once its main process has exited, the rest of its processes are gone
/// and its output is written.
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
    env.extend(l.env.iter().cloned());
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
    let cgroup =
        supervisor
            .cgroups()
            .and_then(|tree| match tree.create_job(l.id, l.ty.max_memory) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    crate::log!("{}: cannot {e}; it runs in its process group only", l.id);
                    None
                }
            });
    let mut limits = Limits::of(l.ty);
    if cgroup.as_ref().is_some_and(|c| c.limits_memory()) {
        // memory.max counts what is resident, not address space, which
        // RLIMIT_AS would also count (and some runtimes reserve plenty of).
        limits.memory = None;
    }
    let place = Place {
        program: &program,
        argv: &argv,
        env: &env,
        dir: &dir,
        lock_fd: l.lock_fd,
        cgroup: None,
    };
    let started = launch(place, limits, stdin, cgroup.as_ref());
    let (pid, pidfd, pipes) = match started {
        Ok(s) => s,
        Err(e) => {
            if let Some(c) = &cgroup {
                let _ = c.remove();
            }
            return Err(io::Error::new(
                e.kind(),
                format!("cannot start {:?}: {e}", argv[0]),
            ));
        }
    };
    supervisor.watch(Watched {
        id: l.id.to_string(),
        pid,
        pidfd,
        pipes,
        // The output files are created by the supervisor thread, off the
        // main loop: creating inodes is a large part of a short job's cost.
        streams: [outputs.out, outputs.err],
        cap: l.max_output_bytes,
        cgroup: cgroup.clone(),
        retry: l.attempt > 1,
    });
    Ok(Task { pid, cgroup })
}

/// Spawns the child (into the job's cgroup when there is one) and opens
/// its pidfd: the pid, the pidfd, and the read ends of stdout and stderr.
fn launch(
    mut place: Place,
    limits: Limits,
    stdin: File,
    cgroup: Option<&Arc<JobCgroup>>,
) -> io::Result<(i32, OwnedFd, [File; 2])> {
    place.cgroup = cgroup.map(|c| c.folder().as_raw_fd());
    let (stdout, stdout_w) = pipe()?;
    let (stderr, stderr_w) = pipe()?;
    let spec = Spec::new(&place, limits)?;
    let stdio = [
        stdin.as_raw_fd(),
        stdout_w.as_raw_fd(),
        stderr_w.as_raw_fd(),
    ];
    let child = spawn::spawn(&spec, stdio, TASK_NOFILE.get().copied())?;
    drop((stdin, stdout_w, stderr_w));
    let pid = child.pid;
    let pidfd = match child.pidfd {
        Some(fd) => Ok(fd),
        None => pidfd_open(pid),
    };
    match pidfd {
        Ok(fd) => Ok((pid, fd, [stdout, stderr])),
        Err(e) => {
            let task = Task {
                pid,
                cgroup: cgroup.cloned(),
            };
            task.kill();
            let _ = task.reap(&mut Output::default());
            Err(e)
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

/// A started task: its pid, which is also its process group, and its
/// cgroup when it has one.
#[derive(Debug)]
pub struct Task {
    pid: i32,
    /// The job's cgroup, shared with the supervisor (which removes it
    /// once the job's processes are gone).
    cgroup: Option<Arc<JobCgroup>>,
}

impl Task {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// SIGKILL to the task's process group and, when the job has a
    /// cgroup, to every process in it (detached ones too). For the end of
    /// `kill_grace` after a timeout, a cancel or a shutdown.
    pub fn kill(&self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::SIGKILL,
        );
        if let Some(c) = &self.cgroup {
            let _ = c.kill();
        }
    }

    /// Reaps the task (it has exited: the supervisor saw its pidfd) with
    /// `wait4(2)`, whose resource usage is this child's (and its reaped
    /// descendants'), and completes `output.usage` with it.
    pub fn reap(&self, output: &mut Output) -> io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let mut status = 0;
        loop {
            // SAFETY: all-zero is a valid rusage.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child with valid out pointers.
            let r = unsafe { libc::wait4(self.pid, &mut status, 0, &mut ru) };
            if r == self.pid {
                let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                let cpu = seconds(ru.ru_utime) + seconds(ru.ru_stime);
                output.usage = Some(usage_of(&output.measured, cpu, ru.ru_maxrss));
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The record's usage: CPU time from the cgroup when it measured it (it
/// counts processes the task never waited for), else from `wait4`; the
/// largest resident set from `wait4` (`ru_maxrss`, in KiB), the only
/// source of it; memory peak and OOM kills from the cgroup alone.
fn usage_of(measured: &Stats, rusage_cpu_seconds: f64, max_rss_kib: libc::c_long) -> Usage {
    Usage {
        cpu_seconds: measured
            .cpu_usec
            .map_or(rusage_cpu_seconds, |us| us as f64 / 1e6),
        max_rss_bytes: u64::try_from(max_rss_kib).unwrap_or(0) * 1024,
        memory_peak_bytes: measured.memory_peak,
        oom_killed: measured.oom_kills.map(|n| n > 0),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_takes_cpu_from_the_cgroup_and_the_rss_from_wait4() {
        let none = Stats::default();
        let cgroup = Stats {
            cpu_usec: Some(612_345),
            memory_peak: None,
            oom_kills: None,
        };
        let memory = Stats {
            cpu_usec: Some(2_000_000),
            memory_peak: Some(41_943_040),
            oom_kills: Some(1),
        };
        let table = [
            (none, 0.5, 1024, (0.5, 1 << 20, None, None)),
            (cgroup, 0.25, 34_816, (0.612_345, 35_651_584, None, None)),
            (memory, 1.0, 0, (2.0, 0, Some(41_943_040), Some(true))),
            (
                Stats {
                    oom_kills: Some(0),
                    ..memory
                },
                1.0,
                -1,
                (2.0, 0, Some(41_943_040), Some(false)),
            ),
        ];
        for (measured, cpu, rss, (want_cpu, want_rss, peak, oom)) in table {
            let u = usage_of(&measured, cpu, rss);
            assert!(
                (u.cpu_seconds - want_cpu).abs() < 1e-9,
                "{measured:?}: {u:?}"
            );
            assert_eq!(u.max_rss_bytes, want_rss, "{measured:?}");
            assert_eq!(u.memory_peak_bytes, peak, "{measured:?}");
            assert_eq!(u.oom_killed, oom, "{measured:?}");
        }
    }

    #[test]
    fn programs_are_found_on_the_path_before_the_spawn() {
        assert_eq!(resolve_program("/x/y", ""), Some(PathBuf::from("/x/y")));
        assert_eq!(
            resolve_program("sh", "/nonexistent:/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(resolve_program("no-such-program-here", "/bin"), None);
    }
}
