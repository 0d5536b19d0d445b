//! Keeping the HTTP threads alive: each one that ends while the server is
//! not stopping (a panic that escaped, a poll that could not be made) is
//! started again in place, after a backoff, and the restart is logged.
//!
//! HTTP is the one part of the daemon that heals in place rather than
//! taking the daemon down (SPEC §8 says a dead thread ends the daemon with
//! 75; §9 says HTTP recovers by itself): a client can only reach these
//! threads, and nothing the scheduler needs is lost with them, so
//! restarting them loses at most the connections they held.
//!
//! Never touches a connection or a request; knows threads by name only.
//!
//! Invariants: a thread is restarted at most once per backoff, which
//! doubles from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`] while it keeps
//! ending soon after it starts, so that a thread that dies at once cannot
//! spin; a thread that cannot be spawned (a task limit such as systemd's
//! `TasksMax`) is tried again the same way; nothing is restarted once the
//! server stops.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// The wait before the first restart of a thread.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A thread that ran this long before it ended starts again from the
/// first backoff: it was not dying at once.
const STEADY: Duration = Duration::from_secs(60);

/// One thread to keep running: a name for the logs and the body it runs
/// (again) each time it starts.
pub struct Kept {
    pub name: String,
    pub body: Arc<dyn Fn() + Send + Sync>,
}

enum Msg {
    /// The thread of that index ended; whether by a panic.
    Ended(usize, bool),
    Stop,
}

/// The keeper thread; dropping it (or [`Keeper::stop`]) ends it.
pub struct Keeper {
    tx: Sender<Msg>,
}

impl Keeper {
    /// Starts every thread, then the keeper that restarts them. A thread
    /// that cannot be started now is an error: the server does not start.
    /// The keeper runs as a thread supervised by `sup` (if it died, nothing
    /// would heal HTTP any more, so its end ends the daemon); the threads it
    /// keeps are its own. The test-only fault switch of `sup` applies to
    /// a kept thread's first start only, so that its restart can be seen.
    pub fn start(
        threads: Vec<Kept>,
        stopping: Arc<AtomicBool>,
        sup: &crate::threads::Threads,
    ) -> io::Result<Keeper> {
        let (tx, rx) = crossbeam_channel::unbounded();
        for (i, kept) in threads.iter().enumerate() {
            let first = match sup.fault(&kept.name) {
                Some(after) => {
                    let body = kept.body.clone();
                    let doomed: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                        let _ = &body;
                        std::thread::sleep(after);
                        panic!("{}: this thread was told to die", crate::threads::FAULT_ENV);
                    });
                    Kept {
                        name: kept.name.clone(),
                        body: doomed,
                    }
                }
                None => Kept {
                    name: kept.name.clone(),
                    body: kept.body.clone(),
                },
            };
            spawn(i, &first, &tx).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start {}: {e}", kept.name))
            })?;
        }
        let keeper_tx = tx.clone();
        sup.spawn("http-keeper", move || {
            keep(threads, &rx, &keeper_tx, &stopping)
        })?;
        Ok(Keeper { tx })
    }

    /// Tells the keeper to restart nothing more and end.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Says that its thread ended, however it ended (it is dropped while a
/// panic unwinds too).
struct Sentinel {
    index: usize,
    tx: Sender<Msg>,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self
            .tx
            .send(Msg::Ended(self.index, std::thread::panicking()));
    }
}

fn spawn(index: usize, kept: &Kept, tx: &Sender<Msg>) -> io::Result<()> {
    let body = kept.body.clone();
    let sentinel = Sentinel {
        index,
        tx: tx.clone(),
    };
    std::thread::Builder::new()
        .name(kept.name.clone())
        .spawn(move || {
            let _sentinel = sentinel;
            body();
        })
        .map(drop)
}

/// Where one thread is in its restarts.
struct Life {
    /// When it last started.
    started: Instant,
    /// The wait before its next restart.
    backoff: Duration,
    /// When it is due to start again, while it is down.
    due: Option<Instant>,
    restarts: u64,
}

fn keep(threads: Vec<Kept>, rx: &Receiver<Msg>, tx: &Sender<Msg>, stopping: &AtomicBool) {
    let now = Instant::now();
    let mut lives: Vec<Life> = threads
        .iter()
        .map(|_| Life {
            started: now,
            backoff: FIRST_BACKOFF,
            due: None,
            restarts: 0,
        })
        .collect();
    loop {
        let next = lives.iter().filter_map(|l| l.due).min();
        let msg = match next {
            Some(t) => rx.recv_deadline(t),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match msg {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Ended(i, panicked)) => {
                let (Some(life), Some(kept)) = (lives.get_mut(i), threads.get(i)) else {
                    continue;
                };
                if life.started.elapsed() >= STEADY {
                    life.backoff = FIRST_BACKOFF;
                }
                let how = if panicked { "panicked" } else { "ended" };
                crate::log!(
                    "http: thread {} {how}; starting it again in {}",
                    kept.name,
                    crate::time::format_duration(life.backoff)
                );
                life.due = Some(Instant::now() + life.backoff);
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        for (i, (life, kept)) in lives.iter_mut().zip(&threads).enumerate() {
            if life.due.is_none_or(|t| t > now) {
                continue;
            }
            let backoff = life.backoff;
            life.backoff = (backoff * 2).min(MAX_BACKOFF);
            match spawn(i, kept, tx) {
                Ok(()) => {
                    life.restarts += 1;
                    life.started = now;
                    life.due = None;
                    crate::log!(
                        "http: thread {} started again (restart {})",
                        kept.name,
                        life.restarts
                    );
                }
                Err(e) => {
                    crate::log!(
                        "http: cannot start thread {} again: {e}; trying in {}",
                        kept.name,
                        crate::time::format_duration(life.backoff)
                    );
                    life.due = Some(now + life.backoff);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_thread_that_dies_is_started_again_until_the_keeper_stops() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
        let counted = runs.clone();
        let body = move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = done_tx.send(n);
            if n < 3 {
                panic!("run {n} dies");
            }
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let keeper = Keeper::start(
            vec![Kept {
                name: "test-kept".into(),
                body: Arc::new(body),
            }],
            stopping.clone(),
            &crate::threads::Threads::new(|_| {}),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Panics, panics, then ends normally: started again each time.
        for want in 1..=4 {
            assert_eq!(done_rx.recv_deadline(deadline), Ok(want));
        }
        stopping.store(true, Ordering::SeqCst);
        keeper.stop();
        // The fourth run ended too, but no fifth starts once stopped.
        assert!(
            done_rx.recv_timeout(FIRST_BACKOFF * 8).is_err(),
            "restarted after stop"
        );
    }
}
