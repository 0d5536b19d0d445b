//! The main loop: one thread that owns the queue, the running jobs and
//! every deadline, and reacts to [`Event`]s.
//!
//! Every other thread (the signal thread, the task supervisor, the
//! sweeper, the commit thread, HTTP health checks) only sends events into
//! one mailbox (`mailbox`); the loop waits in one `poll(2)` for them and
//! for the spool's inotify descriptor (`watch`, read here: no thread
//! between a submission and the loop), with a deadline computed from the next
//! thing that must happen (a settle check, a `not_before`, a timeout, a
//! kill after the grace, the drain deadline, the rescan, the report, the
//! watchdog, the next look at jobs held by another daemon, a schedule's
//! next tick). Nothing here
//! sleeps. One thing is looked at again on a timer rather than on an
//! event: while a job in `running/` is held by a process that is not ours,
//! recovery runs again every `RECHECK_HELD` (no event says that a lock
//! of another process went away).
//!
//! This file holds the state, start-up and the loop; the loop's work is in
//! the files beside it, one concern each: `ingest` (new/ into the queue),
//! `start` (the queue into tasks), `ending` (the pure decision of how an
//! attempt ends), `finish` (carrying it out), `recover` (`running/` after a
//! crash), `control` (cancel, signals, reload), `publish` (the snapshot,
//! systemd's status, the report, HTTP) and `schedules` (each tick's job,
//! claimed on the spool so that one daemon submits it).
//!
//! Every thread the daemon starts is started through [`Threads`], which
//! reports its end ([`Event::ThreadDied`]): the loop then logs it and
//! returns [`Fatal::Temporary`] at once (exit 75): without a part it cannot
//! keep its promises, and a restart with recovery can. No drain: running
//! tasks die with the daemon by their death signal.
//!
//! While the commit thread says the spool's file system is full
//! ([`Event::DiskFull`]), or a start met a full disk, no job starts and the
//! report is not rewritten; both resume by themselves once it has room.
//!
//! Never writes a record (the commit thread does) and never renames a
//! spool path itself (the spool module does).
//!
//! Architecture Invariant: all spawning happens on this thread (see
//! `runner`), and only this thread decides that a job moves.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::TryRecvError;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::commit::{self, Committer, Peers};
use crate::config::{Config, Overrides};
use crate::history::History;
use crate::job::Job;
use crate::mail::Mailer;
use crate::pool::{Grant, Pool};
use crate::record::Status;
use crate::runner::{self, Output};
use crate::scheduler::Queue;
use crate::sdnotify::Notifier;
use crate::spool::{Hold, Spool};
use crate::status::{Board, FinishedRow, Histogram};
use crate::sweeper::{self, FirstScan};
use crate::threads::{Stopped, Threads};
use crate::time::{self, format_duration};
use crate::watch::{self, Fs};

mod admit;
mod backlog;
mod control;
mod depends;
mod ending;
mod finish;
mod ingest;
mod mailbox;
mod pause;
mod publish;
mod recover;
mod schedules;
mod start;
mod submitter;
mod unique;

/// How long a file found by a scan (not announced by a close or a rename)
/// must be left alone before it is read.
const SETTLE: Duration = Duration::from_millis(500);
/// The report is rewritten at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often a job in `running/` held by another live process is looked
/// at again (its holder may be a dying grandchild of a crashed daemon).
const RECHECK_HELD: Duration = Duration::from_secs(2);
/// At most this many events are handled before the next tick.
const BATCH: usize = 256;

/// Everything the loop reacts to.
pub enum Event {
    /// Something happened in `new/` or `cancel/`.
    Fs(Fs),
    /// A task's main process exited and its output is written.
    Exited { id: String, output: Output },
    /// SIGTERM, SIGINT or SIGHUP arrived.
    Signal(i32),
    /// The sweeper's first pass over `done/`.
    FirstScan(FirstScan),
    /// A health check: the loop answers, proving it is alive.
    Ping(crossbeam_channel::Sender<()>),
    /// From the commit thread: records wait for room on the spool's file
    /// system (`true`: start nothing), or all are written (`false`).
    DiskFull(bool),
    /// A thread of the daemon returned or panicked: the daemon exits 75.
    ThreadDied(Stopped),
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

/// Why the daemon is stopping a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancel,
    /// Shutdown: the job goes back to `new/` and the attempt is not counted.
    Drain,
}

