//! Per-job cgroups (cgroup v2): where the hierarchy is mounted, the
//! daemon's folder in it, one cgroup per job, and what a dead daemon left.
//!
//! Takes the daemon's own cgroup (the `0::` line of `/proc/self/cgroup`)
//! and the cgroup v2 mount (`/proc/self/mountinfo`: never assumed to be
//! `/sys/fs/cgroup`, which is a tmpfs of v1 controllers on hybrid hosts);
//! gives job cgroups that a task joins before exec, that are killed whole
//! (`cgroup.kill`), measured (`cpu.stat`, `memory.peak`, `memory.events`)
//! and removed. Never touches cgroup v1, never a cgroup outside the one
//! the daemon started in, never a live daemon's folder, and never makes
//! the caller wait long (the one bounded wait is [`Tree::remove_dead`], at
//! start).
//!
//! Layout, under the cgroup the daemon started in (`<own>`):
//!
//! ```text
//! <own>/raccoond.<pid>.<start>/daemon        the daemon itself
//! <own>/raccoond.<pid>.<start>/slot-<n>      a job's, reused once empty
//! <own>/raccoond.<pid>.<start>/job-<id>      a job's, with the memory controller
//! ```
//!
//! Why slots: making and removing a cgroup costs about 70 µs of the
//! kernel's time (plus deferred work), a large part of a short job. An
//! emptied cgroup is as good as a new one for the next job: it is killed
//! whole and measured as a difference of `cpu.stat`. With the memory
//! controller, `memory.peak` cannot be taken as a difference, so each job
//! gets a cgroup of its own making, named after it. A cgroup is reused
//! only once it holds no process and was never killed (`cgroup.kill`: on
//! this kernel a task later born into a killed cgroup with
//! `CLONE_INTO_CGROUP` is killed at birth, as the kernel compares the kill
//! count of the new cgroup with the parent's); a [`JobCgroup`] handed back
//! is retired first, so a late kill through it never reaches the next
//! job.
//!
//! The daemon moves itself into the `daemon` leaf because of cgroup v2's
//! "no internal processes" rule: a cgroup that hands a controller (memory)
//! down to its children may hold no process itself. Under systemd with
//! `Delegate=yes`, `<own>` is the service's cgroup, which then holds no
//! process either and can enable the memory controller for the jobs.
//!
//! Invariant: a folder `raccoond.<pid>.<start>` belongs to a live daemon
//! exactly when process `<pid>` exists and started at `<start>` (clock
//! ticks after boot, from `/proc/<pid>/stat`): a reused pid has another
//! start time. Several daemons may share `<own>` (several spools on one
//! host, the test suite); each removes only dead daemons' folders.
//!
//! The parsing is pure and tested by table; the rest is thin IO whose
//! errors name the path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fsio::io_context;

/// At most this many emptied cgroups wait for a job: more than the
/// daemon ever runs at once is waste.
const MAX_SPARES: usize = 256;

/// How long [`Tree::remove_dead`] waits for a dead daemon's killed
/// processes to leave their cgroups before it gives up on removing them.
const DEAD_GRACE: Duration = Duration::from_secs(2);

/// What a job's cgroup says it used, read once its processes are gone.
/// Each value is `None` when the kernel does not offer it here (no memory
/// controller in the v2 hierarchy, an old kernel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `usage_usec` of `cpu.stat`: user plus system time of every process
    /// that ran in the cgroup, detached ones included.
    pub cpu_usec: Option<u64>,
    /// `memory.peak`.
    pub memory_peak: Option<u64>,
    /// `oom_kill` of `memory.events`.
    pub oom_kills: Option<u64>,
}

/// The daemon's cgroups: its own folder and the jobs' cgroups in it.
#[derive(Debug)]
pub struct Tree {
    /// The cgroup the daemon started in: dead daemons' folders are looked
    /// for here, and the daemon moves back into it when it ends.
    own: PathBuf,
    /// This daemon's folder, `<own>/raccoond.<pid>.<start>`.
    base: PathBuf,
    /// Whether the daemon moved itself into `<base>/daemon` (else it
    /// stayed in `<own>`, and job cgroups still kill and measure, but get
    /// no controller).
    moved: bool,
    /// Whether job cgroups have the memory controller: `memory.max`,
    /// `memory.peak` and `memory.events` exist in them.
    memory: bool,
    /// Emptied cgroups ready for the next job (never with the memory
    /// controller); shared with the job cgroups, which go back here.
    spares: Arc<Mutex<Vec<Spare>>>,
    /// The number of the next `slot-<n>` made.
    next_slot: AtomicU64,
}

