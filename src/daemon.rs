//! The main loop: one thread that owns the queue and the running jobs and
//! reacts to [`Event`]s.
//!
//! Every other thread (the watcher, the signal thread, the task
//! supervisor, the sweeper, the mailer, HTTP health checks) only sends
//! events into one channel; the loop `recv`s them with a deadline computed
//! from the next thing that must happen (a settle check, a `not_before`, a
//! timeout, a kill after the grace, the report, the watchdog). Nothing here
//! sleeps and nothing polls.
//!
//! Architecture Invariant: all spawning happens on this thread (see
//! `runner`), and only this thread decides that a job moves; the `spool`
//! module carries the move out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use nix::fcntl::Flock;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::commit::{Committer, Finish, Work};
use crate::config::{Config, Notify, Overrides};
use crate::ids;
use crate::job::{self, Job};
use crate::record::{Record, Status, signal_name};
use crate::runner::{self, Output};
use crate::scheduler::{Queue, Queued, Slots};
use crate::sdnotify::Notifier;
use crate::spool::{self, ClaimOutcome, Entry, Leftover, Spool};
use crate::status::{
    Board, FinishedRow, Histogram, QueuedRow, ROWS, RunningRow, Snapshot, TypeRow,
};
use crate::sweeper::{self, Found};
use crate::time::{self, format_duration};
use crate::watch::{self, Fs};
use crate::{http, mail, report};

/// How long a file found by a scan (not announced by a close or a rename)
/// must be left alone before it is read.
const SETTLE: Duration = Duration::from_millis(500);
/// The report is rewritten at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often a job in `running/` held by another live process is looked
/// at again (its holder may be a dying grandchild of a crashed daemon).
const RECHECK_HELD: Duration = Duration::from_secs(2);

/// Everything the loop reacts to.
pub enum Event {
    Fs(Fs),
    /// A task's main process exited and its output is written.
    Exited {
        id: String,
        output: Output,
    },
    Signal(i32),
    /// The mailer is done with a job: `sent` or `failed: …`.
    Mailed {
        id: String,
        outcome: String,
    },
    /// The sweeper's first pass over `done/`.
    Found(Found),
    /// A health check: the loop answers, proving it is alive.
    Ping(Sender<()>),
}

/// Why the daemon is killing a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancel,
    /// Shutdown: the job goes back to `new/` and the attempt is not counted.
    Drain,
}

struct Running {
    kind: String,
    job: Job,
    bytes: Vec<u8>,
    child: runner::Task,
    /// Held until the record is written: the "alive" lock of the job.
    lock: Flock<File>,
    submitted: SystemTime,
    submitted_as: Option<String>,
    started: SystemTime,
    attempt: u32,
    deadline: Option<Instant>,
    stop: Option<Stop>,
    /// When SIGTERM went to the group; SIGKILL follows after `kill_grace`.
    term_sent: Option<Instant>,
}

pub struct Daemon {
    config: Arc<Config>,
    overrides: Overrides,
    spool: Spool,
    queue: Queue,
    running: HashMap<String, Running>,
    /// Names in `new/` waiting to settle, with when to look again.
    pending: HashMap<String, Instant>,
    /// Jobs in `running/` that some other live process holds.
    held: HashSet<String>,
    next_held_check: Option<Instant>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    draining: Option<Instant>,
    next_rescan: Option<Instant>,
    /// Until `run` hands it to the committer.
    mailer: Option<mail::Mailer>,
    /// Whether a `[mail]` section is configured (records then say `pending`).
    mail_enabled: bool,
    /// Writes records off the main loop; `None` before `run` starts it.
    committer: Option<Committer>,
    /// Watches every task's output and exit; `None` before `run`.
    supervisor: Option<runner::Supervisor>,
    /// Jobs handed to the mailer by this run and not yet reported back, so
    /// that the first scan of `done/` does not mail them a second time.
    mailing: HashSet<String>,
    board: Board,
    notifier: Notifier,
    next_watchdog: Option<Instant>,
    dirty: bool,
    report_due: Option<Instant>,
    last_report: Option<Instant>,
    recent: VecDeque<FinishedRow>,
    finished_counts: std::collections::BTreeMap<(String, Status), u64>,
    durations: std::collections::BTreeMap<String, Histogram>,
    last_status_line: String,
    _watcher: Option<notify::RecommendedWatcher>,
    _http: Option<http::Server>,
}

/// Why the daemon could not start or went down: systemd's `Restart=` and
/// the exit code table in raccoond(8) follow this.
#[derive(Debug)]
pub enum Fatal {
    /// The configuration or the command line is wrong (exit 78, EX_CONFIG).
    Config(String),
    /// The system refused something that may work later (exit 75, EX_TEMPFAIL).
    Temporary(String),
}

impl Daemon {
    pub fn new(config: Config, overrides: Overrides) -> Result<Daemon, Fatal> {
        let spool = Spool::open(&config.spool, config.fsync)
            .map_err(|e| Fatal::Temporary(format!("spool: {e}")))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let config = Arc::new(config);
        let board = Board::new(config.clone());
        let mailer = match &config.mail {
            Some(m) => {
                let tx = tx.clone();
                Some(
                    mail::Mailer::start(m, spool.clone(), move |id, outcome| {
                        let _ = tx.send(Event::Mailed { id, outcome });
                    })
                    .map_err(|e| Fatal::Config(format!("[mail] {e}")))?,
                )
            }
            None => None,
        };
        let notifier = Notifier::from_env();
        Ok(Daemon {
            config,
            overrides,
            spool,
            queue: Queue::default(),
            running: HashMap::new(),
            pending: HashMap::new(),
            held: HashSet::new(),
            next_held_check: None,
            tx,
            rx,
            draining: None,
            next_rescan: None,
            mail_enabled: mailer.is_some(),
            mailer,
            committer: None,
            supervisor: None,
            mailing: HashSet::new(),
            board,
            next_watchdog: notifier.watchdog.map(|_| Instant::now()),
            notifier,
            dirty: true,
            report_due: None,
            last_report: None,
            recent: VecDeque::new(),
            finished_counts: Default::default(),
            durations: Default::default(),
            last_status_line: String::new(),
            _watcher: None,
            _http: None,
        })
    }