/// A task of ours that has not exited yet, and the claimed job it runs.
struct RunningJob {
    /// The job as parsed when it was claimed: what runs is what was in
    /// `running/` then, whatever `new/` said when it was queued.
    job: Job,
    /// The claimed text: a requeued copy is made from it.
    bytes: Vec<u8>,
    /// The task's first process, leader of its process group: what
    /// timeouts, cancels and shutdown signal, and what is reaped at exit.
    task: runner::Task,
    /// The daemon's copy of the job file, locked, and the submission taken
    /// out of `new/`: held until the record (or the requeued copy) is in
    /// place, the lock is how recovery knows the job is alive.
    hold: Hold,
    /// When the job was submitted (its file says, else its mtime): the
    /// record's `submitted`.
    submitted: SystemTime,
    /// The name it had in `new/` when that is not `<id>.toml`.
    submitted_as: Option<String>,
    /// When the task started: the record's `started` and the snapshot's.
    started: SystemTime,
    /// This attempt's number, from 1.
    attempt: u32,
    /// When its `timeout` runs out; cleared once SIGKILL has gone out.
    deadline: Option<Instant>,
    /// The resource units it holds, given back when it exits.
    grant: Grant,
    /// Why the daemon is stopping it, once it is: the cause of its end.
    stop: Option<Stop>,
    /// When SIGTERM went to the group; SIGKILL follows after `kill_grace`.
    term_sent: Option<Instant>,
}

impl RunningJob {
    /// Asks the task's process group to stop, for `why`.
    fn term(&mut self, why: Stop) {
        self.stop = Some(why);
        let _ = killpg(Pid::from_raw(self.task.id() as i32), Signal::SIGTERM);
        self.term_sent = Some(Instant::now());
    }

    /// Kills the group of a task that outlived its grace after SIGTERM.
    fn kill(&mut self) {
        // The whole job: its process group and, with cgroups, every process
        // that left the group.
        self.task.kill();
        self.term_sent = None;
        self.deadline = None;
    }
}

/// The main loop's state. Built whole by [`Daemon::run`]; every thread it
/// reports from is running by then.
pub struct Daemon {
    /// The configuration in force: replaced whole by a reload (SIGHUP).
    config: Arc<Config>,
    /// The command line's settings, applied again over each reload.
    overrides: Overrides,
    /// Every path under the spool and every move of a job.
    spool: Spool,
    /// Valid jobs read from `new/`, waiting for a slot, their
    /// `not_before` or their parents: what the scheduler picks from.
    queue: Queue,
    /// The statuses of jobs that ended lately, for the jobs that wait for
    /// them (see `depends`).
    ended: depends::Ended,
    /// What `pause/` says: types whose new starts are held.
    pauses: pause::Pauses,
    /// `[resources]`: which units running jobs hold.
    pool: Pool,
    /// Our tasks that have not exited, by job id: what the limits count and
    /// what timeouts, cancels and shutdown act on.
    running: HashMap<String, RunningJob>,
    /// Names in `new/` not read yet because they may still be being
    /// written, with when to look again.
    settling: HashMap<String, Instant>,
    /// Submissions read on arrival, for their claims (`ingest::Reads`).
    reads: ingest::Reads,
    /// Files were left unread in `new/` for want of room (`max_queued`):
    /// `new/` is listed again once the queue has drained (see `admit`).
    backlog: bool,
    /// Jobs in `running/` that a live process not ours holds (another
    /// daemon, or the escaped children of a dead one's task): not ours to
    /// end, looked at again by recovery while any remain.
    held: HashSet<String>,
    /// When recovery looks at `running/` again: soon while a job is held
    /// by someone else, else every `lease`.
    next_held_check: Option<Instant>,
    /// When the leases of our claimed jobs are refreshed next (every
    /// `lease / 3`): daemons of other hosts see only those.
    next_lease: Option<Instant>,
    /// A sender into the loop's mailbox, for HTTP's health checks.
    tx: mailbox::Tx<Event>,
    /// The loop's one inbox: every thread reports here.
    rx: mailbox::Rx<Event>,
    /// Set by SIGTERM or SIGINT: when tasks still running are stopped.
    /// While set nothing starts, and the loop ends once nothing runs.
    draining: Option<Instant>,
    /// When `new/` and `cancel/` are listed again (`rescan`), for file
    /// systems whose changes inotify does not see.
    next_rescan: Option<Instant>,
    /// Whether a `[mail]` section is configured: records with `email` then
    /// say `mail = "pending"` and go to the mailer.
    mail_enabled: bool,
    /// The commit thread, which writes every record off this thread.
    committer: Committer,
    /// The thread that watches every task's pipes and exit.
    supervisor: runner::Supervisor,
    /// Starts every thread and reports its end; told when the daemon
    /// ends them itself, so that those ends are not reported.
    threads: Threads,
    /// Set while the spool's file system is full (the commit thread says
    /// so, or a start found it so): nothing starts until it clears.
    disk_full: bool,
    /// Jobs claimed whose task could not start for want of room: started
    /// first once there is room, never ended for it.
    stalled: Vec<start::Stalled>,
    /// A thread that died: the loop ends at once and the daemon exits 75.
    died: Option<Stopped>,
    /// Where snapshots go for HTTP and the report to read.
    board: Board,
    /// systemd's notify socket (READY, STATUS, STOPPING, WATCHDOG).
    notifier: Notifier,
    /// When systemd's watchdog is told next that the loop is alive.
    next_watchdog: Option<Instant>,
    /// Something a snapshot shows changed since the last one was published.
    dirty: bool,
    /// When `report.html` is due to be written again; `None` while it says
    /// what the board does.
    report_due: Option<Instant>,
    /// When `report.html` was last written: writes are [`REPORT_EVERY`]
    /// apart at least.
    last_report: Option<Instant>,
    /// The latest finished jobs, newest first: the snapshot's rows.
    recent: VecDeque<FinishedRow>,
    /// Jobs finished since start, by type and status: `/metrics` counters.
    finished_counts: BTreeMap<(String, Status), u64>,
    /// Run times of jobs finished since start, by type: `/metrics`.
    durations: BTreeMap<String, Histogram>,
    /// The last hour of finishes and the latest failures: the report's
    /// chart, per-type figures and failures list. In an `Arc` so that a
    /// snapshot shares it; copied only when a finish changes it after.
    history: Arc<History>,
    /// The last `STATUS=` sent to systemd, not to send it again unchanged.
    last_status_line: String,
    /// Every schedule's next tick and last fired job (`schedules`).
    ticker: schedules::Ticker,
    /// Inotify on `new/`, `cancel/` and `pause/`, read by the loop itself.
    watcher: watch::Watcher,
    /// Events read from the folders, not handled yet: at most what one
    /// read gave (the kernel's queue) plus a batch ([`BATCH`]).
    folder_events: VecDeque<Fs>,
}