/// An emptied cgroup waiting for its next job.
#[derive(Debug)]
struct Spare {
    path: PathBuf,
    /// Its folder, open (what a task is born in).
    folder: File,
    /// `usage_usec` of its `cpu.stat` when it was emptied: the base the
    /// next job's CPU time is counted from.
    cpu_used: u64,
}

/// One job's cgroup.
pub struct JobCgroup {
    /// `<base>/slot-<n>`, or `<base>/job-<id>` (with a suffix when an
    /// earlier run's cgroup of the same job is still being removed).
    path: PathBuf,
    /// The folder, open: the task is born in it.
    folder: File,
    /// `usage_usec` of `cpu.stat` when the job got it (what the jobs
    /// before it in a reused cgroup used).
    cpu_base: u64,
    /// `usage_usec` as [`JobCgroup::stats`] last read it.
    cpu_seen: AtomicU64,
    /// Where it goes once empty, for the next job; `None`: removed.
    spares: Option<Arc<Mutex<Vec<Spare>>>>,
    /// Set once it is handed back: it then kills nothing (the next job
    /// may be in it).
    retired: AtomicBool,
    /// Set once `cgroup.kill` was written: such a cgroup is never reused,
    /// because kernels that compare kill sequence numbers across
    /// `CLONE_INTO_CGROUP` (6.x) would kill every task born into it later.
    killed: AtomicBool,
    /// Whether `memory.max` holds the type's `max_memory`, which then
    /// replaces `RLIMIT_AS`.
    limits_memory: bool,
    /// Whether it has the memory controller: without it, `memory.peak`
    /// and `memory.events` are not looked for (two failed opens a job).
    memory: bool,
}

/// What [`Tree::remove_dead`] did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Dead daemons' folders found.
    pub folders: usize,
    /// Their job cgroups that still held processes (now killed).
    pub populated_jobs: usize,
    /// Cgroups that would not go (a process that does not die, such as
    /// one stuck in the kernel): they are tried again at the next start.
    pub busy: Vec<PathBuf>,
}

impl Tree {
    /// Finds the cgroup v2 hierarchy and the daemon's cgroup in it, makes
    /// this daemon's folder, and moves the daemon into its `daemon` leaf.
    /// The error says, in words, why jobs will run without cgroups.
    pub fn setup() -> Result<Tree, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mounts = v2_mounts(&mountinfo);
        if mounts.is_empty() {
            return Err("no cgroup v2 file system is mounted".into());
        }
        let cgroup = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let own_path =
            own_cgroup(&cgroup).ok_or("/proc/self/cgroup has no cgroup v2 line (\"0::\")")?;
        let own = locate(&mounts, own_path)
            .ok_or_else(|| format!("the daemon's cgroup {own_path} is under no cgroup v2 mount"))?;
        let stat = fs::read_to_string("/proc/self/stat")
            .map_err(|e| format!("cannot read /proc/self/stat: {e}"))?;
        let start = start_time(&stat).ok_or("cannot read the start time in /proc/self/stat")?;
        let base = own.join(daemon_folder(std::process::id() as i32, start));
        fs::create_dir(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        let leaf = base.join("daemon");
        let moved =
            fs::create_dir(&leaf).is_ok() && write_value(&leaf, "cgroup.procs", "0").is_ok();
        if !moved {
            let _ = fs::remove_dir(&leaf);
        }
        let mut tree = Tree {
            own,
            base,
            moved,
            memory: false,
            spares: Arc::default(),
            next_slot: AtomicU64::new(1),
        };
        tree.memory = tree.enable_memory();
        Ok(tree)
    }