    /// Runs until SIGTERM or SIGINT has drained the running jobs.
    pub fn run(mut self) -> Result<(), Fatal> {
        let tx = self.tx.clone();
        let watcher = watch::start(&self.spool.new_dir(), &self.spool.cancel_dir(), move |fs| {
            let _ = tx.send(Event::Fs(fs));
        })
        .map_err(|e| {
            Fatal::Temporary(format!(
                "cannot watch {}: {e}",
                self.spool.new_dir().display()
            ))
        })?;
        self._watcher = Some(watcher);
        self.start_signals()?;

        let tx = self.tx.clone();
        let sweeper = sweeper::start(self.spool.clone(), move |found| {
            let _ = tx.send(Event::Found(found));
        })
        .map_err(|e| Fatal::Temporary(format!("cannot start the sweeper: {e}")))?;
        self.committer = Some(
            Committer::start(self.spool.clone(), sweeper, self.mailer.take())
                .map_err(|e| Fatal::Temporary(format!("cannot start the commit thread: {e}")))?,
        );

        let tx = self.tx.clone();
        self.supervisor = Some(
            runner::Supervisor::start(move |id, output| {
                let _ = tx.send(Event::Exited { id, output });
            })
            .map_err(|e| Fatal::Temporary(format!("cannot start the supervisor: {e}")))?,
        );
        if let Some(s) = &self.supervisor {
            s.remove_dead_cgroups();
        }
        self.spool.clean_dead_tmp();
        self.recover();
        self.scan_new(true);
        self.scan_cancel();
        self.next_rescan = self.config.rescan.map(|d| Instant::now() + d);

        if let Some(listen) = self.config.http.listen.clone() {
            let tx = self.tx.clone();
            let ping = move || {
                let (ptx, prx) = crossbeam_channel::bounded(1);
                tx.send(Event::Ping(ptx)).is_ok()
                    && prx.recv_timeout(Duration::from_secs(2)).is_ok()
            };
            let server = http::Server::start(&listen, self.board.clone(), self.spool.clone(), ping)
                .map_err(|e| Fatal::Temporary(format!("[http] listen = {listen:?}: {e}")))?;
            crate::log!("http: listening on {}", server.addr());
            self._http = Some(server);
        }

        self.tick();
        self.publish();
        crate::log!(
            "raccoond {}: ready, spool {}, total {}, {} queued, {} running",
            env!("CARGO_PKG_VERSION"),
            self.spool.root().display(),
            self.config.total,
            self.queue.len(),
            self.running.len()
        );
        self.notifier.send("READY=1");
        self.notify_status();

        loop {
            if self.draining.is_some() && self.running.is_empty() {
                break;
            }
            let deadline = self.next_deadline();
            let first = match deadline {
                Some(d) => self.rx.recv_deadline(d),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(ev) => {
                    self.handle(ev);
                    // Take a batch before the (comparatively costly) tick.
                    for _ in 0..256 {
                        match self.rx.try_recv() {
                            Ok(ev) => self.handle(ev),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.tick();
            if self.dirty {
                self.publish();
            }
        }
        if let Some(mut c) = self.committer.take() {
            c.flush();
        }
        self.write_report();
        crate::log!("raccoond: stopped");
        Ok(())
    }

    fn start_signals(&self) -> Result<(), Fatal> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|e| Fatal::Temporary(format!("cannot install signal handlers: {e}")))?;
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if tx.send(Event::Signal(sig)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Fatal::Temporary(format!("cannot start the signal thread: {e}")))?;
        Ok(())
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Fs(Fs::Ready(name)) => {
                self.pending.remove(&name);
                self.ingest(&name, false);
            }
            Event::Fs(Fs::Seen(name)) => {
                if !self.queue.contains(&name) {
                    self.pending
                        .entry(name)
                        .or_insert_with(|| Instant::now() + SETTLE);
                }
            }
            Event::Fs(Fs::Overflow) => {
                crate::log!("watch: events were lost; scanning new/ and cancel/");
                self.scan_new(false);
                self.scan_cancel();
            }
            Event::Fs(Fs::Cancel(id)) => self.cancel(&id),
            Event::Exited { id, output } => self.exited(&id, output),
            Event::Signal(sig) => self.signal(sig),
            Event::Mailed { id, outcome } => self.mailed(&id, &outcome),
            Event::Found(found) => self.found(found),
            Event::Ping(reply) => {
                let _ = reply.try_send(());
            }
        }
    }

    // ---- ingestion -------------------------------------------------------

    /// Lists `new/` and takes every submission not yet known. At start
    /// files are taken at once when they have settled; otherwise (and for
    /// later scans) unknown names wait for the settle time.
    fn scan_new(&mut self, at_start: bool) {
        let names = match self.spool.names(&self.spool.new_dir()) {
            Ok(n) => n,
            Err(e) => {
                crate::log!("scan: {e}");
                return;
            }
        };
        let mut fresh: Vec<String> = names
            .into_iter()
            .filter(|n| !self.queue.contains(n) && !self.pending.contains_key(n))
            .collect();
        fresh.sort();
        if !at_start {
            for name in fresh {
                self.pending.insert(name, Instant::now() + SETTLE);
            }
            return;
        }
        // At start the whole of new/ is read before READY: spread the
        // reading and parsing over the cores, then queue in name order.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = fresh.len().div_ceil(threads).max(1);
        let (spool, config) = (&self.spool, &self.config);
        let seen: Vec<Vec<(&String, Examined)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = fresh
                .chunks(chunk)
                .map(|names| {
                    scope.spawn(move || {
                        names
                            .iter()
                            .map(|n| (n, examine(spool, config, n, true)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            // A worker that died leaves its names for the next rescan.
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_default())
                .collect()
        });
        for (name, seen) in seen.into_iter().flatten() {
            self.apply(name, seen);
        }
    }

    fn scan_cancel(&mut self) {
        if let Ok(names) = self.spool.names(&self.spool.cancel_dir()) {
            for id in names {
                self.cancel(&id);
            }
        }
    }

    /// Reads a submission in `new/` and queues or rejects it. With
    /// `settle`, a file still being written (recently modified, or open for
    /// writing by someone) is looked at again later instead.
    fn ingest(&mut self, name: &str, settle: bool) {
        if name.starts_with('.') {
            return;
        }
        let seen = examine(&self.spool, &self.config, name, settle);
        self.apply(name, seen);
    }

    /// Acts on what [`examine`] found.
    fn apply(&mut self, name: &str, seen: Examined) {
        match seen {
            Examined::Gone => {
                self.queue.remove(name);
            }
            Examined::Unreadable(e) => crate::log!("new/{name}: {e}"),
            Examined::Irregular(kind) => self.reject_entry(name, kind),
            Examined::Unsettled => {
                self.pending
                    .insert(name.to_string(), Instant::now() + SETTLE);
            }
            Examined::Job(queued) => {
                self.queue.push(queued, time::now());
                self.dirty = true;
            }
            Examined::Bad {
                bytes,
                error,
                keep_file,
            } => self.reject_regular(name, &bytes, error, keep_file),
        }
    }

    /// Rejects a regular file: claims it like any job, then writes a
    /// `rejected` record holding its text. `keep_file` keeps the file
    /// itself too (binary or oversized), in `done/<id>.files/`.
    fn reject_regular(&mut self, name: &str, bytes: &[u8], error: String, keep_file: bool) {
        self.queue.remove(name);
        let want = ids::id_from_name(name).map_or_else(ids::fresh_id, str::to_string);
        let claim = match self.spool.claim(name, &want, self.config.max_job_bytes) {
            Ok(ClaimOutcome::Claimed(c)) => c,
            Ok(_) => return,
            Err(e) => {
                crate::log!("new/{name}: cannot claim to reject it: {e}");
                return;
            }
        };
        let bytes = if bytes.is_empty() {
            &claim.bytes[..]
        } else {
            bytes
        };
        let mut rec = self.unrun_record(
            &claim.id,
            bytes,
            Status::Rejected,
            Some(error),
            Some(time::now()),
        );
        rec.submitted_as = submitted_as(&claim.id, name);
        if keep_file {
            if let Err(e) = self.spool.keep_claimed(&claim.id, name) {
                crate::log!("{}: cannot keep the rejected file: {e}", claim.id);
            }
            // An oversized file is kept whole, not copied into the record.
            if std::str::from_utf8(bytes).is_ok() {
                rec.source = None;
            }
        }
        self.commit(rec, None, Some(claim.lock), None);
    }

    /// Rejects a symlink, folder, FIFO, socket or device without opening
    /// it: it is moved whole into `done/<id>.files/`.
    fn reject_entry(&mut self, name: &str, kind: &str) {
        self.queue.remove(name);
        let id = ids::fresh_id();
        match self.spool.park(name, &id) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                crate::log!("new/{name}: cannot move it aside: {e}");
                return;
            }
        }
        let error = format!(
            "not a regular file: new/{name} is a {kind}; it was not opened and is kept in done/{id}.files/"
        );
        let mut rec = self.unrun_record(&id, &[], Status::Rejected, Some(error), Some(time::now()));
        rec.submitted_as = Some(name.to_string());
        self.commit(rec, None, None, None);
    }

    // ---- starting --------------------------------------------------------

    fn start_ready(&mut self) {
        if self.draining.is_some() {
            return;
        }
        self.queue.promote(time::now());
        loop {
            let mut by_type: HashMap<&str, usize> = HashMap::new();
            for r in self.running.values() {
                *by_type.entry(r.kind.as_str()).or_default() += 1;
            }
            let config = self.config.clone();
            let limit = |k: &str| config.limit_of(k);
            let running = |k: &str| by_type.get(k).copied().unwrap_or(0);
            let slots = Slots {
                total: config.total,
                running_total: self.running.len(),
                limit: &limit,
                running: &running,
            };
            let Some(next) = self.queue.next(&slots).cloned() else {
                return;
            };
            drop(by_type);
            self.queue.remove(&next.name);
            self.dirty = true;
            self.start(next);
        }
    }

    fn start(&mut self, q: Queued) {
        let claim = match self.spool.claim(&q.name, &q.id, self.config.max_job_bytes) {
            Ok(ClaimOutcome::Claimed(c)) => c,
            Ok(ClaimOutcome::Gone) => return,
            // Someone holds its lock (another daemon claiming it, or a
            // stray reader): look again after the settle time.
            Ok(ClaimOutcome::Busy) => {
                self.pending.insert(q.name, Instant::now() + SETTLE);
                return;
            }
            Err(e) => {
                crate::log!("new/{}: cannot claim: {e}", q.name);
                return;
            }
        };
        let id = claim.id.clone();
        let submitted_as = submitted_as(&id, &q.name);
        // The file may have changed since it was queued: what runs is what
        // is in running/ now, checked again.
        let job = match job::parse(&claim.bytes, &self.config) {
            Ok(j) => j,
            Err(error) => {
                let mut rec = self.unrun_record(
                    &id,
                    &claim.bytes,
                    Status::Rejected,
                    Some(error),
                    Some(q.submitted),
                );
                rec.submitted_as = submitted_as;
                self.commit(rec, None, Some(claim.lock), None);
                return;
            }
        };
        let Some(ty) = self.config.types.get(&job.kind).cloned() else {
            return;
        };
        let attempt = job.attempts + 1;
        let launch = runner::Launch {
            id: &id,
            job: &job,
            ty: &ty,
            attempt,
            spool: &self.spool,
            lock_fd: claim.lock.as_raw_fd(),
            max_output_bytes: self.config.max_output_bytes,
        };
        let started = time::now();
        let Some(supervisor) = &self.supervisor else {
            return;
        };
        match runner::start(&launch, supervisor) {
            Ok(child) => {
                crate::log!(
                    "{id}: started type={} pid={} attempt={attempt}",
                    job.kind,
                    child.id()
                );
                let deadline = job.timeout.map(|t| Instant::now() + t);
                self.running.insert(
                    id,
                    Running {
                        kind: job.kind.clone(),
                        bytes: claim.bytes,
                        job,
                        child,
                        lock: claim.lock,
                        submitted: q.submitted,
                        submitted_as,
                        started,
                        attempt,
                        deadline,
                        stop: None,
                        term_sent: None,
                    },
                );
            }
            Err(e) => {
                crate::log!("{id}: cannot start: {e}");
                let run = Run {
                    id: &id,
                    job: &job,
                    bytes: &claim.bytes,
                    submitted: q.submitted,
                    submitted_as,
                    started,
                    attempt,
                };
                self.failed_run(run, claim.lock, None, format!("cannot start: {e}"), None);
            }
        }
    }

    // ---- ending ----------------------------------------------------------

    fn exited(&mut self, id: &str, mut output: Output) {
        let Some(r) = self.running.remove(id) else {
            return;
        };
        self.dirty = true;
        let status = match r.child.reap(&mut output) {
            Ok(s) => s,
            Err(e) => {
                crate::log!("{id}: cannot reap pid {}: {e}", r.child.id());
                return;
            }
        };
        let run = Run {
            id,
            job: &r.job,
            bytes: &r.bytes,
            submitted: r.submitted,
            submitted_as: r.submitted_as.clone(),
            started: r.started,
            attempt: r.attempt,
        };
        match r.stop {
            Some(Stop::Drain) => {
                // The attempt does not count: the job never had its chance.
                let text = requeue_text(&r.bytes, r.job.attempts, r.submitted, None);
                crate::log!("{id}: put back in new/ (shutdown)");
                self.requeue(id, &text, r.lock);
            }
            Some(Stop::Cancel) => {
                let rec = self.run_record(
                    &run,
                    Status::Cancelled,
                    Some(status),
                    Some("cancelled".into()),
                );
                self.commit(rec, Some(&r.job), Some(r.lock), Some(output));
                let _ = std::fs::remove_file(self.spool.cancel_path(id));
            }
            Some(Stop::Timeout) => {
                let limit = r.job.timeout.map(format_duration).unwrap_or_default();
                let rec = self.run_record(
                    &run,
                    Status::TimedOut,
                    Some(status),
                    Some(format!("timed out after {limit}")),
                );
                self.commit(rec, Some(&r.job), Some(r.lock), Some(output));
            }
            None if status.success() => {
                let rec = self.run_record(&run, Status::Succeeded, Some(status), None);
                self.commit(rec, Some(&r.job), Some(r.lock), Some(output));
            }
            None => {
                let why = describe_exit(status);
                self.failed_run(run, r.lock, Some(status), why, Some(output));
            }
        }
    }

    /// A run that failed: put back for a retry while retries remain, else
    /// the record says `failed`.
    fn failed_run(
        &mut self,
        run: Run,
        lock: Flock<File>,
        status: Option<ExitStatus>,
        why: String,
        output: Option<Output>,
    ) {
        let id = run.id;
        if run.attempt <= run.job.retries {
            let kind = run.job.kind.as_str();
            let base = self
                .config
                .types
                .get(kind)
                .map_or(crate::config::DEFAULT_RETRY_DELAY, |t| t.retry_delay);
            let delay = retry_delay(base, run.attempt);
            let at = time::now() + delay;
            let text = requeue_text(run.bytes, run.attempt, run.submitted, Some(at));
            crate::log!(
                "{id}: {why}; retry {}/{} in {}",
                run.attempt,
                run.job.retries,
                format_duration(delay)
            );
            self.requeue(id, &text, lock);
            return;
        }
        let rec = self.run_record(&run, Status::Failed, status, Some(why));
        self.commit(rec, Some(run.job), Some(lock), output);
    }

    fn run_record(
        &self,
        run: &Run,
        status: Status,
        exit: Option<ExitStatus>,
        error: Option<String>,
    ) -> Record {
        let now = time::now();
        let mut rec = self.queued_record(
            run.id,
            run.job,
            run.submitted,
            run.submitted_as.clone(),
            status,
            "",
        );
        rec.error = error;
        rec.started = Some(time::to_toml(run.started));
        rec.finished = Some(time::to_toml(now));
        rec.expires = Some(time::to_toml(now + run.job.keep));
        rec.attempts = run.attempt;
        if let Some(st) = exit {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(c), _) => rec.exit_code = Some(c),
                (None, Some(s)) => rec.signal = Some(signal_name(s)),
                _ => {}
            }
        }
        rec
    }

