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

mod control;
mod finish;
mod ingest;
mod publish;
mod recover;
mod start;

use ingest::*;
use finish::*;

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
                    let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGKILL);
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
}

fn term(r: &mut Running) {
    let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM);
    r.term_sent = Some(Instant::now());
}