    /// Hands the memory controller down to the jobs' cgroups when the
    /// hierarchy has it: `<own>` first (possible once the daemon left it,
    /// or when it is the root), then this daemon's folder.
    fn enable_memory(&self) -> bool {
        let has = |dir: &Path, file: &str| {
            fs::read_to_string(dir.join(file))
                .is_ok_and(|t| t.split_whitespace().any(|c| c == "memory"))
        };
        if !has(&self.own, "cgroup.controllers") {
            return false;
        }
        if !has(&self.own, "cgroup.subtree_control") {
            // Refused (EBUSY) while `<own>` holds other processes: then
            // jobs get no memory controller, and RLIMIT_AS stays.
            let _ = write_value(&self.own, "cgroup.subtree_control", "+memory");
        }
        has(&self.base, "cgroup.controllers")
            && write_value(&self.base, "cgroup.subtree_control", "+memory").is_ok()
            && has(&self.base, "cgroup.subtree_control")
    }

    /// One line for the log at start.
    pub fn describe(&self) -> String {
        format!(
            "each job runs in a cgroup of its own under {}{}{}",
            self.base.display(),
            if self.moved {
                ""
            } else {
                " (the daemon could not move into its own leaf)"
            },
            if self.memory {
                ", with the memory controller (max_memory is memory.max)"
            } else {
                ", without the memory controller (max_memory is RLIMIT_AS)"
            }
        )
    }

    /// A cgroup for a job: an emptied one when there is one, else a new
    /// one; with the memory controller always a new one, `job-<id>`, with
    /// `memory.max` set to `max_memory`.
    pub fn create_job(&self, id: &str, max_memory: Option<u64>) -> io::Result<JobCgroup> {
        if !self.memory {
            let spare = self.spares.lock().ok().and_then(|mut s| s.pop());
            let (path, folder, cpu_base) = match spare {
                Some(s) => (s.path, s.folder, s.cpu_used),
                None => {
                    let n = self.next_slot.fetch_add(1, Ordering::Relaxed);
                    let path = self.base.join(format!("slot-{n}"));
                    fs::create_dir(&path).map_err(|e| io_context("create cgroup", &path, e))?;
                    let folder = open_folder(&path)?;
                    (path, folder, 0)
                }
            };
            return Ok(JobCgroup {
                path,
                folder,
                cpu_base,
                cpu_seen: AtomicU64::new(cpu_base),
                spares: Some(self.spares.clone()),
                retired: AtomicBool::new(false),
                killed: AtomicBool::new(false),
                limits_memory: false,
                memory: false,
            });
        }
        let mut n = 1;
        let path = loop {
            let path = self.base.join(job_folder(id, n));
            match fs::create_dir(&path) {
                Ok(()) => break path,
                // An earlier run's cgroup is still being removed.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(io_context("create cgroup", &path, e)),
            }
        };
        let folder = match open_folder(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir(&path);
                return Err(e);
            }
        };
        let mut job = JobCgroup {
            path,
            folder,
            cpu_base: 0,
            cpu_seen: AtomicU64::new(0),
            spares: None,
            retired: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            limits_memory: false,
            memory: true,
        };
        if let Some(max) = max_memory {
            if let Err(e) = write_value(&job.path, "memory.max", &max.to_string()) {
                let _ = fs::remove_dir(&job.path);
                return Err(e);
            }
            // Swap would let the job grow past max_memory unseen; hosts
            // without swap accounting have no such file, and lose nothing.
            let _ = write_value(&job.path, "memory.swap.max", "0");
            job.limits_memory = true;
        }
        Ok(job)
    }

    /// Kills and removes what dead daemons left beside this one: their
    /// folders' processes (detached children of tasks, which outlive the
    /// death signal) and cgroups. Waits at most a moment for the killed
    /// processes to go; call it at start, before jobs are recovered.
    pub fn remove_dead(&self) -> Swept {
        let mut swept = Swept::default();
        let Ok(entries) = fs::read_dir(&self.own) else {
            return swept;
        };
        let mut dead = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some((pid, start)) = name.to_str().and_then(parse_daemon_folder) else {
                continue;
            };
            let path = e.path();
            if path == self.base || daemon_alive(pid, start) {
                continue;
            }
            swept.folders += 1;
            swept.populated_jobs += subfolders(&path)
                .iter()
                .filter(|j| j.file_name().is_some_and(|n| n != "daemon"))
                .filter(|j| populated(j) == Some(true))
                .count();
            // cgroup.kill kills every process in the subtree at once.
            let _ = kill_all(&path);
            dead.push(path);
        }
        let until = Instant::now() + DEAD_GRACE;
        for path in dead {
            while populated(&path) == Some(true) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if remove_tree(&path).is_err() {
                swept.busy.push(path);
            }
        }
        swept
    }

    /// At the daemon's end: removes the jobs' cgroups that are empty, moves
    /// the daemon back into the cgroup it started in and removes its
    /// folder. Best effort: what stays is a dead daemon's folder for the
    /// next start.
    pub fn close(&self) {
        for job in subfolders(&self.base) {
            if job.file_name().is_some_and(|n| n != "daemon") {
                let _ = remove_tree(&job);
            }
        }
        if self.moved && write_value(&self.own, "cgroup.procs", "0").is_err() {
            return;
        }
        let _ = remove_tree(&self.base);
    }
}