    /// A record for a submission that never ran and is not (or no longer)
    /// a valid job: its type as far as the text says, its text as `source`.
    fn unrun_record(
        &self,
        id: &str,
        bytes: &[u8],
        status: Status,
        error: Option<String>,
        submitted: Option<SystemTime>,
    ) -> Record {
        let now = time::now();
        let mut rec = Record::new(id, &guess_type(bytes), status);
        rec.submitted = submitted.map(time::to_toml);
        rec.finished = Some(time::to_toml(now));
        rec.expires = Some(time::to_toml(now + self.config.keep));
        rec.error = error;
        rec.source = Some(String::from_utf8_lossy(bytes).into_owned());
        rec
    }

    /// A record for a valid job that never ran (cancelled while queued).
    fn queued_record(
        &self,
        id: &str,
        job: &Job,
        submitted: SystemTime,
        submitted_as: Option<String>,
        status: Status,
        error: &str,
    ) -> Record {
        let now = time::now();
        let mut rec = Record::new(id, &job.kind, status);
        rec.submitted = Some(time::to_toml(job.submitted.unwrap_or(submitted)));
        rec.finished = Some(time::to_toml(now));
        rec.expires = Some(time::to_toml(now + job.keep));
        rec.attempts = job.attempts;
        rec.error = (!error.is_empty()).then(|| error.to_string());
        rec.submitted_as = submitted_as;
        rec.email = job.email.clone();
        if job.priority != 0 {
            rec.priority = Some(job.priority);
        }
        rec.args = job.args.clone();
        rec.params = (!job.params.is_empty()).then(|| job.params.clone());
        rec
    }

