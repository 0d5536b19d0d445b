//! Throughput on three file systems, with the peers in the same run: N
//! no-op jobs (`/bin/true`), parallelism 8, on
//!
//! - tmpfs (a fresh mount as root, else `/dev/shm`),
//! - a loop-mounted journaled ext4 (as root only: `truncate -s 2G`,
//!   `mkfs.ext4 -q -F`, `mount -o loop`; unmounted at the end, also when a
//!   run fails),
//! - the spool's own file system (`RACCOON_BENCH_DIR`, else the temporary
//!   folder), each run on a fresh spool made right after a mass deletion
//!   (20 000 files created and removed), which is when creating files is
//!   slowest on an ext4 without a journal.
//!
//! Columns: `seq N | xargs -P8 -I{} /bin/true` (the floor), raccoond with
//! `fsync = false`, raccoond with `fsync = true`, task-spooler (`tsp -S 8`)
//! and nq (8 queues), each with its ratio to xargs on that row. raccoond
//! is timed from the first rename into `new/` to the last record; the
//! peers from their first submission to their last job's end. Each figure
//! is measured once: the machine is shared, so read them as ± 10 %.
//!
//! `cargo bench --bench filesystems` (RACCOON_BENCH_N=1000 for a quick run;
//! `benches/install-peers.sh` installs tsp and nq).

// A benchmark that cannot do its IO has nothing to report: panicking says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const PAR: usize = 8;
/// Files created and removed before each run on the spool's own file
/// system: as many as a few thousand jobs leave behind.
const MASS: usize = 20_000;

/// A file system mounted for the benchmark: unmounted when dropped, also
/// when a run panics.
struct Mount {
    dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Mount {
    fn new(what: &str, setup: impl FnOnce(&Path, &Path) -> bool) -> Option<Mount> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("raccoond-fs-{what}."))
            .tempdir()
            .ok()?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).ok()?;
        setup(dir.path(), &mnt).then_some(Mount { dir, mnt })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "cannot unmount {} (its image is in {}): left mounted",
                self.mnt.display(),
                self.dir.path().display()
            );
        }
    }
}

fn sh(script: &str) -> bool {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .status()
        .is_ok_and(|s| s.success())
}

