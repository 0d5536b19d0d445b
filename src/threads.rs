//! Supervised threads: every long-lived thread of the daemon is started
//! here, under a name, and its end is noticed.
//!
//! [`Threads::spawn`] starts a named thread whose body runs under
//! `catch_unwind`; when it returns or panics, the end is written into the
//! [`Health`] board (which `/healthz` reads) and reported through the
//! callback given to [`Threads::new`] (the daemon's loop, which logs it and
//! exits with 75 so that the service manager starts it again and recovery
//! takes over). A thread that is not ours (one a library starts) carries
//! a [`Guard`] in the closure it runs, which reports when that thread drops
//! it. Once the daemon ends its threads itself ([`Threads::closing`]),
//! ends are expected and nothing is reported.
//!
//! Owns the names of threads, the board of parts that stopped working, and
//! the test-only fault switch. Never restarts a thread: a daemon missing a
//! part cannot keep its promises, and a restart with recovery can.
//!
//! Test-only: `RACCOON_FAULT_KILL_THREAD=NAME[:MS]`, read once when the
//! daemon builds its [`Threads`], makes the thread named `NAME` do none of
//! its work and panic `MS` milliseconds (default 1000) after it starts, so
//! that tests can watch the daemon notice a dead thread. Nothing in
//! production sets it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

/// The test-only fault switch (see the module's header).
pub const FAULT_ENV: &str = "RACCOON_FAULT_KILL_THREAD";

/// A part of the daemon that stopped working, and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// The thread's name (`commit`, `http-3`), or the part's (`scheduler`).
    pub name: String,
    /// What happened: `panicked: …`, `returned`, or the state it is in.
    pub why: String,
}

/// Parts of the daemon not working right now, by name: what `/healthz`
/// shows. Written by supervised threads as they die and by the commit
/// thread while records wait for room; read by HTTP workers.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, String>>>);

impl Health {
    /// Says that `part` is not working, and why (replacing what it said).
    pub fn set(&self, part: &str, why: impl Into<String>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(part.to_string(), why.into());
    }

    /// Says that `part` works again.
    pub fn clear(&self, part: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(part);
    }

    /// Every part not working, by name.
    pub fn problems(&self) -> Vec<Stopped> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(name, why)| Stopped {
                name: name.clone(),
                why: why.clone(),
            })
            .collect()
    }
}

/// Starts and watches the daemon's threads. Cheap to clone.
#[derive(Clone)]
pub struct Threads {
    /// What every clone shares.
    shared: Arc<Shared>,
}

struct Shared {
    /// Told of each thread that ended before the daemon ended it (the
    /// loop's channel).
    report: Box<dyn Fn(Stopped) + Send + Sync>,
    /// Where ends are written for `/healthz`, even before the loop hears.
    health: Health,
    /// Set once the daemon stops its threads itself: ends after it are
    /// expected and not reported.
    closing: AtomicBool,
    /// The test-only fault: which thread dies, and how long after it starts.
    fault: Option<(String, Duration)>,
}

impl Threads {
    /// Watches threads, telling `report` of each that ends unasked. Reads
    /// the test-only fault switch from the environment.
    pub fn new<R>(report: R) -> Threads
    where
        R: Fn(Stopped) + Send + Sync + 'static,
    {
        let fault = std::env::var(FAULT_ENV).ok().and_then(|v| parse_fault(&v));
        if let Some((name, after)) = &fault {
            crate::log!(
                "raccoond: {FAULT_ENV} is set (test only): the {name} thread panics {} ms after it starts",
                after.as_millis()
            );
        }
        Threads {
            shared: Arc::new(Shared {
                report: Box::new(report),
                health: Health::default(),
                closing: AtomicBool::new(false),
                fault,
            }),
        }
    }

    /// The board of parts not working, shared with whoever reads or
    /// writes it.
    pub fn health(&self) -> Health {
        self.shared.health.clone()
    }

    /// The test-only fault for the thread `name`, if the switch names it:
    /// how long after it starts it must die. For threads started by a
    /// helper of their own (HTTP's keeper), which apply it themselves.
    pub fn fault(&self, name: &str) -> Option<Duration> {
        self.shared
            .fault
            .as_ref()
            .filter(|(n, _)| n == name)
            .map(|(_, after)| *after)
    }

    /// Starts a thread named `name` running `f`; its end, by return or by
    /// panic, is reported unless the daemon is closing.
    pub fn spawn<F>(&self, name: &str, f: F) -> io::Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let fault = self.fault(name);
        let guard = self.guard(name);
        install_panic_hook();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                SUPERVISED.with(|s| *s.borrow_mut() = Some(guard));
                let body = AssertUnwindSafe(move || {
                    if let Some(after) = fault {
                        // Test only (see the header): a thread that dies
                        // with its state still alive, as a real panic would.
                        let _state = f;
                        std::thread::sleep(after);
                        panic!("{FAULT_ENV}: this thread was told to die");
                    }
                    f()
                });
                let why = match panic::catch_unwind(body) {
                    Ok(()) => "returned".to_string(),
                    Err(p) => format!("panicked: {}", panic_text(p.as_ref())),
                };
                // Already reported by the panic hook when it panicked.
                if let Some(guard) = SUPERVISED.with(|s| s.borrow_mut().take()) {
                    guard.ended(why);
                }
            })
    }

    /// A guard for a thread that is not ours to start: moved into the
    /// closure that thread runs, it reports the thread's end when dropped.
    pub fn guard(&self, name: &str) -> Guard {
        Guard {
            name: name.to_string(),
            threads: Some(self.clone()),
        }
    }

    /// The daemon is stopping its threads itself: from now on their ends
    /// are expected.
    pub fn closing(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
    }

    fn ended(&self, name: &str, why: String) {
        if self.shared.closing.load(Ordering::SeqCst) {
            return;
        }
        self.shared.health.set(name, why.clone());
        (self.shared.report)(Stopped {
            name: name.to_string(),
            why,
        });
    }
}