    /// Ends a job: hands its record to the committer (which writes it and
    /// then lets go of the lock) and tells the log and the report.
    fn commit(
        &mut self,
        mut rec: Record,
        job: Option<&Job>,
        lock: Option<Flock<File>>,
        output: Option<Output>,
    ) {
        rec.usage = output.and_then(|o| o.usage);
        let notify = job
            .and_then(|j| self.config.types.get(&j.kind))
            .map_or(Notify::Always, |t| t.notify);
        let mail = self.mail_enabled
            && !rec.email.is_empty()
            && match notify {
                Notify::Always => true,
                Notify::Failure => rec.status.is_failure(),
                Notify::Never => false,
            };
        if !rec.email.is_empty() {
            rec.mail = Some(if mail { "pending" } else { "none" }.into());
        }
        let mut line = format!("{}: {}", rec.id, rec.status);
        if let Some(c) = rec.exit_code {
            line.push_str(&format!(" exit={c}"));
        }
        if let Some(s) = &rec.signal {
            line.push_str(&format!(" signal={s}"));
        }
        if let Some(d) = rec.duration() {
            line.push_str(&format!(" after {}", format_duration(d)));
        }
        if let Some(e) = &rec.error {
            line.push_str(&format!(" ({e})"));
        }
        crate::log!("{line}");
        // A rejected file may claim any type: count those under "" so that
        // junk cannot grow the metrics without bound.
        let counted = if self.config.types.contains_key(&rec.kind) {
            rec.kind.clone()
        } else {
            String::new()
        };
        *self
            .finished_counts
            .entry((counted, rec.status))
            .or_default() += 1;
        if let Some(d) = rec.duration() {
            self.durations
                .entry(rec.kind.clone())
                .or_default()
                .observe(d);
        }
        self.recent.push_front(FinishedRow {
            id: rec.id.clone(),
            kind: rec.kind.clone(),
            status: rec.status,
            finished: rec.finished_at().unwrap_or_else(time::now),
            duration: rec.duration(),
            exit_code: rec.exit_code,
            signal: rec.signal.clone(),
            error: rec.error.clone(),
        });
        self.recent.truncate(ROWS);
        self.dirty = true;
        if mail {
            self.mailing.insert(rec.id.clone());
        }
        self.send(Work::Finish(Finish {
            record: rec,
            lock,
            output,
            mail,
        }));
    }