impl JobCgroup {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `memory.max` enforces the type's `max_memory`.
    pub fn limits_memory(&self) -> bool {
        self.limits_memory
    }

    /// The cgroup's folder, open: the task is born in it
    /// (`CLONE_INTO_CGROUP`), or joins it through its `cgroup.procs`
    /// between clone and exec, before it runs anything.
    pub fn folder(&self) -> &File {
        &self.folder
    }

    /// SIGKILL to every process in the cgroup, detached ones included;
    /// nothing once it was handed back.
    pub fn kill(&self) -> io::Result<()> {
        if self.retired.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.killed.store(true, Ordering::SeqCst);
        kill_all(&self.path)
    }

    /// Whether processes are still in the cgroup; `None` when it cannot
    /// be read (removed).
    pub fn populated(&self) -> Option<bool> {
        populated(&self.path)
    }

    /// `cgroup.events`, whose reader `poll(2)` wakes with `POLLPRI` when
    /// `populated` changes; read it with [`events_populated`], through
    /// this descriptor, which is what quiets the wake-up.
    pub fn open_events(&self) -> io::Result<File> {
        let path = self.path.join("cgroup.events");
        File::open(&path).map_err(|e| io_context("open", &path, e))
    }

    /// What the cgroup's processes used, as far as the kernel says.
    pub fn stats(&self) -> Stats {
        let read = |file: &str| fs::read_to_string(self.path.join(file)).ok();
        let used = read("cpu.stat").and_then(|t| flat_value(&t, "usage_usec"));
        if let Some(u) = used {
            self.cpu_seen.store(u, Ordering::Relaxed);
        }
        Stats {
            cpu_usec: used.map(|u| u.saturating_sub(self.cpu_base)),
            memory_peak: self
                .memory
                .then(|| read("memory.peak"))
                .flatten()
                .and_then(|t| t.trim().parse().ok()),
            oom_kills: self
                .memory
                .then(|| read("memory.events"))
                .flatten()
                .and_then(|t| flat_value(&t, "oom_kill")),
        }
    }

    /// Hands the cgroup back once its job is over: kept for the next job
    /// when it was never killed (then it was empty when the main process
    /// exited, and nothing can have joined since), else removed. Fails
    /// with EBUSY while a process is still in it.
    pub fn retire(&self) -> io::Result<()> {
        self.retired.store(true, Ordering::SeqCst);
        if let Some(spares) = &self.spares
            && !self.killed.load(Ordering::SeqCst)
            && let Ok(mut spares) = spares.lock()
            && spares.len() < MAX_SPARES
            && let Ok(folder) = self.folder.try_clone()
        {
            spares.push(Spare {
                path: self.path.clone(),
                folder,
                cpu_used: self.cpu_seen.load(Ordering::Relaxed),
            });
            return Ok(());
        }
        self.remove()
    }

    /// Removes the cgroup (and any a task made inside it); fails with
    /// EBUSY while a process is still in it.
    pub fn remove(&self) -> io::Result<()> {
        self.retired.store(true, Ordering::SeqCst);
        remove_tree(&self.path).map_err(|e| io_context("remove cgroup", &self.path, e))
    }
}

impl std::fmt::Debug for JobCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCgroup")
            .field("path", &self.path)
            .finish()
    }
}

/// A cgroup's folder, open for `CLONE_INTO_CGROUP`.
fn open_folder(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| io_context("open", path, e))
}

/// Writes one value into a cgroup file with one `write(2)`, as cgroup
/// files want; never creates the file.
fn write_value(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io_context("write", &path, e))
}

