//! The queue and the decision of what starts next.
//!
//! Pure: takes queued jobs, limits, what is running and `now`; answers
//! which job to start, and when to look again. It never touches the disk,
//! never reads the clock and never spawns anything, so every rule here is
//! tested by table.
//!
//! Order: higher `priority` first, then earlier submission, then the order
//! the daemon learned of the job. A job whose type is at its limit never
//! blocks a job of another type behind it. Jobs with a `not_before` in the
//! future wait in a separate set ordered by that time, so that finding the
//! next wake-up costs O(log n), not a scan.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

/// What the scheduler keeps of a queued job: small, because 100 000 of
/// them may wait. The job itself stays on disk until it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its name in `new/`: the key.
    pub name: String,
    /// The id it asks for (the name without `.toml`), or a fresh one.
    pub id: String,
    pub kind: String,
    pub priority: i64,
    pub submitted: SystemTime,
    pub not_before: Option<SystemTime>,
    /// Who submitted it (uid), when known: `per_user` counts by it.
    pub submitter: Option<u32>,
}

type Key = (Reverse<i64>, SystemTime, u64);

#[derive(Debug, Default)]
pub struct Queue {
    jobs: HashMap<String, (Queued, u64)>,
    /// Ready jobs per type, in start order.
    ready: BTreeMap<String, BTreeMap<Key, String>>,
    /// Jobs waiting for their `not_before`.
    delayed: BTreeSet<(SystemTime, u64, String)>,
    /// Name in `new/` by the id it asks for, for cancel by id.
    by_id: HashMap<String, String>,
    /// Queued jobs per type, kept as jobs come and go so that counting
    /// never walks the queue.
    per_type: BTreeMap<String, usize>,
    seq: u64,
}

/// The limits in force and what runs now.
pub struct Slots<'a> {
    pub total: usize,
    pub running_total: usize,
    /// The limit of a type.
    pub limit: &'a dyn Fn(&str) -> usize,
    /// How many jobs of a type run now.
    pub running: &'a dyn Fn(&str) -> usize,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.jobs.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Queued> {
        self.jobs.get(name).map(|(q, _)| q)
    }

    /// The name in `new/` of a queued job, by id.
    pub fn name_of(&self, id: &str) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }

    /// Adds a job, or replaces the one of the same name.
    pub fn push(&mut self, job: Queued, now: SystemTime) {
        self.remove(&job.name);
        self.seq += 1;
        let seq = self.seq;
        match job.not_before {
            Some(t) if t > now => {
                self.delayed.insert((t, seq, job.name.clone()));
            }
            _ => {
                self.ready
                    .entry(job.kind.clone())
                    .or_default()
                    .insert(key(&job, seq), job.name.clone());
            }
        }
        self.by_id.insert(job.id.clone(), job.name.clone());
        *self.per_type.entry(job.kind.clone()).or_default() += 1;
        self.jobs.insert(job.name.clone(), (job, seq));
    }

    pub fn remove(&mut self, name: &str) -> Option<Queued> {
        let (job, seq) = self.jobs.remove(name)?;
        if let Some(t) = job.not_before {
            self.delayed.remove(&(t, seq, job.name.clone()));
        }
        if let Some(set) = self.ready.get_mut(&job.kind) {
            set.remove(&key(&job, seq));
            if set.is_empty() {
                self.ready.remove(&job.kind);
            }
        }
        if self.by_id.get(&job.id).is_some_and(|n| n == name) {
            self.by_id.remove(&job.id);
        }
        if let Some(n) = self.per_type.get_mut(&job.kind) {
            *n -= 1;
            if *n == 0 {
                self.per_type.remove(&job.kind);
            }
        }
        Some(job)
    }

    /// Moves jobs whose `not_before` has come into the ready sets.
    pub fn promote(&mut self, now: SystemTime) {
        while let Some(first) = self.delayed.first() {
            if first.0 > now {
                break;
            }
            let Some((_, seq, name)) = self.delayed.pop_first() else {
                break;
            };
            if let Some((job, _)) = self.jobs.get(&name) {
                self.ready
                    .entry(job.kind.clone())
                    .or_default()
                    .insert(key(job, seq), name);
            }
        }
    }

    /// When a delayed job becomes ready.
    pub fn next_wakeup(&self) -> Option<SystemTime> {
        self.delayed.first().map(|(t, _, _)| *t)
    }

    /// The job to start now, if any: the first in order among the types
    /// that are below their limit, when the total allows one more.
    /// Call [`Queue::promote`] first.
    pub fn next(&self, slots: &Slots) -> Option<&Queued> {
        self.next_allowed(slots, &|_| true)
    }

    /// Like [`Queue::next`], skipping jobs that `allow` refuses (a
    /// submitter at the type's `per_user` limit, see [`per_user_allows`]):
    /// those wait without blocking the jobs of others behind them. Costs
    /// one look per skipped job.
    pub fn next_allowed(&self, slots: &Slots, allow: &dyn Fn(&Queued) -> bool) -> Option<&Queued> {
        if slots.running_total >= slots.total {
            return None;
        }
        self.ready
            .iter()
            .filter(|(kind, _)| (slots.running)(kind) < (slots.limit)(kind))
            .filter_map(|(_, set)| {
                set.iter()
                    .find(|(_, name)| self.get(name).is_some_and(allow))
            })
            .min_by_key(|(k, _)| *k)
            .and_then(|(_, name)| self.get(name))
    }

    /// Queued jobs per type (ready and delayed).
    pub fn counts(&self) -> &BTreeMap<String, usize> {
        &self.per_type
    }

    /// The first `n` jobs in start order (ready first, then delayed by
    /// time). Costs O(types × n), not O(queue).
    pub fn first(&self, n: usize) -> Vec<&Queued> {
        let mut heads: Vec<(&Key, &String)> = self
            .ready
            .values()
            .flat_map(|set| set.iter().take(n))
            .collect();
        heads.sort_by_key(|(k, _)| **k);
        let mut out: Vec<&Queued> = heads
            .into_iter()
            .take(n)
            .filter_map(|(_, name)| self.get(name))
            .collect();
        let room = n.saturating_sub(out.len());
        out.extend(
            self.delayed
                .iter()
                .take(room)
                .filter_map(|(_, _, name)| self.get(name)),
        );
        out
    }
}