    /// Puts a job back into `new/`, here on the loop's thread and not on
    /// the commit thread: until it returns, the job's file is in both
    /// `new/` and `running/`, and a claim of the new file then would see
    /// its id taken. Rare (retries, shutdown, recovery), so cheap enough.
    fn requeue(&self, id: &str, text: &str, lock: Flock<File>) {
        if let Err(e) = self.spool.requeue(id, text.as_bytes()) {
            crate::log!("{id}: cannot put back in new/: {e}");
        }
        drop(lock);
    }

    fn send(&self, work: Work) {
        if let Some(c) = &self.committer {
            c.send(work);
        }
    }

    fn mailed(&mut self, id: &str, outcome: &str) {
        self.mailing.remove(id);
        match self.spool.read_record(id) {
            Ok(mut rec) => {
                rec.mail = Some(outcome.to_string());
                match self.spool.rewrite_record(&rec) {
                    Ok(()) => crate::log!("{id}: mail {outcome}"),
                    Err(e) => {
                        crate::log!("{id}: mail {outcome}, but the record cannot say so: {e}")
                    }
                }
            }
            Err(e) => crate::log!("{id}: mail {outcome}, but the record is gone: {e}"),
        }
    }

    fn found(&mut self, found: Found) {
        for row in found.recent {
            if self.recent.len() < ROWS && !self.recent.iter().any(|r| r.id == row.id) {
                self.recent.push_back(row);
            }
        }
        if self.mail_enabled {
            for id in found.mail_pending {
                if self.mailing.contains(&id) {
                    continue;
                }
                if let Ok(rec) = self.spool.read_record(&id)
                    && rec.mail.as_deref() == Some("pending")
                {
                    crate::log!("{id}: mail still pending from an earlier run; sending");
                    self.send(Work::Mail(rec));
                }
            }
        }
        self.dirty = true;
    }