impl Daemon {
    /// The daemon's whole life: starts its threads, recovers `running/`,
    /// reads `new/`, binds HTTP, says READY, then runs until SIGTERM or
    /// SIGINT has drained the running jobs and every record is written.
    pub fn run(config: Config, overrides: Overrides) -> Result<(), Fatal> {
        let mut daemon = Daemon::new(config, overrides)?;
        // Before recovery: a dead daemon's job cgroups may still hold the
        // processes that keep its jobs locked.
        daemon.supervisor.remove_dead_cgroups();
        daemon.spool.clean_dead_tmp();
        daemon.read_pauses();
        daemon.describe_types();
        daemon.recover();
        daemon.scan_new(true);
        daemon.scan_cancel();
        daemon.next_rescan = daemon
            .config
            .rescan
            .map(|d| time::deadline(Instant::now(), d));
        // Bound only now, so that an answer means the spool has been read.
        let _http = daemon.start_http()?;

        daemon.start_schedules();
        daemon.tick();
        daemon.publish();
        crate::log!(
            "raccoond {}: ready, spool {}, total {}, {} queued, {} running",
            env!("CARGO_PKG_VERSION"),
            daemon.spool.root().display(),
            daemon.config.total,
            daemon.queue.len(),
            daemon.running.len()
        );
        daemon.notifier.send("READY=1");
        daemon.notify_status();

        daemon.serve();
        daemon.threads.closing();
        if let Some(dead) = daemon.died.take() {
            // No drain: the part that died may be the one a drain needs.
            // What was not written is recovered at the next start.
            daemon.committer.abandon();
            return Err(Fatal::Temporary(format!(
                "the {} thread {}; exiting so that it is started again (recovery takes over)",
                dead.name, dead.why
            )));
        }
        daemon.committer.flush();
        daemon.write_report();
        crate::log!("raccoond: stopped");
        Ok(())
    }

