//! One process from clone to exec: `clone3(CLONE_VM | CLONE_VFORK |
//! CLONE_INTO_CGROUP)` (or `clone` where the kernel has no `clone3`), then
//! the child's system calls on data the parent prepared.
//!
//! Why `clone3`: a process born in its cgroup is never migrated, and a
//! migration (writing into `cgroup.procs`) waits for the cgroup
//! subsystem's read-copy-update grace period: 0.3 ms typically and
//! several ms at worst, with the daemon's main loop suspended meanwhile.
//!
//! The child joins the job's cgroup, starts its own session, keeps the
//! job lock, takes its stdio, lowers its limits, goes to its folder, takes
//! its groups and user, and only then arms the death signal and checks
//! that the daemon is still its parent: a change of credentials clears
//! `PR_SET_PDEATHSIG` (prctl(2)), so a signal armed earlier would be gone
//! for every task that runs as another user. Then it execs.
//!
//! Never, between clone and exec: allocate, take a lock, or call a libc
//! wrapper that might (glibc's set*id wrappers signal every thread of the
//! parent). A failed step is reported through shared memory (the child
//! runs in the parent's address space until it execs).
//!
//! Architecture Invariant: called only from the daemon's main loop thread,
//! which lives as long as the daemon, because `PR_SET_PDEATHSIG` fires
//! when the *spawning thread* exits.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// Limits applied in the child between clone and exec, prepared before.
#[derive(Clone)]
pub(super) struct Limits {
    /// RLIMIT_AS, unless the job's cgroup enforces `memory.max` instead.
    pub memory: Option<u64>,
    /// RLIMIT_CPU, in seconds.
    pub cpu: Option<u64>,
    /// RLIMIT_NPROC.
    pub processes: Option<u64>,
    pub nice: Option<i32>,
    /// uid, gid and supplementary groups of the type's `user`.
    pub user: Option<(u32, u32, Vec<libc::gid_t>)>,
}

/// The child's steps, in order; a failure names its step.
#[derive(Clone, Copy)]
enum Step {
    Signals = 1,
    Cgroup,
    Session,
    Lock,
    Stdio,
    Limits,
    Nice,
    Folder,
    Groups,
    User,
    DeathSignal,
    Exec,
}

/// What each [`Step`] does, for the message when it fails.
const STEPS: [&str; 13] = [
    "",
    "reset signals",
    "join the job's cgroup",
    "setsid",
    "keep the job lock",
    "redirect stdio",
    "set resource limits",
    "set nice",
    "change folder",
    "set groups",
    "set group or user",
    "set the death signal",
    "exec",
];

/// Everything the child needs, as C strings and pointers prepared in the
/// parent: between clone and exec the child may not allocate.
pub(super) struct Spec {
    program: CString,
    /// Owns the strings `argv` points into.
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// Owns the strings `envp` points into.
    _envp: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    dir: CString,
    limits: Limits,
    /// The locked job file, inherited so that the lock lives as long as
    /// some process of the job does.
    lock_fd: RawFd,
    /// The job cgroup's folder, open, or -1 without a cgroup.
    cgroup: RawFd,
    /// The daemon's pid: the child's parent until the daemon dies.
    parent: libc::pid_t,
    /// The child's errno when a step before exec failed.
    error: AtomicI32,
    /// Which [`Step`] failed, for the message.
    step: AtomicUsize,
}

fn cstring(s: &str, what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Where the child starts and what it starts with.
pub(super) struct Place<'a> {
    pub program: &'a Path,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub dir: &'a Path,
    pub lock_fd: RawFd,
    /// The job cgroup's folder, open (`O_DIRECTORY`).
    pub cgroup: Option<RawFd>,
}

impl Spec {
    pub(super) fn new(place: &Place, limits: Limits) -> io::Result<Spec> {
        let program = CString::new(place.program.as_os_str().as_encoded_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the program path contains a NUL byte",
            )
        })?;
        let argv_c: Vec<CString> = place
            .argv
            .iter()
            .map(|a| cstring(a, "an argument"))
            .collect::<io::Result<_>>()?;
        let envp_c: Vec<CString> = place
            .env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}"), "an environment value"))
            .collect::<io::Result<_>>()?;
        let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());
        let dir = CString::new(place.dir.as_os_str().as_encoded_bytes()).map_err(|_| {
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
            lock_fd: place.lock_fd,
            cgroup: place.cgroup.unwrap_or(-1),
            parent: nix::unistd::getpid().as_raw(),
            error: AtomicI32::new(0),
            step: AtomicUsize::new(0),
        })
    }
}

/// What the child gets: the spec and the three descriptors for 0, 1, 2.
struct ChildArgs<'a> {
    spec: &'a Spec,
    stdio: [RawFd; 3],
    /// The soft limit on open files tasks get back.
    nofile: Option<libc::rlimit>,
    /// The job cgroup's `cgroup.procs`, open for writing, when the child
    /// must join it itself (`clone` without `clone3`); else -1.
    join: RawFd,
    /// Whether the kernel already reset the signal handlers
    /// (`CLONE_CLEAR_SIGHAND`): then only the signals in `ignored` are
    /// left to reset.
    handlers_reset: bool,
    /// The signals the daemon ignores (bit `n - 1` for signal `n`).
    ignored: u64,
}

