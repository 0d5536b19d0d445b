//! Schedules in the loop: each tick of each `[schedules.NAME]` submits one
//! job, exactly once across all the daemons sharing the spool.
//!
//! At start, each schedule learns the newest tick fired on the spool and,
//! with `catch_up`, fires the latest tick missed while no daemon ran; then
//! the loop sleeps until the next tick (it is one of the loop's deadlines:
//! no polling) and fires what is due. After a reload, changed and new
//! schedules wait for their next tick (nothing is caught up).
//!
//! Firing a tick is decided on the spool, never by clocks agreeing:
//! 1. list the schedule's markers (`.ticks/NAME/`); a tick at or before
//!    the newest one was fired already, by this daemon or another
//!    (`schedule::may_claim`);
//! 2. claim it: create its marker with `O_CREAT | O_EXCL`; a daemon that
//!    finds it there stops;
//! 3. the one daemon that created it submits the job `NAME-<stamp>` (with
//!    `unique = NAME`) through `Spool::submit` into `new/`, like any
//!    writer, then prunes the schedule's markers to the newest
//!    [`KEEP_MARKERS`].
//!
//! A submission that fails (a full disk) gives the claim back and is tried
//! again after [`RETRY`], unless a later tick has been fired by then.
//! A daemon that dies between steps 2 and 3 leaves a marker without a job:
//! that tick is lost (at most once), never submitted twice.
//!
//! The decisions (which ticks are due, what a start catches up, whether a
//! tick may be claimed) are `schedule`'s, pure; this file carries them
//! out and never writes a spool path itself.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::Daemon;
use crate::schedule::{Schedule, Tick, When, may_claim};
use crate::status::ScheduleRow;
use crate::time;

/// Markers kept per schedule. Only the newest decides anything; older
/// ones stay so that a daemon that stalled for a few ticks finds the
/// ticks it is late for already fired.
pub(super) const KEEP_MARKERS: usize = 32;

/// How long after a failed claim or submission the tick is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Every schedule's plan, by name.
#[derive(Default)]
pub(super) struct Ticker {
    plans: BTreeMap<String, Plan>,
}

/// What the loop knows of one schedule.
struct Plan {
    /// The schedule as planned: a reload that changes it plans it afresh.
    schedule: Schedule,
    /// The tick to wait for; `None`: it has no more.
    next: Option<Tick>,
    /// A tick whose claim or submission failed, when to try it again, and
    /// whether that was said in the log already.
    retry: Option<Retry>,
    /// The newest tick fired on the spool as far as this daemon saw (its
    /// own or a peer's): the report's "last fired".
    last: Option<Tick>,
}

/// A tick to try again.
#[derive(Clone, Copy)]
struct Retry {
    /// The tick whose claim or submission failed.
    tick: Tick,
    /// When to try it again.
    at: SystemTime,
    /// Failed tries so far: only the first is logged.
    tries: u32,
}

impl Ticker {
    /// The next time a schedule needs the loop: its next tick or a retry.
    pub(super) fn wakeup(&self) -> Option<SystemTime> {
        self.plans
            .values()
            .flat_map(|p| [p.next.map(Tick::time), p.retry.map(|r| r.at)])
            .flatten()
            .min()
    }
}

impl Daemon {
    /// At start: plans every schedule from the markers on the spool, fires
    /// the tick `catch_up` asks for, and prunes old markers.
    pub(super) fn start_schedules(&mut self) {
        let now = time::now();
        let schedules: Vec<Schedule> = self.config.schedules.values().cloned().collect();
        for s in schedules {
            let fired = match self.spool.fired_ticks(&s.name) {
                Ok(f) => f,
                Err(e) => {
                    crate::log!("schedule {}: {e}; nothing is caught up", s.name);
                    Vec::new()
                }
            };
            let newest = fired.last().copied();
            let start = s.at_start(now, newest);
            crate::log!(
                "schedule {}: {}{}, type {}, catch_up {}; next tick {}",
                s.name,
                s.when.describe(),
                zone_source(&s.when),
                s.kind,
                s.catch_up,
                next_text(start.next)
            );
            if let Err(e) = self.spool.prune_ticks(&s.name, &fired, KEEP_MARKERS) {
                crate::log!("schedule {}: {e}", s.name);
            }
            let name = s.name.clone();
            self.ticker.plans.insert(
                name.clone(),
                Plan {
                    schedule: s,
                    next: start.next,
                    retry: None,
                    last: newest,
                },
            );
            if let Some(t) = start.catch_up {
                crate::log!(
                    "schedule {name}: the tick of {} was missed while no daemon ran; submitting it once (catch_up)",
                    time::format_rfc3339(t.time())
                );
                self.fire_tick(&name, t, now);
            }
        }
        self.dirty = true;
    }

    /// After a reload: schedules that did not change keep their plan;
    /// new and changed ones wait for their next tick from now.
    pub(super) fn replan_schedules(&mut self) {
        let now = time::now();
        let mut old = std::mem::take(&mut self.ticker.plans);
        for (name, s) in &self.config.schedules {
            match old.remove(name) {
                Some(p) if p.schedule == *s => {
                    self.ticker.plans.insert(name.clone(), p);
                }
                previous => {
                    let next = s.when.first_at_or_after(Tick::floor(now));
                    let last = match &previous {
                        Some(p) => p.last,
                        None => self
                            .spool
                            .fired_ticks(name)
                            .ok()
                            .and_then(|f| f.last().copied()),
                    };
                    crate::log!(
                        "schedule {name}: {} ({}{}, type {}); next tick {}",
                        if previous.is_some() {
                            "changed"
                        } else {
                            "added"
                        },
                        s.when.describe(),
                        zone_source(&s.when),
                        s.kind,
                        next_text(next)
                    );
                    self.ticker.plans.insert(
                        name.clone(),
                        Plan {
                            schedule: s.clone(),
                            next,
                            retry: None,
                            last,
                        },
                    );
                }
            }
        }
        for name in old.keys() {
            crate::log!("schedule {name}: removed");
        }
        self.dirty = true;
    }