/// Reports the end of the thread that drops it (see [`Threads::guard`]).
pub struct Guard {
    /// The thread's name, as reported.
    name: String,
    /// `None` once the end has been reported.
    threads: Option<Threads>,
}

impl Guard {
    /// Reports the end now, with its cause.
    fn ended(mut self, why: String) {
        if let Some(t) = self.threads.take() {
            t.ended(&self.name, why);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(t) = self.threads.take() {
            let why = if std::thread::panicking() {
                "panicked"
            } else {
                "ended"
            };
            t.ended(&self.name, why.to_string());
        }
    }
}

thread_local! {
    /// The guard of the supervised thread running here, if this is one:
    /// taken by the panic hook, or by the thread's end.
    static SUPERVISED: RefCell<Option<Guard>> = const { RefCell::new(None) };
}

/// Reports a supervised thread's panic from the panic hook, before the
/// unwinding drops its state: otherwise the threads that notice it gone
/// (the sweeper, when the commit thread's sender is dropped) could be
/// reported first, and the log would name a consequence as the cause.
/// The hook that was there (which prints the panic) runs first.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            previous(info);
            let guard = SUPERVISED
                .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.take()))
                .ok()
                .flatten();
            if let Some(guard) = guard {
                guard.ended(format!("panicked: {}", panic_text(info.payload())));
            }
        }));
    });
}

/// `NAME` or `NAME:MS`; `None` when empty or the delay is not a number.
fn parse_fault(v: &str) -> Option<(String, Duration)> {
    let (name, ms) = match v.split_once(':') {
        Some((name, ms)) => (name, ms.trim().parse().ok()?),
        None => (v, 1000),
    };
    let name = name.trim();
    (!name.is_empty()).then(|| (name.to_string(), Duration::from_millis(ms)))
}

/// A panic's message, when it has one.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> (Threads, crossbeam_channel::Receiver<Stopped>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let threads = Threads::new(move |s| {
            let _ = tx.send(s);
        });
        (threads, rx)
    }

    const SOON: Duration = Duration::from_secs(10);

    #[test]
    fn a_thread_that_panics_or_returns_is_reported_by_name() {
        let (threads, rx) = watched();
        threads.spawn("boom", || panic!("on purpose")).unwrap();
        let s = rx.recv_timeout(SOON).unwrap();
        assert_eq!(s.name, "boom");
        assert_eq!(s.why, "panicked: on purpose");
        threads.spawn("quiet", || {}).unwrap();
        let s = rx.recv_timeout(SOON).unwrap();
        assert_eq!((s.name.as_str(), s.why.as_str()), ("quiet", "returned"));
        let names: Vec<String> = threads
            .health()
            .problems()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["boom", "quiet"]);
    }

    #[test]
    fn a_guard_reports_the_end_of_a_thread_that_is_not_ours() {
        let (threads, rx) = watched();
        let guard = threads.guard("library");
        std::thread::spawn(move || {
            let _kept = guard;
        })
        .join()
        .unwrap();
        assert_eq!(rx.recv_timeout(SOON).unwrap().why, "ended");
        let guard = threads.guard("library");
        let _ = std::thread::spawn(move || {
            let _kept = guard;
            panic!("inside notify");
        })
        .join();
        assert_eq!(rx.recv_timeout(SOON).unwrap().why, "panicked");
    }

    #[test]
    fn ends_after_closing_are_expected_and_not_reported() {
        let (threads, rx) = watched();
        threads.closing();
        threads.spawn("http-0", || {}).unwrap().join().unwrap();
        drop(threads.guard("library"));
        assert!(rx.try_recv().is_err());
        assert!(threads.health().problems().is_empty());
    }

    #[test]
    fn health_says_what_is_not_working_until_it_works_again() {
        let h = Health::default();
        h.set("commit", "the spool's file system is full");
        h.set("commit", "still full");
        assert_eq!(
            h.problems(),
            [Stopped {
                name: "commit".into(),
                why: "still full".into()
            }]
        );
        h.clear("commit");
        assert!(h.problems().is_empty());
    }

    #[test]
    fn the_fault_switch_names_a_thread_and_a_delay() {
        let ms = Duration::from_millis;
        for (v, want) in [
            ("commit", Some(("commit", ms(1000)))),
            ("commit:250", Some(("commit", ms(250)))),
            (" sweeper : 5 ", Some(("sweeper", ms(5)))),
            ("commit:soon", None),
            ("", None),
            (":10", None),
        ] {
            let got = parse_fault(v);
            assert_eq!(got.as_ref().map(|(n, d)| (n.as_str(), *d)), want, "{v:?}");
        }
    }
}
