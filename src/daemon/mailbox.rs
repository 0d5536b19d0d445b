//! The main loop's mailbox: every thread's events in one channel, and a
//! doorbell (an `eventfd`) rung after each, so that the loop waits in one
//! `poll(2)` for events and for descriptors of its own (the spool's
//! inotify descriptor), with no thread in between to wake first.
//!
//! Why: a submission used to wake the watcher thread, which woke the loop;
//! each wake-up of an idle CPU is tens of microseconds on a virtual
//! machine, and the watcher's work was a copy of an event into the channel.
//!
//! Owns the channel and the eventfd. Never blocks a sender (the channel is
//! unbounded; the eventfd's counter saturates after 2^64 - 2 rings, and a
//! ring that finds it full is not needed).
//!
//! Invariant: no wake-up is lost. A sender queues, then rings; the loop
//! clears the bell, then empties the queue. An event queued after the
//! clearing rings again, so the next wait returns at once.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The sending side: any number of threads, each with a clone.
pub struct Tx<T> {
    tx: Sender<T>,
    bell: Arc<OwnedFd>,
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Tx {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

/// The loop's side.
pub struct Rx<T> {
    rx: Receiver<T>,
    bell: Arc<OwnedFd>,
}

/// A new mailbox.
pub fn mailbox<T>() -> io::Result<(Tx<T>, Rx<T>)> {
    // SAFETY: no pointers; the descriptor returned is checked, then owned.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("eventfd: {e}")));
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let bell = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let (tx, rx) = crossbeam_channel::unbounded();
    Ok((
        Tx {
            tx,
            bell: bell.clone(),
        },
        Rx { rx, bell },
    ))
}

impl<T> Tx<T> {
    /// Queues `v` and rings; `Err(v)` once the loop's side is gone.
    pub fn send(&self, v: T) -> Result<(), T> {
        self.tx.send(v).map_err(|e| e.0)?;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. EAGAIN (the counter is
        // full) means the bell is rung already.
        let _ = unsafe {
            libc::write(
                self.bell.as_raw_fd(),
                (&raw const one).cast::<libc::c_void>(),
                8,
            )
        };
        Ok(())
    }
}

impl<T> Rx<T> {
    /// The next queued event, without waiting.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }

    /// Waits until an event is queued, one of `also` is readable, or
    /// `deadline` (none: no limit) has come. Returns which of `also` are
    /// readable (all false when an event or the deadline ended the wait).
    /// Clears the bell: the events it rang for are in the queue.
    pub fn wait<const N: usize>(
        &self,
        also: [BorrowedFd<'_>; N],
        deadline: Option<Instant>,
    ) -> [bool; N] {
        let mut ready = [false; N];
        if !self.rx.is_empty() {
            self.clear();
            return ready;
        }
        let mut fds: Vec<PollFd<'_>> = std::iter::once(self.bell.as_fd())
            .chain(also)
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let timeout = deadline.map_or(PollTimeout::NONE, |d| {
            // To the next millisecond: waking early would only wait again.
            let left = d.saturating_duration_since(Instant::now());
            PollTimeout::try_from(left + Duration::from_nanos(999_999)).unwrap_or(PollTimeout::MAX)
        });
        // EINTR or an error of poll itself: the loop looks at everything
        // and waits again.
        if poll(&mut fds, timeout).is_ok() {
            for (i, fd) in fds.iter().enumerate().skip(1) {
                ready[i - 1] = fd
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR));
            }
        }
        self.clear();
        ready
    }

    /// Reads the bell's counter back to zero.
    fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN: it was clear.
        let _ = unsafe {
            libc::read(
                self.bell.as_raw_fd(),
                (&raw mut n).cast::<libc::c_void>(),
                8,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_wait_ends_at_its_deadline_when_nothing_comes() {
        let (_tx, rx) = mailbox::<u32>().unwrap();
        let began = Instant::now();
        let ready = rx.wait([], Some(began + Duration::from_millis(30)));
        assert!(ready.is_empty());
        assert!(began.elapsed() >= Duration::from_millis(30));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn an_event_sent_from_another_thread_ends_a_wait_without_deadline() {
        let (tx, rx) = mailbox::<u32>().unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(7).unwrap();
            tx
        });
        rx.wait([], None);
        assert_eq!(rx.try_recv().ok(), Some(7));
        drop(sender.join().unwrap());
    }

    #[test]
    fn no_wake_up_is_lost_between_the_clearing_and_the_emptying() {
        // Many events from two threads while the loop waits (with no
        // deadline), clears and empties: every one is received. A lost
        // ring would leave the last wait hanging.
        let (tx, rx) = mailbox::<u32>().unwrap();
        let senders: Vec<_> = (0..2)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        tx.send(t * 10_000 + i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut got = 0;
            while got < 10_000 {
                rx.wait([], None);
                while rx.try_recv().is_ok() {
                    got += 1;
                }
            }
            let _ = done_tx.send(got);
        });
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(30)), Ok(10_000));
        for s in senders {
            s.join().unwrap();
        }
    }

    #[test]
    fn a_readable_descriptor_ends_the_wait_and_is_named() {
        let (_tx, rx) = mailbox::<u32>().unwrap();
        let (r, w) = std::io::pipe().unwrap();
        let (quiet, _quiet_w) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut &w, b"x").unwrap();
        let ready = rx.wait(
            [quiet.as_fd(), r.as_fd()],
            Some(Instant::now() + Duration::from_secs(5)),
        );
        assert_eq!(ready, [false, true]);
    }

    #[test]
    fn a_send_after_the_loop_is_gone_gives_the_event_back() {
        let (tx, rx) = mailbox::<u32>().unwrap();
        drop(rx);
        assert_eq!(tx.send(3), Err(3));
    }
}