/// The signals the daemon ignores (SIGPIPE, as every Rust program; the
/// C library's own), bit `n - 1` for signal `n`, read once, at the first
/// start (the daemon sets its dispositions before): `CLONE_CLEAR_SIGHAND`
/// resets handled signals only, and an ignored signal stays ignored across
/// exec.
fn ignored_signals() -> u64 {
    static IGNORED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *IGNORED.get_or_init(|| {
        let mut mask = 0u64;
        for sig in 1..65 {
            // SAFETY: all-zero is a valid sigaction; the kernel writes the
            // current one into it and changes nothing (no new action).
            let ignored = unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    std::ptr::null::<libc::sigaction>(),
                    &mut old as *mut libc::sigaction,
                    8usize,
                ) == 0
                    && old.sa_sigaction == libc::SIG_IGN
            };
            if ignored {
                mask |= 1 << (sig - 1);
            }
        }
        mask
    })
}

/// `struct clone_args` of linux/sched.h, as far as version 2 (5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Cleared for good once the kernel says it has no `clone3` with
/// `CLONE_INTO_CGROUP` (before 5.7): tasks then join their cgroup
/// themselves.
static CLONE3: AtomicBool = AtomicBool::new(true);

/// A started child: its pid, and its pidfd when `clone3` gave one.
pub(super) struct Child {
    pub pid: i32,
    pub pidfd: Option<OwnedFd>,
}

/// Starts the task with `CLONE_VM | CLONE_VFORK`, as posix_spawn does:
/// no page tables are copied and the parent's memory is never
/// write-protected, which matters when hundreds of tasks start a second.
/// The child only makes system calls, on data prepared by the parent,
/// then execs; the calling thread waits until it has.
pub(super) fn spawn(
    spec: &Spec,
    stdio: [RawFd; 3],
    nofile: Option<libc::rlimit>,
) -> io::Result<Child> {
    let mut args = ChildArgs {
        spec,
        stdio,
        nofile,
        join: -1,
        handlers_reset: false,
        ignored: ignored_signals(),
    };
    let mut stack = vec![0u64; 8 * 1024];
    // Opened only when the child must join its cgroup itself.
    let mut procs: Option<OwnedFd> = None;
    // SAFETY: the stack grows down from the end of a buffer that outlives
    // the child's use of it (CLONE_VFORK suspends us until exec or exit);
    // all signals are blocked around clone so that no handler of ours runs
    // on the child's stack; the child resets them before unblocking.
    let started = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut started = None;
        if spec.cgroup >= 0 && CLONE3.load(Ordering::Relaxed) {
            args.handlers_reset = true;
            match clone3_vfork(&mut stack, &args, spec.cgroup) {
                Ok(child) => started = Some(Ok(child)),
                Err(e) => {
                    args.handlers_reset = false;
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
                    ) {
                        CLONE3.store(false, Ordering::Relaxed);
                    }
                    // Any other refusal: the old way says what is wrong.
                }
            }
        }
        let started = match started {
            Some(s) => s,
            None => {
                if spec.cgroup >= 0 {
                    let fd = libc::openat(
                        spec.cgroup,
                        c"cgroup.procs".as_ptr(),
                        libc::O_WRONLY | libc::O_CLOEXEC,
                    );
                    if fd >= 0 {
                        procs = Some(OwnedFd::from_raw_fd(fd));
                        args.join = fd;
                    }
                }
                if spec.cgroup >= 0 && args.join < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    clone_vfork(&mut stack, &args)
                }
            }
        };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        started
    };
    drop(procs);
    let child = started.map_err(|e| io::Error::new(e.kind(), format!("clone: {e}")))?;
    let errno = spec.error.load(Ordering::SeqCst);
    if errno != 0 {
        let step = STEPS
            .get(spec.step.load(Ordering::SeqCst))
            .copied()
            .unwrap_or("");
        let mut status = 0;
        // SAFETY: reaping the child that just failed before exec.
        unsafe { libc::waitpid(child.pid, &mut status, 0) };
        let e = io::Error::from_raw_os_error(errno);
        return Err(io::Error::new(e.kind(), format!("{step}: {e}")));
    }
    Ok(child)
}

/// The top of a child stack: 16-byte aligned, as the ABI wants it at a
/// call.
fn stack_top(stack: &mut [u64]) -> *mut u64 {
    // SAFETY: one past the end of the slice, never dereferenced here.
    let end = unsafe { stack.as_mut_ptr().add(stack.len()) };
    (end as usize & !15) as *mut u64
}