    // ---- cancel, signals, timers ----------------------------------------

    fn cancel(&mut self, id: &str) {
        if let Some(r) = self.running.get_mut(id) {
            if r.stop.is_none() || r.stop == Some(Stop::Drain) {
                crate::log!("{id}: cancelling (SIGTERM to the process group)");
                r.stop = Some(Stop::Cancel);
                term(r);
            }
            return;
        }
        if let Some(name) = self.queue.name_of(id).map(str::to_string)
            && let Some(q) = self.queue.remove(&name)
        {
            self.dirty = true;
            // Claiming it first makes sure no other daemon starts it.
            if let Ok(ClaimOutcome::Claimed(claim)) =
                self.spool.claim(&q.name, &q.id, self.config.max_job_bytes)
            {
                let submitted_as = submitted_as(&claim.id, &q.name);
                match job::parse(&claim.bytes, &self.config) {
                    Ok(job) => {
                        let rec = self.queued_record(
                            &claim.id,
                            &job,
                            q.submitted,
                            submitted_as,
                            Status::Cancelled,
                            "cancelled before it started",
                        );
                        self.commit(rec, Some(&job), Some(claim.lock), None);
                    }
                    Err(_) => {
                        let rec = self.unrun_record(
                            &claim.id,
                            &claim.bytes,
                            Status::Cancelled,
                            None,
                            Some(q.submitted),
                        );
                        self.commit(rec, None, Some(claim.lock), None);
                    }
                }
            }
            let _ = std::fs::remove_file(self.spool.cancel_path(id));
            return;
        }
        // Not ours: another daemon may be running it; else nothing to do.
        if ids::valid_id(id) && self.spool.running_job(id).exists() {
            return;
        }
        if !self.spool.done_record(id).exists() {
            crate::log!("{id}: cancel: no such job");
        }
        let _ = std::fs::remove_file(self.spool.cancel_path(id));
    }

    fn signal(&mut self, sig: i32) {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        match sig {
            SIGTERM | SIGINT if self.draining.is_none() => {
                let grace = self.config.stop_timeout;
                crate::log!(
                    "raccoond: {}, stopping: {} running job(s) may finish within {}",
                    signal_name(sig),
                    self.running.len(),
                    format_duration(grace)
                );
                self.notifier.send("STOPPING=1");
                self.draining = Some(Instant::now() + grace);
                self.dirty = true;
            }
            SIGTERM | SIGINT => {}
            SIGHUP => self.reload(),
            _ => {}
        }
    }

    fn reload(&mut self) {
        let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.notifier
            .send(&format!("RELOADING=1\nMONOTONIC_USEC={monotonic}"));
        let path = self.config.path.clone();
        match Config::load(path.as_deref(), &self.overrides) {
            Ok(mut c) => {
                if format!("{:?}", c.mail) != format!("{:?}", self.config.mail) {
                    crate::log!("reload: [mail] changes take effect at the next start");
                }
                if c.spool != self.config.spool {
                    crate::log!(
                        "reload: spool cannot change while running; keeping {}",
                        self.config.spool.display()
                    );
                    c.spool = self.config.spool.clone();
                }
                crate::log!(
                    "reload: configuration read again from {}",
                    path.as_deref()
                        .map_or("(none)".into(), |p: &std::path::Path| p
                            .display()
                            .to_string())
                );
                self.config = Arc::new(c);
                self.board.set_config(self.config.clone());
                self.spool = self.spool.with_fsync(self.config.fsync);
                self.send(Work::Spool(self.spool.clone()));
                self.dirty = true;
            }
            Err(e) => crate::log!("reload: {e}; the old configuration stays in force"),
        }
        self.notifier.send("READY=1");
    }

    /// Everything that is due: settled files, rescans, timeouts, kills,
    /// the drain deadline, held jobs, then starting what may start.
    fn tick(&mut self) {
        let now = Instant::now();
        if !self.pending.is_empty() {
            let due: Vec<String> = self
                .pending
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for name in due {
                self.pending.remove(&name);
                self.ingest(&name, true);
            }
        }
        if let Some(t) = self.next_rescan
            && t <= now
        {
            self.scan_new(false);
            self.scan_cancel();
            self.next_rescan = self.config.rescan.map(|d| now + d);
        }
        if self.next_held_check.is_some_and(|t| t <= now) {
            self.next_held_check = None;
            self.recover();
        }
        let drain_due = self.draining.is_some_and(|t| t <= now);
        let grace = self.config.kill_grace;
        for (id, r) in self.running.iter_mut() {
            if let Some(sent) = r.term_sent {
                if sent + grace <= now {
                    crate::log!(
                        "{id}: still alive {} after SIGTERM; SIGKILL",
                        format_duration(grace)
                    );
                    r.child.kill();
                    r.term_sent = None;
                    r.deadline = None;
                }
                continue;
            }
            if r.stop.is_none() && r.deadline.is_some_and(|d| d <= now) {
                crate::log!("{id}: timed out; SIGTERM to the process group");
                r.stop = Some(Stop::Timeout);
                term(r);
            } else if drain_due && r.stop.is_none() {
                crate::log!("{id}: stop_timeout passed; SIGTERM to the process group");
                r.stop = Some(Stop::Drain);
                term(r);
            }
        }
        self.start_ready();
        if let Some(t) = self.next_watchdog
            && t <= now
        {
            self.notifier.send("WATCHDOG=1");
            self.next_watchdog = self.notifier.watchdog.map(|w| now + w);
        }
        if self.report_due.is_some_and(|t| t <= now) {
            self.write_report();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.pending.values().min().copied());
        consider(self.next_rescan);
        consider(self.next_held_check);
        consider(self.next_watchdog);
        consider(self.report_due);
        if self.draining.is_none() {
            consider(
                self.queue
                    .next_wakeup()
                    .map(|t| Instant::now() + t.duration_since(time::now()).unwrap_or_default()),
            );
        } else if let Some(d) = self.draining {
            consider(Some(d));
        }
        let grace = self.config.kill_grace;
        for r in self.running.values() {
            consider(r.term_sent.map(|t| t + grace));
            if r.stop.is_none() {
                consider(r.deadline);
            }
        }
        next
    }

