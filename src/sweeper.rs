//! Deletes what has expired: records past `expires` (with their output and
//! files) and files left in `tmp/` for more than 36 hours.
//!
//! Runs on its own thread, under `SCHED_IDLE`, so that reading every
//! record at start, which grows with `done/`, never delays the main loop
//! nor takes a core from the jobs. It learns of new records from the commit
//! thread through a channel and sleeps until the next expiry or the next
//! look at `tmp/`; it never polls. Its first scan of `done/` also tells the
//! loop (a [`FirstScan`]) the latest finished jobs and the latest
//! failures, for the report, and the records whose mail is still
//! `pending`.
//!
//! Never writes a record and never decides anything about a job: an
//! expired record is deleted through the spool module, after reading it
//! again (a record may have been rewritten with a later `expires`).
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::history;
use crate::spool::Spool;
use crate::status::{FinishedRow, INDEX_ROWS, IndexRow, ROWS};
use crate::threads::Threads;
use crate::time;

/// The maildir rule for abandoned files in `tmp/`.
pub const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);
/// How often `tmp/` is looked at even when nothing in it is near its age.
const TMP_SCAN_EVERY: Duration = Duration::from_secs(3600);

/// What the first scan of `done/` found, for the loop.
#[derive(Debug, Default)]
pub struct FirstScan {
    /// The latest finished jobs, newest first: the report's rows until this
    /// run has finished enough of its own.
    pub recent: Vec<FinishedRow>,
    /// Ids of records whose mail is still `pending`: an earlier run ended
    /// before it was sent.
    pub mail_pending: Vec<String>,
    /// The latest failures, newest first, at most [`history::FAILURES`]:
    /// the report's failures list, which goes further back than `recent`.
    pub failures: Vec<FinishedRow>,
    /// The newest records, newest first, at most `INDEX_ROWS`: the
    /// board's finished index.
    pub index: Vec<IndexRow>,
    /// Whether `index` holds every record found.
    pub index_complete: bool,
}

/// Starts the sweeper (a thread supervised by `threads`); send it
/// `(id, expires)` for every record written. It ends when every sender is
/// gone.
pub fn start<F>(
    threads: &Threads,
    spool: Spool,
    on_scan: F,
) -> std::io::Result<Sender<(String, SystemTime)>>
where
    F: FnOnce(FirstScan) + Send + 'static,
{
    let (tx, rx) = crossbeam_channel::unbounded();
    threads.spawn("sweeper", move || run(spool, rx, on_scan))?;
    Ok(tx)
}

fn run<F: FnOnce(FirstScan)>(spool: Spool, rx: Receiver<(String, SystemTime)>, on_scan: F) {
    // Reading every record at start is background work: it must not take
    // the cores from the jobs. SCHED_IDLE runs this thread only when a
    // core has nothing else to do (Linux schedules threads one by one).
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a
    // valid parameter.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        }
    }
    let mut index: BTreeSet<(SystemTime, String)> = BTreeSet::new();
    let mut found = FirstScan::default();
    let mut recent: Vec<FinishedRow> = Vec::new();
    let mut newest: Vec<IndexRow> = Vec::new();
    // Records a listing would show that the index cannot place.
    let mut unplaced = false;
    for id in spool.done_ids().unwrap_or_default() {
        let rec = match spool.read_record(&id) {
            Ok(r) => r,
            Err(e) => {
                crate::log!("{id}: sweeper: cannot read record: {e}");
                continue;
            }
        };
        if let Some(exp) = rec.expires_at() {
            index.insert((exp, id.clone()));
        }
        if rec.mail.as_deref() == Some("pending") {
            found.mail_pending.push(id.clone());
        }
        if let Some(finished) = rec.finished_at() {
            // By its file name, as listings name it: the record's own
            // `id` is not trusted to match.
            newest.push(IndexRow {
                id: id.as_str().into(),
                kind: rec.kind.as_str().into(),
                status: rec.status,
                finished,
            });
            recent.push(FinishedRow {
                duration: rec.duration(),
                id: rec.id,
                kind: rec.kind,
                status: rec.status,
                finished,
                exit_code: rec.exit_code,
                signal: rec.signal,
                error: rec.error,
                usage: rec.usage,
                submitter: rec.submitter,
            });
        } else {
            unplaced = true;
        }
    }
    recent.sort_by_key(|r| std::cmp::Reverse(r.finished));
    found.failures = recent
        .iter()
        .filter(|r| r.status.is_failure())
        .take(history::FAILURES)
        .cloned()
        .collect();
    recent.truncate(ROWS);
    found.recent = recent;
    newest.sort_by(|a, b| b.finished.cmp(&a.finished).then_with(|| b.id.cmp(&a.id)));
    found.index_complete = !unplaced && newest.len() <= INDEX_ROWS;
    newest.truncate(INDEX_ROWS);
    found.index = newest;
    on_scan(found);

    let mut next_tmp = Instant::now();
    loop {
        let now = time::now();
        while let Some((exp, _)) = index.first() {
            if *exp > now {
                break;
            }
            let Some((_, id)) = index.pop_first() else {
                break;
            };
            // The record may have been rewritten since; trust the file.
            match spool.read_record(&id) {
                Ok(rec) if rec.expires_at().is_some_and(|e| e > now) => {
                    if let Some(e) = rec.expires_at() {
                        index.insert((e, id));
                    }
                    continue;
                }
                _ => {}
            }
            match spool.delete_finished(&id) {
                Ok(()) => crate::log!("{id}: expired, deleted"),
                Err(e) => crate::log!("{id}: cannot delete expired record: {e}"),
            }
        }
        if Instant::now() >= next_tmp {
            let oldest = spool.clean_tmp(now, TMP_MAX_AGE);
            let until_oldest = oldest
                .and_then(|o| time::add(o, TMP_MAX_AGE).duration_since(now).ok())
                .unwrap_or(TMP_SCAN_EVERY);
            next_tmp = time::deadline(
                Instant::now(),
                until_oldest.min(TMP_SCAN_EVERY) + Duration::from_secs(1),
            );
        }
        let next_expiry = index
            .first()
            .map(|(exp, _)| time::instant_at(Instant::now(), time::now(), *exp));
        let deadline = next_expiry.map_or(next_tmp, |e| e.min(next_tmp));
        match rx.recv_deadline(deadline) {
            Ok((id, exp)) => {
                index.insert((exp, id));
                // Take whatever else is waiting before sleeping again.
                while let Ok((id, exp)) = rx.try_recv() {
                    index.insert((exp, id));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