/// `clone(CLONE_VM | CLONE_VFORK)` through glibc's wrapper.
///
/// # Safety
/// Signals blocked; `stack` and `args` outlive the child's use of them.
unsafe fn clone_vfork(stack: &mut [u64], args: &ChildArgs) -> io::Result<Child> {
    // SAFETY: as the caller promises.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack_top(stack) as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            args as *const ChildArgs as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Child { pid, pidfd: None })
}

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP | CLONE_PIDFD |
/// CLONE_CLEAR_SIGHAND)`: the child is born in the cgroup whose folder
/// `cgroup` is, with default signal handlers, and runs [`child_main`] on
/// `stack`. glibc has no wrapper: the child's first instructions are
/// ours.
///
/// # Safety
/// Signals blocked; `stack` and `args` outlive the child's use of them.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_vfork(stack: &mut [u64], args: &ChildArgs, cgroup: RawFd) -> io::Result<Child> {
    let base = stack.as_mut_ptr() as u64;
    let top = stack_top(stack) as u64;
    let mut pidfd: libc::c_int = -1;
    let mut cl = CloneArgs {
        flags: libc::CLONE_VM as u64
            | libc::CLONE_VFORK as u64
            | CLONE_PIDFD
            | CLONE_CLEAR_SIGHAND
            | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: base,
        stack_size: top - base,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    let entry = child_main as extern "C" fn(*mut libc::c_void) -> libc::c_int;
    let ret: i64;
    // SAFETY: the kernel starts the child on `stack` (its top, 16-byte
    // aligned) with the parent's registers but rax = 0: it calls
    // child_main(args) there and never comes back into this function
    // (child_main execs or exits; should it return, the child exits).
    // The parent goes on after the label with rax = the pid or -errno;
    // `syscall` clobbers rcx and r11 only.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &mut cl as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") entry as usize,
            in("r13") args as *const ChildArgs as usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error((-ret) as i32));
    }
    // SAFETY: CLONE_PIDFD put a new descriptor of ours there.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok(Child {
        pid: ret as i32,
        pidfd,
    })
}

/// Elsewhere the child joins its cgroup itself.
///
/// # Safety
/// Nothing to uphold: it always declines.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_vfork(_: &mut [u64], _: &ChildArgs, _: RawFd) -> io::Result<Child> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// The child, between clone and exec. Only raw system calls: glibc's
/// set*id wrappers would signal the parent's threads, and nothing here may
/// allocate or take a lock.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildArgs the parent passed and keeps alive
    // while it is suspended.
    let args = unsafe { &*(arg as *const ChildArgs) };
    let spec = args.spec;
    let fail = |step: Step| -> libc::c_int {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        spec.step.store(step as usize, Ordering::SeqCst);
        spec.error.store(errno.max(1), Ordering::SeqCst);
        // SAFETY: leaving the child without running any destructor.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: system calls on values prepared by the parent.
    unsafe {
        // Handlers belong to the parent: the child starts from defaults.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..65 {
            let left = !args.handlers_reset || args.ignored & (1 << (sig - 1)) != 0;
            if left && sig != libc::SIGKILL && sig != libc::SIGSTOP {
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
            return fail(Step::Signals);
        }
        // Into the job's cgroup before anything of the task runs, so that
        // every process it ever makes is in it ("0": the writer itself),
        // unless it was born there.
        if args.join >= 0 && libc::write(args.join, b"0".as_ptr() as *const libc::c_void, 1) < 0 {
            return fail(Step::Cgroup);
        }
        if libc::setsid() < 0 {
            return fail(Step::Session);
        }
        if libc::fcntl(spec.lock_fd, libc::F_SETFD, 0) < 0 {
            return fail(Step::Lock);
        }
        for (target, fd) in args.stdio.iter().enumerate() {
            if libc::dup2(*fd, target as libc::c_int) < 0 {
                return fail(Step::Stdio);
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
                return fail(Step::Limits);
            }
        }
        if let Some(lim) = &args.nofile
            && libc::setrlimit(libc::RLIMIT_NOFILE, lim) < 0
        {
            return fail(Step::Limits);
        }
        if let Some(n) = l.nice
            && libc::setpriority(libc::PRIO_PROCESS, 0, n) < 0
        {
            return fail(Step::Nice);
        }
        libc::umask(0o022);
        if libc::chdir(spec.dir.as_ptr()) < 0 {
            return fail(Step::Folder);
        }
        if let Some((uid, gid, groups)) = &l.user {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0 {
                return fail(Step::Groups);
            }
            if libc::syscall(libc::SYS_setresgid, *gid, *gid, *gid) < 0
                || libc::syscall(libc::SYS_setresuid, *uid, *uid, *uid) < 0
            {
                return fail(Step::User);
            }
        }
        // After the credentials: changing them clears the death signal.
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) < 0
        {
            return fail(Step::DeathSignal);
        }
        if libc::getppid() != spec.parent {
            // The daemon died before the death signal was armed: nobody
            // would ever stop this task.
            libc::_exit(1);
        }
        libc::execve(
            spec.program.as_ptr(),
            spec.argv.as_ptr(),
            spec.envp.as_ptr(),
        );
        fail(Step::Exec)
    }
}