    /// Opens the spool and starts every thread that reports to the loop.
    fn new(config: Config, overrides: Overrides) -> Result<Daemon, Fatal> {
        let spool = Spool::open(&config.spool, config.fsync)
            .map_err(|e| Fatal::Temporary(format!("spool: {e}")))?
            .with_host(&config.host);
        let (tx, rx) = mailbox::mailbox()
            .map_err(|e| Fatal::Temporary(format!("cannot make the loop's mailbox: {e}")))?;
        let to_loop = tx.clone();
        let threads = Threads::new(move |dead| {
            let _ = to_loop.send(Event::ThreadDied(dead));
        });
        let config = Arc::new(config);
        let inbox = commit::Inbox::default();
        let mailer = match &config.mail {
            Some(m) => Some(
                Mailer::start(&threads, m, spool.clone(), inbox.mail_outcomes())
                    .map_err(|e| Fatal::Config(format!("[mail] {e}")))?,
            ),
            None => None,
        };
        let mail_enabled = mailer.is_some();

        let watcher = watch::Watcher::start(&watch::Watched {
            new: spool.new_dir(),
            cancel: spool.cancel_dir(),
            pause: spool.pause_dir(),
        })
        .map_err(|e| Fatal::Temporary(format!("cannot watch the spool: {e}")))?;
        control::start_signals(&tx, &threads)?;

        let to_loop = tx.clone();
        let sweeper = sweeper::start(&threads, spool.clone(), move |scan| {
            let _ = to_loop.send(Event::FirstScan(scan));
        })
        .map_err(|e| Fatal::Temporary(format!("cannot start the sweeper: {e}")))?;
        let to_loop = tx.clone();
        let peers = Peers {
            sweeper,
            mailer,
            on_full: Box::new(move |full| {
                let _ = to_loop.send(Event::DiskFull(full));
            }),
        };
        let committer = Committer::start(&threads, inbox, spool.clone(), peers)
            .map_err(|e| Fatal::Temporary(format!("cannot start the commit thread: {e}")))?;

        let to_loop = tx.clone();
        let supervisor = runner::Supervisor::start(&threads, move |id, output| {
            let _ = to_loop.send(Event::Exited { id, output });
        })
        .map_err(|e| Fatal::Temporary(format!("cannot start the supervisor: {e}")))?;

        let notifier = Notifier::from_env();
        let pool = Pool::new(&config.resources);
        Ok(Daemon {
            board: Board::new(config.clone()),
            config,
            overrides,
            spool,
            queue: Queue::default(),
            ended: depends::Ended::default(),
            pauses: pause::Pauses::default(),
            pool,
            running: HashMap::new(),
            settling: HashMap::new(),
            reads: ingest::Reads::default(),
            backlog: false,
            held: HashSet::new(),
            next_held_check: None,
            next_lease: None,
            tx,
            rx,
            draining: None,
            next_rescan: None,
            mail_enabled,
            committer,
            supervisor,
            threads,
            disk_full: false,
            stalled: Vec::new(),
            died: None,
            next_watchdog: notifier.watchdog.map(|_| Instant::now()),
            notifier,
            dirty: true,
            report_due: None,
            last_report: None,
            recent: VecDeque::new(),
            finished_counts: BTreeMap::new(),
            durations: BTreeMap::new(),
            history: Arc::default(),
            last_status_line: String::new(),
            ticker: schedules::Ticker::default(),
            watcher,
            folder_events: VecDeque::new(),
        })
    }