    // ---- recovery --------------------------------------------------------

    /// Jobs left in `running/` by a daemon that died: those no live process
    /// holds go back to `new/` with the attempt counted, or end `failed`
    /// (`interrupted`) past their retries.
    fn recover(&mut self) {
        let leftovers = match self.spool.recover(self.config.max_job_bytes) {
            Ok(l) => l,
            Err(e) => {
                crate::log!("recover: {e}");
                return;
            }
        };
        self.held.clear();
        for left in leftovers {
            match left {
                Leftover::Alive(id) => {
                    if !self.running.contains_key(&id) {
                        let killed = self.spool.kill_orphans(&id);
                        if killed > 0 {
                            crate::log!(
                                "{id}: recover: killed {killed} leftover process(es) of a dead daemon's task"
                            );
                        }
                        self.held.insert(id);
                    }
                }
                Leftover::Cleaned(id) => {
                    crate::log!("{id}: recover: removed leftovers of a finished job")
                }
                Leftover::Orphan(claim) => {
                    let id = claim.id.clone();
                    if self.running.contains_key(&id) {
                        continue;
                    }
                    match job::parse(&claim.bytes, &self.config) {
                        Ok(job) => {
                            let attempt = job.attempts + 1;
                            let submitted = job.submitted.unwrap_or_else(time::now);
                            if attempt <= job.retries {
                                let text = requeue_text(&claim.bytes, attempt, submitted, None);
                                crate::log!(
                                    "{id}: recover: interrupted; put back in new/ (attempt {attempt} counted)"
                                );
                                self.requeue(&id, &text, claim.lock);
                            } else {
                                let mut rec = self.queued_record(
                                    &id,
                                    &job,
                                    submitted,
                                    None,
                                    Status::Failed,
                                    "interrupted",
                                );
                                rec.attempts = attempt;
                                self.commit(rec, Some(&job), Some(claim.lock), None);
                            }
                        }
                        Err(error) => {
                            let rec = self.unrun_record(
                                &id,
                                &claim.bytes,
                                Status::Rejected,
                                Some(error),
                                None,
                            );
                            self.commit(rec, None, Some(claim.lock), None);
                        }
                    }
                }
            }
        }
        if !self.held.is_empty() {
            self.next_held_check = Some(Instant::now() + RECHECK_HELD);
        }
    }

    // ---- publishing ------------------------------------------------------

    fn publish(&mut self) {
        self.dirty = false;
        let snapshot = self.snapshot();
        let line = format!(
            "STATUS={} running, {} queued{}",
            snapshot.running_total,
            snapshot.queued_total,
            if snapshot.draining { ", stopping" } else { "" }
        );
        self.board.publish(snapshot);
        if line != self.last_status_line {
            self.notifier.send(&line);
            self.last_status_line = line;
        }
        if self.report_due.is_none() {
            let earliest = self
                .last_report
                .map_or(Instant::now(), |t| t + REPORT_EVERY);
            self.report_due = Some(earliest.max(Instant::now()));
        }
    }

    fn notify_status(&mut self) {
        self.last_status_line.clear();
        self.publish();
    }

    fn snapshot(&self) -> Snapshot {
        let counts = self.queue.counts();
        let mut running_by: HashMap<&str, usize> = HashMap::new();
        for r in self.running.values() {
            *running_by.entry(r.kind.as_str()).or_default() += 1;
        }
        let types = self
            .config
            .types
            .keys()
            .map(|name| TypeRow {
                name: name.clone(),
                limit: self.config.limit_of(name),
                running: running_by.get(name.as_str()).copied().unwrap_or(0),
                queued: counts.get(name).copied().unwrap_or(0),
            })
            .collect();
        let mut running: Vec<RunningRow> = self
            .running
            .iter()
            .map(|(id, r)| RunningRow {
                id: id.clone(),
                kind: r.kind.clone(),
                started: r.started,
                pid: r.child.id(),
                attempt: r.attempt,
            })
            .collect();
        running.sort_by_key(|r| r.started);
        Snapshot {
            generated: Some(time::now()),
            total: self.config.total,
            running_total: self.running.len(),
            queued_total: self.queue.len(),
            draining: self.draining.is_some(),
            types,
            running,
            queued: self
                .queue
                .first(ROWS)
                .into_iter()
                .map(|q| QueuedRow {
                    id: q.id.clone(),
                    kind: q.kind.clone(),
                    priority: q.priority,
                    submitted: q.submitted,
                    not_before: q.not_before,
                })
                .collect(),
            finished: self.recent.iter().cloned().collect(),
            finished_counts: self.finished_counts.clone(),
            durations: self.durations.clone(),
        }
    }