/// SIGKILL to every process under `dir`: `cgroup.kill`, or on kernels
/// without it (before 5.14) each pid in `cgroup.procs`, a few rounds
/// since a process may fork meanwhile.
fn kill_all(dir: &Path) -> io::Result<()> {
    match write_value(dir, "cgroup.kill", "1") {
        Err(e) if e.kind() == io::ErrorKind::NotFound && dir.join("cgroup.procs").exists() => {
            for _ in 0..5 {
                let pids = procs_below(dir);
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::SIGKILL,
                    );
                }
            }
            Ok(())
        }
        other => other,
    }
}

/// The pids in `dir`'s cgroup and every cgroup below it.
fn procs_below(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for sub in subfolders(dir) {
        pids.extend(procs_below(&sub));
    }
    pids
}

/// `populated` of an open `cgroup.events`, read from its start.
pub fn events_populated(events: &File) -> Option<bool> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 256];
    let n = events.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    flat_value(text, "populated").map(|n| n != 0)
}

fn populated(dir: &Path) -> Option<bool> {
    let text = fs::read_to_string(dir.join("cgroup.events")).ok()?;
    flat_value(&text, "populated").map(|n| n != 0)
}

/// The child cgroups of a cgroup.
fn subfolders(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Removes a cgroup and the cgroups below it, deepest first (a cgroup's
/// files go with it; only empty cgroups can be removed).
fn remove_tree(dir: &Path) -> io::Result<()> {
    for sub in subfolders(dir) {
        remove_tree(&sub)?;
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether the daemon that made a folder is alive: same pid, same start.
fn daemon_alive(pid: i32, start: u64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| start_time(&s))
        == Some(start)
}

/// A daemon's folder: `raccoond.<pid>.<start>`.
fn daemon_folder(pid: i32, start: u64) -> String {
    format!("raccoond.{pid}.{start}")
}

/// The pid and start time a daemon's folder name holds.
fn parse_daemon_folder(name: &str) -> Option<(i32, u64)> {
    let (pid, start) = name.strip_prefix("raccoond.")?.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(start)).then(|| Some((pid.parse().ok()?, start.parse().ok()?)))?
}

/// A job's cgroup: `job-<id>`, then `job-<id>.2`, … (job ids are
/// `[A-Za-z0-9._-]`, at most 100 characters: always a valid name).
fn job_folder(id: &str, n: u32) -> String {
    if n <= 1 {
        format!("job-{id}")
    } else {
        format!("job-{id}.{n}")
    }
}

/// The cgroup v2 mounts in `/proc/self/mountinfo`: (the mounted folder of
/// the hierarchy, where it is mounted).
fn v2_mounts(mountinfo: &str) -> Vec<(String, PathBuf)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut f = left.split_whitespace();
            let root = unescape(f.nth(3)?);
            let point = unescape(f.next()?);
            Some((root, PathBuf::from(point)))
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The daemon's cgroup v2 path, from `/proc/self/cgroup`'s `0::` line.
fn own_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| p.starts_with('/'))
}

/// The folder of cgroup `path` under the first mount that shows it (a
/// mount of a sub-folder of the hierarchy shows only what is below it).
fn locate(mounts: &[(String, PathBuf)], path: &str) -> Option<PathBuf> {
    mounts.iter().find_map(|(root, point)| {
        let rest = if root == "/" {
            path
        } else {
            path.strip_prefix(root.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))?
        };
        Some(point.join(rest.trim_start_matches('/')))
    })
}