    /// The loop: waits for events until the next deadline, handles a batch,
    /// does what is due. Ends once draining has nothing left running.
    fn serve(&mut self) {
        loop {
            if self.draining.is_some() && self.running.is_empty() {
                self.release_stalled();
                return;
            }
            // One wait for the mailbox and the spool's folders; none while
            // folder events read earlier are still to be handled.
            let deadline = if self.folder_events.is_empty() {
                self.next_deadline()
            } else {
                Some(Instant::now())
            };
            let [folders] = self.rx.wait([self.watcher.fd()], deadline);
            // A batch of each before the (comparatively costly) tick.
            for _ in 0..BATCH {
                match self.rx.try_recv() {
                    Ok(ev) => self.handle(ev),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            // Read only while few wait: a burst waits in the kernel's
            // queue, and one that overflows it is found by listing new/.
            if folders && self.folder_events.len() < BATCH {
                self.folder_events.extend(self.watcher.read());
            }
            for _ in 0..BATCH {
                let Some(fs) = self.folder_events.pop_front() else {
                    break;
                };
                self.handle(Event::Fs(fs));
            }
            if self.died.is_some() {
                return;
            }
            self.tick();
            if self.dirty {
                self.publish();
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Fs(Fs::Ready(name)) => {
                self.settling.remove(&name);
                self.ingest(&name, false);
            }
            Event::Fs(Fs::Seen(name)) => {
                if !self.queue.contains(&name)
                    && (self.settling.contains_key(&name) || self.admit_one())
                {
                    self.settling
                        .entry(name)
                        .or_insert_with(|| Instant::now() + SETTLE);
                }
            }
            Event::Fs(Fs::RawName(raw)) => self.adopt_raw_name(&raw),
            Event::Fs(Fs::Overflow) => {
                crate::log!("watch: events were lost; scanning new/, cancel/ and pause/");
                self.scan_new(false);
                self.scan_cancel();
                self.read_pauses();
            }
            Event::Fs(Fs::Pause) => self.read_pauses(),
            Event::Fs(Fs::Cancel(id)) => self.cancel(&id),
            Event::Exited { id, output } => self.exited(&id, output),
            Event::Signal(sig) => self.signal(sig),
            Event::FirstScan(scan) => self.first_scan(scan),
            Event::Ping(reply) => {
                let _ = reply.try_send(());
            }
            Event::DiskFull(full) => {
                self.disk_full = full;
                // Once there is room, the report is written again.
                self.dirty = true;
            }
            Event::ThreadDied(dead) => {
                crate::log!(
                    "raccoond: the {} thread {}; exiting with 75 (EX_TEMPFAIL) so that it is started again",
                    dead.name,
                    dead.why
                );
                self.died = Some(dead);
            }
        }
    }

    /// Everything that is due: settled files, rescans, held jobs, timeouts,
    /// kills, the drain deadline, schedules' ticks, then starting what may
    /// start, the watchdog and the report.
    fn tick(&mut self) {
        let now = Instant::now();
        if !self.settling.is_empty() {
            let due: Vec<String> = self
                .settling
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for name in due {
                self.settling.remove(&name);
                self.ingest(&name, true);
            }
        }
        if let Some(t) = self.next_rescan
            && t <= now
        {
            self.scan_new(false);
            self.scan_cancel();
            self.read_pauses();
            self.recheck_parents();
            self.next_rescan = self.config.rescan.map(|d| time::deadline(now, d));
        }
        if self.next_held_check.is_some_and(|t| t <= now) {
            self.next_held_check = None;
            self.recover();
        }
        if self.next_lease.is_none_or(|t| t <= now) {
            self.refresh_leases();
            self.next_lease = Some(time::deadline(now, self.config.lease_refresh()));
        }
        let drain_due = self.draining.is_some_and(|t| t <= now);
        let grace = self.config.kill_grace;
        for (id, r) in self.running.iter_mut() {
            if let Some(sent) = r.term_sent {
                if time::deadline(sent, grace) <= now {
                    crate::log!(
                        "{id}: still alive {} after SIGTERM; SIGKILL",
                        format_duration(grace)
                    );
                    r.kill();
                }
                continue;
            }
            if r.stop.is_none() && r.deadline.is_some_and(|d| d <= now) {
                crate::log!("{id}: timed out; SIGTERM to the process group");
                r.term(Stop::Timeout);
            } else if drain_due && r.stop.is_none() {
                crate::log!("{id}: stop_timeout passed; SIGTERM to the process group");
                r.term(Stop::Drain);
            }
        }
        self.fire_schedules();
        self.start_ready();
        // Jobs that started left room for files waiting unread in new/.
        self.refill();
        if let Some(t) = self.next_watchdog
            && t <= now
        {
            self.notifier.send("WATCHDOG=1");
            self.next_watchdog = self.notifier.watchdog.map(|w| time::deadline(now, w));
        }
        if self.report_due.is_some_and(|t| t <= now) {
            if self.disk_full {
                // It could not be written; the next publish after the
                // disk has room schedules it again.
                self.report_due = None;
            } else {
                self.write_report();
            }
        }
    }

    /// Refreshes the lease of every job this daemon holds (running, or
    /// claimed and waiting for room): its file's modification time.
    fn refresh_leases(&self) {
        let holds = self
            .running
            .iter()
            .map(|(id, r)| (id.as_str(), &r.hold))
            .chain(self.stalled.iter().map(|s| (s.id(), s.hold())));
        for (id, hold) in holds {
            if let Err(e) = hold.refresh_lease() {
                crate::log!("{id}: cannot refresh its lease: {e}");
            }
        }
    }

    /// The earliest of everything [`Daemon::tick`] waits for.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.settling.values().min().copied());
        consider(self.next_rescan);
        consider(self.next_held_check);
        consider(self.next_lease);
        consider(self.next_watchdog);
        consider(self.report_due);
        consider(
            self.ticker
                .wakeup()
                .map(|t| time::instant_at(Instant::now(), time::now(), t)),
        );
        if self.draining.is_none() {
            consider(
                self.queue
                    .next_wakeup()
                    .map(|t| time::instant_at(Instant::now(), time::now(), t)),
            );
        } else if let Some(d) = self.draining {
            consider(Some(d));
        }
        let grace = self.config.kill_grace;
        for r in self.running.values() {
            consider(r.term_sent.map(|t| time::deadline(t, grace)));
            if r.stop.is_none() {
                consider(r.deadline);
            }
        }
        next
    }
}