/// Creates and removes `MASS` files under `base`.
fn mass_deletion(base: &Path) {
    let d = tempfile::Builder::new()
        .prefix("raccoond-mass.")
        .tempdir_in(base)
        .unwrap();
    for i in 0..MASS {
        std::fs::write(d.path().join(format!("f{i}")), b"x").unwrap();
    }
    drop(d);
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Inodes in use on the file system of `path`.
fn inodes_used(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    (s.files() as u64).saturating_sub(s.files_free() as u64)
}

/// raccoond over `n` jobs on a fresh spool under `base`: jobs/s, the
/// inodes each finished job left (its record, its files folder, ...), and
/// the bench (its spool is deleted when the caller drops it).
fn raccoond_run(n: usize, fsync: bool, base: &Path) -> (f64, f64, Bench) {
    let top = format!("total = {PAR}\nfsync = {fsync}\nrescan = \"0\"");
    let mut b = Bench::new_in(base, &top, &[("noop", "command = [\"/bin/true\"]")]);
    b.start();
    let before = inodes_used(base);
    let jobs = b.prepare("j", n, "type = \"noop\"\n");
    let rate = b.drop_all(&jobs, Duration::from_secs(900));
    // The taken submissions go a moment after their records.
    let private = b.spool.join(".tmp");
    wait("claims released", Duration::from_secs(60), || {
        (std::fs::read_dir(&private).map_or(0, |d| d.count()) == 0).then_some(())
    });
    let per_job = inodes_used(base).saturating_sub(before) as f64 / n as f64;
    (rate, per_job, b)
}

fn xargs_run(n: usize) -> Option<f64> {
    time_sh(&format!("seq {n} | xargs -P{PAR} -I{{}} /bin/true")).map(|d| rate(n, d))
}

/// task-spooler with 8 slots, its socket and output folder under `base`
/// (`-n`: it keeps no output, as a silent raccoond job has none).
fn tsp_run(n: usize, base: &Path) -> Option<f64> {
    if !have("tsp") {
        return None;
    }
    let d = tempfile::tempdir_in(base).ok()?;
    let script = format!(
        "export TMPDIR={d} TS_SOCKET={d}/ts.sock TS_MAXFINISHED={n} TS_SAVELIST=/dev/null; tsp -S {PAR} && for i in $(seq {n}); do tsp -n /bin/true >/dev/null; done; tsp -w >/dev/null 2>&1; while tsp | grep -qE ' (queued|running) '; do sleep 0.01; done; tsp -K",
        d = d.path().display()
    );
    time_sh(&script).map(|t| rate(n, t))
}

/// nq: one queue runs serially, so eight queues under `base`.
fn nq_run(n: usize, base: &Path) -> Option<f64> {
    if !have("nq") {
        return None;
    }
    let d = tempfile::tempdir_in(base).ok()?;
    let script = format!(
        "for q in $(seq {PAR}); do mkdir -p {b}/q$q; done; for i in $(seq {n}); do NQDIR={b}/q$(( i % {PAR} + 1 )) nq -q /bin/true; done; for q in $(seq {PAR}); do NQDIR={b}/q$q nq -w; done",
        b = d.path().display()
    );
    time_sh(&script).map(|t| rate(n, t))
}

const COLUMNS: [&str; 5] = ["xargs", "raccoond", "raccoond fsync", "tsp", "nq"];

/// A row's jobs/s per column, and the inodes a finished job left.
type Row = ([Option<f64>; 5], f64);

/// One row: every column measured on `base`; `fresh` runs before each
/// (a mass deletion on the spool's own file system). Also the inodes a
/// finished job left (raccoond with fsync off).
fn row(n: usize, base: &Path, fresh: &dyn Fn()) -> Row {
    let mut kept = Vec::new();
    fresh();
    let xargs = xargs_run(n);
    fresh();
    let (off, inodes, b) = raccoond_run(n, false, base);
    kept.push(b);
    fresh();
    let (on, _, b) = raccoond_run(n, true, base);
    kept.push(b);
    fresh();
    let tsp = tsp_run(n, base);
    fresh();
    let nq = nq_run(n, base);
    ([xargs, Some(off), Some(on), tsp, nq], inodes)
}

fn main() {
    let n = n_or(5000);
    let root = nix::unistd::geteuid().is_root();
    println!(
        "filesystems: {n} no-op jobs, parallelism {PAR}, each figure measured once; {} cores, kernel {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let mut rows: Vec<(String, Option<Row>)> = Vec::new();

    // tmpfs.
    let tmpfs = if root {
        Mount::new("tmpfs", |_, mnt| {
            sh(&format!(
                "mount -t tmpfs -o size=2g tmpfs {}",
                mnt.display()
            ))
        })
    } else {
        None
    };
    let shm = PathBuf::from("/dev/shm");
    let tmpfs_base = tmpfs.as_ref().map_or(shm.as_path(), |m| m.mnt.as_path());
    rows.push(("tmpfs".into(), Some(row(n, tmpfs_base, &|| {}))));
    drop(tmpfs);

    // A journaled ext4 on a loop device.
    let ext4 = if root {
        Mount::new("ext4", |dir, mnt| {
            let img = dir.join("img");
            sh(&format!(
                "truncate -s 2G {i} && mkfs.ext4 -q -F {i} && mount -o loop {i} {m}",
                i = img.display(),
                m = mnt.display()
            ))
        })
    } else {
        None
    };
    match &ext4 {
        Some(m) => rows.push((
            "ext4, journaled (loop)".into(),
            Some(row(n, &m.mnt, &|| {})),
        )),
        None => {
            println!("ext4 (loop): skipped, mounting needs root");
            rows.push(("ext4, journaled (loop): skipped".into(), None));
        }
    }
    drop(ext4);

    // The spool's own file system, right after a mass deletion.
    let own = std::env::var_os("RACCOON_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    // findmnt names ext4 (`stat -f` says "ext2/ext3" for all three).
    let fstype = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "--target"])
        .arg(&own)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    rows.push((
        format!("{} ({fstype}), after mass deletion", own.display()),
        Some(row(n, &own, &|| mass_deletion(&own))),
    ));

    print!("{:<38}", "jobs/s (× xargs)");
    for c in COLUMNS {
        print!(" {c:>16}");
    }
    println!();
    for (name, cells) in &rows {
        print!("{name:<38}");
        match cells {
            None => print!(" {:>16}", "-"),
            Some((cells, _)) => {
                let x = cells[0];
                for c in cells {
                    match (c, x) {
                        (Some(r), Some(x)) => print!(" {:>16}", format!("{r:.0} ({:.2})", r / x)),
                        (Some(r), None) => print!(" {:>16}", format!("{r:.0}")),
                        (None, _) => print!(" {:>16}", "not installed"),
                    }
                }
            }
        }
        println!();
    }
    print!("{:<38}", "inodes left per finished job");
    for (name, cells) in &rows {
        if let Some((_, inodes)) = cells {
            print!("  {}: {inodes:.2}", name.split(',').next().unwrap_or(name));
        }
    }
    println!();
}