/// Whether a submitter with `running` jobs of a type may start one more,
/// under the type's `per_user` (none: no limit). Pure.
pub fn per_user_allows(per_user: Option<usize>, running: usize) -> bool {
    per_user.is_none_or(|limit| running < limit)
}

fn key(job: &Queued, seq: u64) -> Key {
    (Reverse(job.priority), job.submitted, seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn job(
        name: &str,
        kind: &str,
        priority: i64,
        submitted: u64,
        not_before: Option<u64>,
    ) -> Queued {
        Queued {
            name: format!("{name}.toml"),
            id: name.into(),
            kind: kind.into(),
            priority,
            submitted: at(submitted),
            not_before: not_before.map(at),
            submitter: None,
        }
    }

    #[test]
    fn per_user_limits_each_submitter_and_never_blocks_the_others() {
        for (limit, running, ok) in [
            (None, 0, true),
            (None, 100, true),
            (Some(1), 0, true),
            (Some(1), 1, false),
            (Some(2), 1, true),
            (Some(2), 2, false),
        ] {
            assert_eq!(per_user_allows(limit, running), ok, "{limit:?} {running}");
        }
        // Ann (1000) has one running of a type with per_user = 1: her
        // next waits, Bob's (1001) behind it starts.
        let mut q = Queue::default();
        let mut a = job("a", "x", 0, 1, None);
        a.submitter = Some(1000);
        let mut b = job("b", "x", 0, 2, None);
        b.submitter = Some(1001);
        q.push(a, at(10));
        q.push(b, at(10));
        let limit = |_: &str| 10;
        let run = |_: &str| 1;
        let slots = Slots {
            total: 10,
            running_total: 1,
            limit: &limit,
            running: &run,
        };
        let running_of = |uid: Option<u32>| usize::from(uid == Some(1000));
        let allow = |j: &Queued| per_user_allows(Some(1), running_of(j.submitter));
        assert_eq!(
            q.next_allowed(&slots, &allow).map(|j| j.id.as_str()),
            Some("b")
        );
        assert_eq!(q.next(&slots).map(|j| j.id.as_str()), Some("a"));
        q.remove("b.toml");
        assert_eq!(q.next_allowed(&slots, &allow), None);
    }

    /// Starts jobs until nothing more may start; returns their ids.
    fn drain(q: &mut Queue, total: usize, limits: &[(&str, usize)], now: u64) -> Vec<String> {
        let mut running: HashMap<String, usize> = HashMap::new();
        let mut started = Vec::new();
        q.promote(at(now));
        loop {
            let limit = |k: &str| {
                limits
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map_or(total, |(_, l)| *l)
            };
            let run = |k: &str| running.get(k).copied().unwrap_or(0);
            let slots = Slots {
                total,
                running_total: started.len(),
                limit: &limit,
                running: &run,
            };
            let Some(next) = q.next(&slots).cloned() else {
                break;
            };
            q.remove(&next.name);
            *running.entry(next.kind.clone()).or_default() += 1;
            started.push(next.id);
        }
        started
    }

    #[test]
    fn priority_first_then_fifo() {
        let mut q = Queue::default();
        for j in [
            job("a", "t", 0, 1, None),
            job("b", "t", 5, 2, None),
            job("c", "t", 0, 0, None),
            job("d", "t", 5, 3, None),
        ] {
            q.push(j, at(10));
        }
        assert_eq!(drain(&mut q, 10, &[], 10), ["b", "d", "c", "a"]);
    }

    #[test]
    fn limits_are_never_exceeded_and_a_full_type_does_not_block_others() {
        type Case<'a> = (usize, &'a [(&'a str, usize)], &'a [&'a str]);
        let cases: &[Case] = &[
            (3, &[("a", 2)], &["j0", "j1", "j3"]),
            (10, &[("a", 1), ("c", 1)], &["j0", "j3", "j4"]),
            (1, &[], &["j0"]),
        ];
        for (total, limits, want) in cases {
            let mut q = Queue::default();
            for (i, kind) in ["a", "a", "a", "b", "c", "c"].iter().enumerate() {
                q.push(job(&format!("j{i}"), kind, 0, i as u64, None), at(10));
            }
            assert_eq!(
                drain(&mut q, *total, limits, 10),
                *want,
                "total {total} {limits:?}"
            );
        }
    }

    #[test]
    fn not_before_holds_a_job_until_its_time() {
        let mut q = Queue::default();
        q.push(job("late", "t", 9, 0, Some(100)), at(10));
        q.push(job("now", "t", 0, 1, None), at(10));
        assert_eq!(q.next_wakeup(), Some(at(100)));
        assert_eq!(drain(&mut q, 10, &[], 50), ["now"]);
        assert_eq!(drain(&mut q, 10, &[], 100), ["late"]);
        assert_eq!(q.next_wakeup(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn replacing_and_removing_keep_the_indexes_consistent() {
        let mut q = Queue::default();
        q.push(job("a", "t", 0, 0, Some(100)), at(10));
        q.push(job("a", "t", 0, 0, None), at(10));
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_wakeup(), None);
        assert_eq!(q.name_of("a"), Some("a.toml"));
        assert!(q.remove("a.toml").is_some());
        assert!(q.is_empty() && q.name_of("a").is_none());
        assert_eq!(drain(&mut q, 10, &[], 1000), Vec::<String>::new());
    }

    #[test]
    fn first_rows_follow_start_order() {
        let mut q = Queue::default();
        q.push(job("d", "x", 0, 0, Some(100)), at(10));
        q.push(job("b", "y", 0, 2, None), at(10));
        q.push(job("a", "x", 1, 3, None), at(10));
        q.push(job("c", "y", 0, 1, None), at(10));
        let ids: Vec<&str> = q.first(3).iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert_eq!(q.first(10).len(), 4);
        assert_eq!(q.counts()["x"], 2);
    }
}