/// `key value` files (`cpu.stat`, `memory.events`, `cgroup.events`): the
/// value of `key`.
fn flat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// A process's start time (clock ticks after boot), field 22 of
/// `/proc/<pid>/stat`; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_mount_is_found_in_mountinfo_wherever_it_is() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let pure =
            "25 21 0:22 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let escaped = "50 1 0:40 /sub /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        let v1_only = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let table: [(&str, Vec<(&str, &str)>); 4] = [
            (hybrid, vec![("/", "/sys/fs/cgroup/unified")]),
            (pure, vec![("/", "/sys/fs/cgroup")]),
            (escaped, vec![("/sub", "/mnt/my cgroups")]),
            (v1_only, vec![]),
        ];
        for (text, want) in table {
            let want: Vec<(String, PathBuf)> = want
                .into_iter()
                .map(|(r, p)| (r.to_string(), PathBuf::from(p)))
                .collect();
            assert_eq!(v2_mounts(text), want, "{text}");
        }
    }

    #[test]
    fn the_daemons_cgroup_is_the_zero_line_of_proc_self_cgroup() {
        let table = [
            ("0::/\n", Some("/")),
            (
                "0::/system.slice/raccoond.service\n",
                Some("/system.slice/raccoond.service"),
            ),
            (
                "4:memory:/x\n1:cpu:/\n0::/user.slice\n",
                Some("/user.slice"),
            ),
            ("4:memory:/x\n1:name=systemd:/\n", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(own_cgroup(text), want, "{text:?}");
        }
    }

    /// (the mounted folder of the hierarchy, where it is mounted).
    type Mounts = [(String, PathBuf)];

    #[test]
    fn a_cgroup_is_located_under_the_mount_that_shows_it() {
        let root = vec![("/".to_string(), PathBuf::from("/sys/fs/cgroup/unified"))];
        let sub = vec![("/a".to_string(), PathBuf::from("/mnt/c"))];
        let table: [(&Mounts, &str, Option<&str>); 6] = [
            (&root, "/", Some("/sys/fs/cgroup/unified")),
            (
                &root,
                "/system.slice/r.service",
                Some("/sys/fs/cgroup/unified/system.slice/r.service"),
            ),
            (&sub, "/a", Some("/mnt/c")),
            (&sub, "/a/b", Some("/mnt/c/b")),
            (&sub, "/ab", None),
            (&sub, "/", None),
        ];
        for (mounts, path, want) in table {
            assert_eq!(locate(mounts, path), want.map(PathBuf::from), "{path}");
        }
    }

    #[test]
    fn flat_keyed_files_give_their_values() {
        let cpu = "usage_usec 612345\nuser_usec 500000\nsystem_usec 112345\nnr_periods 0\n";
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        let table = [
            (cpu, "usage_usec", Some(612_345)),
            (cpu, "system_usec", Some(112_345)),
            (cpu, "usage", None),
            (events, "oom_kill", Some(1)),
            (events, "oom", Some(1)),
            ("populated 0\nfrozen 0\n", "populated", Some(0)),
            ("populated 1\n", "populated", Some(1)),
            ("populated x\n", "populated", None),
            ("", "usage_usec", None),
        ];
        for (text, key, want) in table {
            assert_eq!(flat_value(text, key), want, "{key} in {text:?}");
        }
    }

    #[test]
    fn the_start_time_is_counted_after_the_command_name() {
        let plain =
            "1234 (raccoond) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 7 0 987654 1000 100";
        let odd = "77 (a) b (c) S 1 77 77 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 42 1000 100";
        let table = [
            (plain, Some(987_654)),
            (odd, Some(42)),
            ("1234 (x) S 1", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(start_time(text), want, "{text}");
        }
    }

    #[test]
    fn daemon_folders_name_their_daemon_and_nothing_else_matches() {
        assert_eq!(daemon_folder(4242, 987_654), "raccoond.4242.987654");
        let table = [
            ("raccoond.4242.987654", Some((4242, 987_654))),
            ("raccoond.4242", None),
            ("raccoond..1", None),
            ("raccoond.42.x", None),
            ("raccoond.42.1.2", None),
            ("daemon", None),
            ("job-a", None),
            ("system.slice", None),
        ];
        for (name, want) in table {
            assert_eq!(parse_daemon_folder(name), want, "{name}");
        }
        assert_eq!(job_folder("report-42", 1), "job-report-42");
        assert_eq!(job_folder("report-42", 2), "job-report-42.2");
    }

    #[test]
    fn this_process_is_alive_by_its_own_start_time() {
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        let start = start_time(&stat).unwrap();
        let pid = std::process::id() as i32;
        assert!(daemon_alive(pid, start));
        assert!(
            !daemon_alive(pid, start + 1),
            "a reused pid is another process"
        );
    }

    #[test]
    fn octal_escapes_are_undone() {
        let table = [
            ("/a\\040b", "/a b"),
            ("/tab\\011", "/tab\t"),
            ("/back\\134slash", "/back\\slash"),
            ("/plain", "/plain"),
            ("/short\\04", "/short\\04"),
        ];
        for (text, want) in table {
            assert_eq!(unescape(text), want, "{text}");
        }
    }
}