    /// Fires every tick that is due, and retries that are.
    pub(super) fn fire_schedules(&mut self) {
        let now = time::now();
        // The loop ticks after every batch of events: most of the time
        // nothing is due.
        if self.ticker.wakeup().is_none_or(|t| t > now) {
            return;
        }
        let names: Vec<String> = self.ticker.plans.keys().cloned().collect();
        for name in names {
            let Some(plan) = self.ticker.plans.get_mut(&name) else {
                continue;
            };
            let retry = plan.retry.filter(|r| r.at <= now);
            let due = plan.schedule.due(plan.next, now);
            plan.next = due.next;
            if let Some((first, last)) = due.skipped {
                crate::log!(
                    "schedule {name}: the ticks from {} to {} passed while the loop could not look \
                     (a suspend, the clock set forward); only the latest fires",
                    time::format_rfc3339(first.time()),
                    time::format_rfc3339(last.time())
                );
            }
            if let Some(r) = retry {
                self.fire_tick(&name, r.tick, now);
            }
            for t in due.fire {
                self.fire_tick(&name, t, now);
            }
        }
    }

    /// Fires one tick of a schedule, if no daemon has: claims it on the
    /// spool and, when this daemon made the claim, submits its job.
    fn fire_tick(&mut self, name: &str, tick: Tick, now: SystemTime) {
        let spool = self.spool.clone();
        let Some(plan) = self.ticker.plans.get_mut(name) else {
            return;
        };
        self.dirty = true;
        let id = plan.schedule.job_id(tick);
        let tries = match plan.retry {
            Some(r) if r.tick == tick => r.tries,
            _ => 0,
        };
        if plan.retry.is_some_and(|r| r.tick == tick) {
            plan.retry = None;
        }
        let fired = match spool.fired_ticks(name) {
            Ok(f) => f,
            Err(e) => {
                plan.give_back(tick, tries, now, &format!("{id}: schedule {name}: {e}"));
                return;
            }
        };
        let newest = fired.last().copied();
        if !may_claim(tick, newest) {
            // Fired already, here or by a peer (or a later tick was).
            if tries > 0 {
                crate::log!("{id}: not submitted: a later tick of schedule {name} was fired first");
            }
            plan.last = plan.last.max(newest);
            return;
        }
        match spool.claim_tick(name, tick) {
            Ok(false) => plan.last = plan.last.max(Some(tick)),
            Err(e) => plan.give_back(tick, tries, now, &format!("{id}: schedule {name}: {e}")),
            Ok(true) => match spool.submit(Some(&id), plan.schedule.job_text.as_bytes()) {
                Ok(got) => {
                    let taken = if got == id {
                        String::new()
                    } else {
                        format!(" (as {got}: a job {id} existed)")
                    };
                    let after = if tries > 0 {
                        format!(" after {} failed tries", tries)
                    } else {
                        String::new()
                    };
                    crate::log!(
                        "{id}: submitted by schedule {name} for its tick at {}{taken}{after}",
                        time::format_rfc3339(tick.time())
                    );
                    plan.last = plan.last.max(Some(tick));
                    let mut kept = fired;
                    kept.push(tick);
                    if let Err(e) = spool.prune_ticks(name, &kept, KEEP_MARKERS) {
                        crate::log!("schedule {name}: {e}");
                    }
                }
                Err(e) => {
                    // Given back, so that this daemon (or a peer) may
                    // claim the tick again once the spool takes files.
                    if let Err(e) = spool.release_tick(name, tick) {
                        crate::log!("{id}: schedule {name}: {e}");
                    }
                    plan.give_back(tick, tries, now, &format!("{id}: cannot submit: {e}"));
                }
            },
        }
    }

    /// The report's rows: every schedule, its next tick, its last job.
    pub(super) fn schedule_rows(&self) -> Vec<ScheduleRow> {
        self.ticker
            .plans
            .values()
            .map(|p| ScheduleRow {
                name: p.schedule.name.clone(),
                when: p.schedule.when.describe(),
                kind: p.schedule.kind.clone(),
                next: p.next.map(Tick::time),
                last: p.last.map(|t| p.schedule.job_id(t)),
            })
            .collect()
    }
}

impl Plan {
    /// A tick that could not be fired now is tried again after [`RETRY`];
    /// the first failure is logged, the rest are not (a full disk is
    /// logged by the commit thread already).
    fn give_back(&mut self, tick: Tick, tries: u32, now: SystemTime, why: &str) {
        if tries == 0 {
            crate::log!("{why}; trying again every {}", time::format_duration(RETRY));
        }
        self.retry = Some(Retry {
            tick,
            at: time::add(now, RETRY),
            tries: tries.saturating_add(1),
        });
    }
}

/// `, its zone from /etc/localtime` for a cron schedule without `tz`: where its
/// zone came from.
fn zone_source(when: &When) -> String {
    match when {
        When::Cron { zone, .. } if zone.from != "tz" => format!(", its zone from {}", zone.from),
        _ => String::new(),
    }
}

fn next_text(next: Option<Tick>) -> String {
    next.map_or("none (past 9999)".into(), |t| {
        time::format_rfc3339(t.time())
    })
}