    fn write_report(&mut self) {
        self.report_due = None;
        self.last_report = Some(Instant::now());
        let html = report::render(&self.board.snapshot(), time::now());
        if let Err(e) = self.spool.write_report(html.as_bytes()) {
            crate::log!("report: {e}");
        }
    }
}

/// What a name in `new/` turned out to be.
enum Examined {
    Gone,
    Unreadable(std::io::Error),
    /// A symlink, folder, FIFO, socket or device.
    Irregular(&'static str),
    /// Still being written: look again after the settle time.
    Unsettled,
    Job(Queued),
    /// Not a job: the reason, and the bytes for the record's `source`
    /// (empty when too large to read).
    Bad {
        bytes: Vec<u8>,
        error: String,
        keep_file: bool,
    },
}

/// Reads and checks a submission without changing anything: safe to run
/// on many names at once (the first scan at start does).
fn examine(spool: &Spool, config: &Config, name: &str, settle: bool) -> Examined {
    use std::io::Read;
    let (mut file, meta) = match spool.open_new(name) {
        Err(e) => return Examined::Unreadable(e),
        Ok(Entry::Gone) => return Examined::Gone,
        Ok(Entry::Other(kind)) => return Examined::Irregular(kind),
        Ok(Entry::Regular { file, meta }) => (file, meta),
    };
    let mtime = meta.modified().unwrap_or_else(|_| time::now());
    if settle {
        let young = time::now()
            .duration_since(mtime)
            .map_or(true, |age| age < SETTLE);
        if young || spool::has_writer(&file) == Some(true) {
            return Examined::Unsettled;
        }
    }
    let max = config.max_job_bytes;
    if meta.len() > max {
        return Examined::Bad {
            bytes: Vec::new(),
            error: format!(
                "too large: {} bytes, more than max_job_bytes = {max}",
                meta.len()
            ),
            keep_file: true,
        };
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    if let Err(e) = (&mut file).take(max + 1).read_to_end(&mut bytes) {
        return Examined::Unreadable(e);
    }
    match job::parse(&bytes, config) {
        Ok(job) => Examined::Job(Queued {
            name: name.to_string(),
            id: ids::id_from_name(name).map_or_else(ids::fresh_id, str::to_string),
            kind: job.kind,
            priority: job.priority,
            submitted: job.submitted.unwrap_or(mtime),
            not_before: job.not_before,
        }),
        Err(error) => Examined::Bad {
            keep_file: std::str::from_utf8(&bytes).is_err() || bytes.len() as u64 > max,
            bytes,
            error,
        },
    }
}

/// The parts of a run that its record and its retry need.
struct Run<'a> {
    id: &'a str,
    job: &'a Job,
    bytes: &'a [u8],
    submitted: SystemTime,
    submitted_as: Option<String>,
    started: SystemTime,
    attempt: u32,
}

fn term(r: &mut Running) {
    let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM);
    r.term_sent = Some(Instant::now());
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by {}", signal_name(s)),
        _ => "ended".into(),
    }
}

/// `retry_delay` doubled for each earlier retry, give or take a tenth so
/// that jobs failing together do not retry together.
fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let nanos = time::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = (nanos % 2001) as f64 / 10_000.0 - 0.1; // -0.1 ..= +0.1
    doubled.mul_f64(1.0 + jitter)
}

/// The job file's text with `attempts`, `submitted` and (for a retry)
/// `not_before` set, as it goes back into `new/`.
fn requeue_text(
    bytes: &[u8],
    attempts: u32,
    submitted: SystemTime,
    not_before: Option<SystemTime>,
) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut table: toml::Table = toml::from_str(&text).unwrap_or_default();
    table.insert("attempts".into(), toml::Value::Integer(i64::from(attempts)));
    table.insert(
        "submitted".into(),
        toml::Value::Datetime(time::to_toml(submitted)),
    );
    if let Some(t) = not_before {
        table.insert("not_before".into(), toml::Value::Datetime(time::to_toml(t)));
    }
    toml::to_string(&table).unwrap_or_else(|_| text.into_owned())
}

/// `submitted_as` of a record: the name in `new/` when the job's id is not
/// that name without `.toml`.
fn submitted_as(id: &str, name: &str) -> Option<String> {
    (id != name.strip_suffix(".toml").unwrap_or(name)).then(|| name.to_string())
}

/// The type a rejected file names, if it names one, for its record.
fn guess_type(bytes: &[u8]) -> String {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(t).ok())
        .and_then(|t| t.get("type").and_then(|v| v.as_str().map(str::to_string)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_a_little_jitter() {
        let base = Duration::from_secs(10);
        for (attempt, want) in [(1, 10.0), (2, 20.0), (3, 40.0)] {
            let d = retry_delay(base, attempt).as_secs_f64();
            assert!(
                d >= want * 0.89 && d <= want * 1.11,
                "attempt {attempt}: {d}"
            );
        }
    }

    #[test]
    fn requeued_text_keeps_the_job_and_adds_the_schedule() {
        let t0 = time::parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
        let text = requeue_text(b"type = \"a\"\n[params]\nn = 1\n", 2, t0, Some(t0));
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["type"].as_str(), Some("a"));
        assert_eq!(table["attempts"].as_integer(), Some(2));
        assert!(table["submitted"].as_datetime().is_some());
        assert!(table["not_before"].as_datetime().is_some());
        assert_eq!(table["params"]["n"].as_integer(), Some(1));
    }
}
