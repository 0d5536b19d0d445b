//! The queue and the decision of what starts next.
//!
//! Pure: takes queued jobs, limits, what is running, what each parent job
//! has become, which types are paused, which resources are free and
//! `now`; answers which job to start (or to end without running), and
//! when to look again. It never touches the disk, never reads the clock
//! and never spawns anything, so every rule here is tested by table.
//!
//! Order: higher `priority` first, then earlier submission, then the order
//! the daemon learned of the job. A job whose type is at its limit or
//! paused never blocks a job of another type behind it. Jobs with a
//! `not_before` in the future wait in a separate set ordered by that time,
//! so that finding the next wake-up costs O(log n), not a scan.
//!
//! Dependencies (`after`, `after_any`): a job whose parents have not all
//! ended is *held*, indexed by each parent it waits for, and is looked at
//! again only when one of them ends ([`Queue::parent_ended`]). A job whose
//! `after` parent ended other than `succeeded` (or is nowhere to be found)
//! is *doomed*: [`Queue::take_doomed`] hands it out to be ended
//! `cancelled` without running, and its own end then reaches its children
//! the same way, so a failure cancels down the whole tree.
//!
//! Uniqueness: at most one queued job per (type, `unique`) in a queue; a
//! second is refused at [`Queue::push`]. (Across daemons the spool's
//! marker decides; this is the same rule inside one.)
//!
//! Resources: ready jobs are kept in *classes* of one type and one `needs`;
//! within a class the first job is the only candidate (the others need the
//! same, so if it does not fit, neither do they), so picking costs the
//! number of classes, not the length of the queue. The starvation rule:
//! the first job in order whose needs do not fit (the *head*) may be
//! passed by jobs behind it that take some of what it needs at most
//! [`BYPASS_LIMIT`] times; after that it *reserves* them: no job behind it
//! gets any unit of a resource it needs until it has started. Jobs that
//! need none of its resources are never held back by it. A job that needs
//! more than exists (after a reload shrank a resource) is handed out to be
//! claimed, so that the daemon's check rejects it rather than keep it
//! forever.
//!
//! Per submitter (`per_user`): [`Slots::allow`] says whether a job's
//! submitter may start one more of its type ([`per_user_allows`]); within
//! a class the candidate is then the first job allowed, so a submitter at
//! the limit waits without blocking anyone else's jobs behind theirs (one
//! look per job skipped).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use crate::job::Job;
use crate::record::Status;

/// How many starts of jobs behind it that take units it needs the head of
/// the line lets go by before it reserves them (the starvation rule).
pub const BYPASS_LIMIT: u32 = 4;

/// What the scheduler keeps of a queued job: small, because a million of
/// them may wait (`max_queued`). The job itself stays on disk until it
/// starts. What few jobs have is boxed apart ([`Extra`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its name in `new/`: the key, shared by the queue's indexes.
    pub name: Arc<str>,
    /// The id it asks for (the name without `.toml`), or a fresh one.
    pub id: String,
    /// Its type: one allocation per type in the queue, shared by its jobs.
    pub kind: Arc<str>,
    pub priority: i64,
    pub submitted: SystemTime,
    pub not_before: Option<SystemTime>,
    /// Dependencies, a unique key and resources: `None` when it has none
    /// of them, as most jobs.
    pub extra: Option<Box<Extra>>,
    /// The inode of its file in `new/`: how the unique marker knows it
    /// whatever id it ends up with (0 when unknown).
    pub ino: u64,
    /// Whether its file is a first submission (no `submitted` written
    /// when a daemon put it back): only then must its parents exist.
    pub fresh: bool,
    /// Who submitted it (uid), when known: `per_user` counts by it.
    pub submitter: Option<u32>,
}

/// What a queued job may have beyond its type, order and time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// Jobs that must all end `succeeded` before it starts.
    pub after: Vec<String>,
    /// Jobs that must all end, whatever their outcome, before it starts.
    pub after_any: Vec<String>,
    /// At most one queued or running job per (type, `unique`).
    pub unique: Option<String>,
    /// The resources it needs: name and count (none zero), by name.
    pub needs: Vec<(String, u32)>,
}

impl Queued {
    /// What the scheduler keeps of `job`, read from `new/<name>` (inode
    /// `ino`), to start under `id`; `submitted` when its file does not say.
    pub fn of(name: &str, id: String, job: &Job, submitted: SystemTime, ino: u64) -> Queued {
        let extra = Extra {
            after: job.after.clone(),
            after_any: job.after_any.clone(),
            unique: job.unique.clone(),
            needs: job.needs.iter().map(|(r, n)| (r.clone(), *n)).collect(),
        };
        Queued {
            name: name.into(),
            id,
            kind: job.kind.as_str().into(),
            priority: job.priority,
            submitted: job.submitted.unwrap_or(submitted),
            not_before: job.not_before,
            extra: (extra != Extra::default()).then(|| Box::new(extra)),
            ino,
            fresh: job.submitted.is_none(),
            // Known from the file's owner, not the job: the reader sets it.
            submitter: None,
        }
    }

    /// Jobs that must all end `succeeded` before it starts.
    pub fn after(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |e| &e.after)
    }

    /// Jobs that must all end, whatever their outcome, before it starts.
    pub fn after_any(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |e| &e.after_any)
    }

    /// Its unique key, if any.
    pub fn unique(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.unique.as_deref())
    }

    /// The resources it needs: name and count, by name.
    pub fn needs(&self) -> &[(String, u32)] {
        self.extra.as_ref().map_or(&[], |e| &e.needs)
    }

    /// Its extras, to change them (made when it had none).
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }
}

/// What became of a job another one waits for, as far as the daemon can
/// tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// Queued or running (here or in another daemon).
    Pending,
    /// Ended, with this status.
    Ended(Status),
    /// Nowhere: neither queued, running nor recorded (deleted before any
    /// daemon took it, or its record expired). It will never end.
    Gone,
}

/// What [`Queue::push`] did with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// It is in the queue (ready, delayed, held or doomed).
    Queued,
    /// Another queued job has its (type, `unique`): this id.
    Duplicate(String),
}

type Key = (Reverse<i64>, SystemTime, u64);

/// Jobs of one type that need the same resources.
type Class = (Arc<str>, Vec<(String, u32)>);

/// Where a queued job is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// May start: in its class's ready set.
    Ready,
    /// Waiting for its `not_before`.
    Delayed,
    /// Waiting for these parents to end; `true` for an `after` parent
    /// (must succeed), `false` for `after_any`.
    Held(BTreeMap<String, bool>),
    /// Will never start: to be ended `cancelled`, with this error.
    Doomed(String),
}

#[derive(Debug)]
struct Entry {
    job: Queued,
    seq: u64,
    state: State,
    /// How many jobs behind it took units it needs while it could not
    /// fit (the starvation rule).
    bypassed: u32,
}

/// The queued jobs and their indexes. Every index names a job by its
/// name in `new/` (shared, never copied), and each job's entry is boxed:
/// a hash table keeps room for up to twice its jobs, and that room then
/// costs a pointer each, not a whole entry.
#[derive(Debug, Default)]
pub struct Queue {
    jobs: HashMap<Arc<str>, Box<Entry>>,
    /// Ready jobs per class, in start order.
    ready: BTreeMap<Class, BTreeMap<Key, Arc<str>>>,
    /// Jobs waiting for their `not_before`.
    delayed: BTreeSet<(SystemTime, u64, Arc<str>)>,
    /// Held jobs by each parent they wait for.
    waiting_on: HashMap<String, BTreeSet<Arc<str>>>,
    /// Held jobs in start order, for the report's rows.
    held: BTreeSet<(Key, Arc<str>)>,
    /// Doomed jobs, in the order they were doomed.
    doomed: Vec<Arc<str>>,
    /// Name in `new/` by the id it asks for, for cancel by id: only the
    /// jobs whose name is not `<id>.toml` (most are found by that name).
    by_id: HashMap<String, Arc<str>>,
    /// Name in `new/` by (type, `unique`).
    uniques: HashMap<(String, String), Arc<str>>,
    /// Queued jobs per type, kept as jobs come and go so that counting
    /// never walks the queue; its keys are the types the jobs share.
    per_type: BTreeMap<Arc<str>, usize>,
    seq: u64,
}

/// The name in `new/` a job asked for by `id` has unless it was given
/// another (see [`Queue::name_of`]).
fn plain_name(id: &str) -> String {
    format!("{id}.toml")
}

/// The job [`Queue::choose`] would start, and the heads it passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Its name in `new/`.
    pub name: String,
    /// Heads before it that cannot fit and need some of what it takes:
    /// each counts a bypass when it starts.
    bypassed: Vec<String>,
}

/// The limits in force, what runs now, what is paused and what is free.
pub struct Slots<'a> {
    pub total: usize,
    pub running_total: usize,
    /// The limit of a type.
    pub limit: &'a dyn Fn(&str) -> usize,
    /// How many jobs of a type run now.
    pub running: &'a dyn Fn(&str) -> usize,
    /// Whether new starts of a type are held (`pause/<type>`, `pause/ALL`).
    pub paused: &'a dyn Fn(&str) -> bool,
    /// Units of each resource not held by a running job.
    pub free: &'a BTreeMap<String, usize>,
    /// Units of each resource there are.
    pub capacity: &'a BTreeMap<String, usize>,
    /// Whether a job may start now as far as its submitter goes (its
    /// type's `per_user`, see [`per_user_allows`]): a refused job waits
    /// without blocking the others of its class behind it.
    pub allow: &'a dyn Fn(&Queued) -> bool,
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
        self.jobs.get(name).map(|e| &e.job)
    }

    /// Makes room for `more` jobs at once (a whole listing of `new/`),
    /// instead of growing step by step.
    pub fn reserve(&mut self, more: usize) {
        self.jobs.reserve(more);
    }

    /// The name in `new/` of a queued job, by id.
    pub fn name_of(&self, id: &str) -> Option<&str> {
        if let Some(name) = self.by_id.get(id) {
            return Some(name);
        }
        let (name, e) = self.jobs.get_key_value(plain_name(id).as_str())?;
        (e.job.id == id).then_some(&**name)
    }

    /// The type as the queue keeps it: one allocation per type.
    fn shared_kind(&self, kind: &Arc<str>) -> Arc<str> {
        self.per_type
            .get_key_value(kind)
            .map_or_else(|| kind.clone(), |(k, _)| k.clone())
    }

    /// Adds a job, or replaces the one of the same name. `parent` says
    /// what became of each job it waits for. A job whose (type,
    /// `unique`) another queued job has is not added.
    pub fn push(
        &mut self,
        mut job: Queued,
        now: SystemTime,
        parent: &dyn Fn(&str) -> Parent,
    ) -> Pushed {
        if let Some(key) = job.unique()
            && let Some(other) = self.uniques.get(&(job.kind.to_string(), key.to_string()))
            && *other != job.name
        {
            let id = self.get(other).map_or_else(String::new, |q| q.id.clone());
            return Pushed::Duplicate(id);
        }
        self.remove(&job.name);
        job.kind = self.shared_kind(&job.kind);
        self.seq += 1;
        let seq = self.seq;
        let mut waiting = BTreeMap::new();
        let mut doom = None;
        for p in job.after() {
            match parent(p) {
                Parent::Pending => {
                    waiting.insert(p.clone(), true);
                }
                Parent::Ended(Status::Succeeded) => {}
                Parent::Ended(s) => {
                    doom.get_or_insert_with(|| format!("dependency {p} {s}"));
                }
                Parent::Gone => {
                    doom.get_or_insert_with(|| format!("dependency {p} unknown"));
                }
            }
        }
        for p in job.after_any() {
            if parent(p) == Parent::Pending {
                waiting.entry(p.clone()).or_insert(false);
            }
        }
        if *job.name != *plain_name(&job.id) {
            self.by_id.insert(job.id.clone(), job.name.clone());
        }
        if let Some(key) = job.unique() {
            self.uniques
                .insert((job.kind.to_string(), key.to_string()), job.name.clone());
        }
        match self.per_type.get_mut(&job.kind) {
            Some(n) => *n += 1,
            None => {
                self.per_type.insert(job.kind.clone(), 1);
            }
        }
        let name = job.name.clone();
        self.jobs.insert(
            name.clone(),
            Box::new(Entry {
                job,
                seq,
                state: State::Ready,
                bypassed: 0,
            }),
        );
        match doom {
            Some(why) => self.doom(&name, why),
            None if waiting.is_empty() => self.place(&name, now),
            None => self.hold(&name, waiting),
        }
        Pushed::Queued
    }

    pub fn remove(&mut self, name: &str) -> Option<Queued> {
        let Entry {
            job, seq, state, ..
        } = *self.jobs.remove(name)?;
        match state {
            State::Ready => {
                let class = class_of(&job);
                if let Some(set) = self.ready.get_mut(&class) {
                    set.remove(&key(&job, seq));
                    if set.is_empty() {
                        self.ready.remove(&class);
                    }
                }
            }
            State::Delayed => {
                if let Some(t) = job.not_before {
                    self.delayed.remove(&(t, seq, job.name.clone()));
                }
            }
            State::Held(waiting) => {
                for p in waiting.keys() {
                    self.unwait(p, name);
                }
                self.held.remove(&(key(&job, seq), job.name.clone()));
            }
            State::Doomed(_) => self.doomed.retain(|n| **n != *name),
        }
        if self.by_id.get(&job.id).is_some_and(|n| **n == *name) {
            self.by_id.remove(&job.id);
        }
        if let Some(u) = job.unique() {
            let k = (job.kind.to_string(), u.to_string());
            if self.uniques.get(&k).is_some_and(|n| **n == *name) {
                self.uniques.remove(&k);
            }
        }
        if let Some(n) = self.per_type.get_mut(&job.kind) {
            *n -= 1;
            if *n == 0 {
                self.per_type.remove(&job.kind);
            }
        }
        Some(job)
    }

    /// A job ended (or was found to be nowhere): the jobs held for it are
    /// released, or doomed when it was an `after` parent that did not
    /// succeed.
    pub fn parent_ended(&mut self, id: &str, how: Parent, now: SystemTime) {
        if how == Parent::Pending {
            return;
        }
        let Some(children) = self.waiting_on.remove(id) else {
            return;
        };
        for child in children {
            let Some(entry) = self.jobs.get_mut(&child) else {
                continue;
            };
            let State::Held(waiting) = &mut entry.state else {
                continue;
            };
            let Some(strict) = waiting.remove(id) else {
                continue;
            };
            let failed = match how {
                Parent::Ended(Status::Succeeded) | Parent::Pending => None,
                Parent::Ended(s) => Some(s.to_string()),
                Parent::Gone => Some("unknown".to_string()),
            };
            let rest = waiting.clone();
            let k = (key(&entry.job, entry.seq), child.clone());
            match failed {
                Some(word) if strict => {
                    self.held.remove(&k);
                    for p in rest.keys() {
                        self.unwait(p, &child);
                    }
                    self.doom(&child, format!("dependency {id} {word}"));
                }
                _ if rest.is_empty() => {
                    self.held.remove(&k);
                    self.place(&child, now);
                }
                _ => {}
            }
        }
    }

    /// The parents some held job waits for: what the daemon looks up
    /// again when it cannot learn of their end otherwise (another daemon
    /// ran them).
    pub fn awaited(&self) -> impl Iterator<Item = &String> {
        self.waiting_on.keys()
    }

    /// The queued job that holds (type, `unique`), if any.
    pub fn holder(&self, kind: &str, key: &str) -> Option<&Queued> {
        self.uniques
            .get(&(kind.to_string(), key.to_string()))
            .and_then(|n| self.get(n))
    }

    /// The parents a queued job still waits for, in order.
    pub fn waiting_for(&self, name: &str) -> Vec<String> {
        match self.jobs.get(name).map(|e| &e.state) {
            Some(State::Held(w)) => w.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Takes out the doomed jobs, each with the error its record gives.
    pub fn take_doomed(&mut self) -> Vec<(Queued, String)> {
        let names = std::mem::take(&mut self.doomed);
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let why = match self.jobs.get(&name).map(|e| &e.state) {
                Some(State::Doomed(why)) => why.clone(),
                _ => continue,
            };
            if let Some(job) = self.remove(&name) {
                out.push((job, why));
            }
        }
        out
    }

    /// Moves jobs whose `not_before` has come into the ready sets.
    pub fn promote(&mut self, now: SystemTime) {
        while let Some(first) = self.delayed.first() {
            if first.0 > now {
                break;
            }
            let Some((_, _, name)) = self.delayed.pop_first() else {
                break;
            };
            self.make_ready(&name);
        }
    }

    /// When a delayed job becomes ready.
    pub fn next_wakeup(&self) -> Option<SystemTime> {
        self.delayed.first().map(|(t, _, _)| *t)
    }

    /// Takes out the job to start now, if any: [`Queue::choose`], then
    /// [`Queue::take`].
    pub fn pick(&mut self, slots: &Slots) -> Option<Queued> {
        let choice = self.choose(slots)?;
        self.take(choice)
    }

    /// The job to start now, if any: the first in order among the heads of
    /// the classes whose type is below its limit and not paused, whose
    /// needs fit in what is free (and are not reserved by a head before
    /// it, see [`BYPASS_LIMIT`]), when the total allows one more. Call
    /// [`Queue::promote`] first. Changes nothing: [`Queue::take`] does.
    pub fn choose(&self, slots: &Slots) -> Option<Choice> {
        if slots.running_total >= slots.total {
            return None;
        }
        let mut heads: Vec<(Key, &Arc<str>, &Class)> = self
            .ready
            .iter()
            .filter(|((kind, _), _)| {
                !(slots.paused)(kind) && (slots.running)(kind) < (slots.limit)(kind)
            })
            .filter_map(|(class, set)| {
                // A job `allow` refuses waits without blocking the others
                // of its class behind it.
                set.iter()
                    .find(|(_, n)| self.get(n).is_some_and(slots.allow))
                    .map(|(k, n)| (*k, n, class))
            })
            .collect();
        heads.sort_by_key(|(k, _, _)| *k);
        let mut free = slots.free.clone();
        // Heads passed over that have not reserved yet, with their needs.
        let mut passed: Vec<(&str, &Vec<(String, u32)>)> = Vec::new();
        for (_, name, (_, needs)) in heads {
            let impossible = needs
                .iter()
                .any(|(r, n)| slots.capacity.get(r).copied().unwrap_or(0) < *n as usize);
            let fits = needs
                .iter()
                .all(|(r, n)| free.get(r).copied().unwrap_or(0) >= *n as usize);
            if impossible || fits {
                // Those it passes that need some of what it takes.
                let bypassed = passed
                    .into_iter()
                    .filter(|(_, theirs)| {
                        theirs
                            .iter()
                            .any(|(r, _)| needs.iter().any(|(m, _)| m == r))
                    })
                    .map(|(n, _)| n.to_string())
                    .collect();
                return Some(Choice {
                    name: name.to_string(),
                    bypassed,
                });
            }
            let bypassed = self.jobs.get(name).map_or(0, |e| e.bypassed);
            if bypassed >= BYPASS_LIMIT {
                // It reserves what it needs: nobody behind it takes any.
                for (r, _) in needs {
                    free.insert(r.clone(), 0);
                }
            } else {
                passed.push((&**name, needs));
            }
        }
        None
    }

    /// The job [`Queue::choose`] chose, taken out of the queue; the heads
    /// it passed count one more bypass each.
    pub fn take(&mut self, choice: Choice) -> Option<Queued> {
        for n in &choice.bypassed {
            if let Some(e) = self.jobs.get_mut(n.as_str()) {
                e.bypassed = e.bypassed.saturating_add(1);
            }
        }
        self.remove(&choice.name)
    }

    /// Queued jobs per type (ready, delayed, held and doomed).
    pub fn counts(&self) -> &BTreeMap<Arc<str>, usize> {
        &self.per_type
    }

    /// The first `n` jobs in start order (ready first, then delayed by
    /// time, then those held for their parents). Costs O(classes × n),
    /// not O(queue).
    pub fn first(&self, n: usize) -> Vec<&Queued> {
        let mut heads: Vec<(&Key, &Arc<str>)> = self
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
        let room = n.saturating_sub(out.len());
        out.extend(
            self.held
                .iter()
                .take(room)
                .filter_map(|(_, name)| self.get(name)),
        );
        out
    }

    /// Puts a job that waits for nothing where its `not_before` says.
    fn place(&mut self, name: &str, now: SystemTime) {
        let Some(e) = self.jobs.get_mut(name) else {
            return;
        };
        match e.job.not_before {
            Some(t) if t > now => {
                e.state = State::Delayed;
                self.delayed.insert((t, e.seq, e.job.name.clone()));
            }
            _ => self.make_ready(name),
        }
    }

    fn make_ready(&mut self, name: &str) {
        let Some(e) = self.jobs.get_mut(name) else {
            return;
        };
        e.state = State::Ready;
        self.ready
            .entry(class_of(&e.job))
            .or_default()
            .insert(key(&e.job, e.seq), e.job.name.clone());
    }

    fn hold(&mut self, name: &str, waiting: BTreeMap<String, bool>) {
        let Some(e) = self.jobs.get_mut(name) else {
            return;
        };
        for p in waiting.keys() {
            self.waiting_on
                .entry(p.clone())
                .or_default()
                .insert(e.job.name.clone());
        }
        self.held.insert((key(&e.job, e.seq), e.job.name.clone()));
        e.state = State::Held(waiting);
    }

    fn doom(&mut self, name: &str, why: String) {
        if let Some(e) = self.jobs.get_mut(name) {
            e.state = State::Doomed(why);
            self.doomed.push(e.job.name.clone());
        }
    }

    /// Forgets that `child` waits for `parent`.
    fn unwait(&mut self, parent: &str, child: &str) {
        if let Some(set) = self.waiting_on.get_mut(parent) {
            set.remove(child);
            if set.is_empty() {
                self.waiting_on.remove(parent);
            }
        }
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

fn class_of(job: &Queued) -> Class {
    (job.kind.clone(), job.needs().to_vec())
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
            name: format!("{name}.toml").into(),
            id: name.into(),
            kind: kind.into(),
            priority,
            submitted: at(submitted),
            not_before: not_before.map(at),
            extra: None,
            ino: 0,
            fresh: true,
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
        q.push(a, at(10), &pending);
        q.push(b, at(10), &pending);
        let limit = |_: &str| 10;
        let run = |_: &str| 1;
        let paused = |_: &str| false;
        let none = BTreeMap::new();
        let running_of = |uid: Option<u32>| usize::from(uid == Some(1000));
        let per_user = |j: &Queued| per_user_allows(Some(1), running_of(j.submitter));
        let anyone = |_: &Queued| true;
        let slots_with = |allow| Slots {
            total: 10,
            running_total: 1,
            limit: &limit,
            running: &run,
            paused: &paused,
            free: &none,
            capacity: &none,
            allow,
        };
        let (limited, open) = (slots_with(&per_user), slots_with(&anyone));
        let name = |c: Option<Choice>| c.map(|c| c.name);
        assert_eq!(name(q.choose(&limited)).as_deref(), Some("b.toml"));
        assert_eq!(name(q.choose(&open)).as_deref(), Some("a.toml"));
        assert_eq!(q.pick(&limited).map(|j| j.id), Some("b".into()));
        assert_eq!(name(q.choose(&limited)), None);
        assert_eq!(q.pick(&open).map(|j| j.id), Some("a".into()));
    }

    fn pending(_: &str) -> Parent {
        Parent::Pending
    }

    /// What each parent became, for `push`.
    fn parents(table: &'static [(&'static str, Parent)]) -> impl Fn(&str) -> Parent {
        move |id| {
            table
                .iter()
                .find(|(p, _)| *p == id)
                .map_or(Parent::Gone, |(_, s)| *s)
        }
    }

    /// The world the scheduler is asked in: limits, pauses and resources.
    struct World<'a> {
        total: usize,
        limits: &'a [(&'a str, usize)],
        paused: &'a [&'a str],
        resources: &'a [(&'a str, usize)],
    }

    impl World<'_> {
        fn plain(total: usize) -> World<'static> {
            World {
                total,
                limits: &[],
                paused: &[],
                resources: &[],
            }
        }
    }

    /// Starts jobs until nothing more may start, none ending; returns
    /// their ids in start order.
    fn drain(q: &mut Queue, w: &World, now: u64) -> Vec<String> {
        drain_while_running(q, w, now, &[])
    }

    /// As [`drain`], with jobs already running: (type, needs) each.
    fn drain_while_running(
        q: &mut Queue,
        w: &World,
        now: u64,
        already: &[(&str, &[(&str, usize)])],
    ) -> Vec<String> {
        let mut running: HashMap<String, usize> = HashMap::new();
        let capacity: BTreeMap<String, usize> = w
            .resources
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
        let mut free = capacity.clone();
        for (kind, needs) in already {
            *running.entry(kind.to_string()).or_default() += 1;
            for (r, n) in *needs {
                *free.get_mut(*r).unwrap() -= n;
            }
        }
        let mut started = Vec::new();
        q.promote(at(now));
        loop {
            let limit = |k: &str| {
                w.limits
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map_or(w.total, |(_, l)| *l)
            };
            let run = |k: &str| running.get(k).copied().unwrap_or(0);
            let paused = |k: &str| w.paused.contains(&k) || w.paused.contains(&"ALL");
            let slots = Slots {
                total: w.total,
                running_total: started.len() + already.len(),
                limit: &limit,
                running: &run,
                paused: &paused,
                free: &free,
                capacity: &capacity,
                allow: &|_| true,
            };
            let Some(next) = q.pick(&slots) else {
                break;
            };
            // Units are granted only to a job they fit (the daemon
            // rejects one that needs more than exists, at its claim).
            if next.needs().iter().all(|(r, n)| free[r] >= *n as usize) {
                for (r, n) in next.needs() {
                    *free.get_mut(r).unwrap() -= *n as usize;
                }
            }
            *running.entry(next.kind.to_string()).or_default() += 1;
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
            q.push(j, at(10), &pending);
        }
        assert_eq!(drain(&mut q, &World::plain(10), 10), ["b", "d", "c", "a"]);
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
                q.push(
                    job(&format!("j{i}"), kind, 0, i as u64, None),
                    at(10),
                    &pending,
                );
            }
            let w = World {
                limits,
                ..World::plain(*total)
            };
            assert_eq!(drain(&mut q, &w, 10), *want, "total {total} {limits:?}");
        }
    }

    #[test]
    fn not_before_holds_a_job_until_its_time() {
        let mut q = Queue::default();
        q.push(job("late", "t", 9, 0, Some(100)), at(10), &pending);
        q.push(job("now", "t", 0, 1, None), at(10), &pending);
        assert_eq!(q.next_wakeup(), Some(at(100)));
        assert_eq!(drain(&mut q, &World::plain(10), 50), ["now"]);
        assert_eq!(drain(&mut q, &World::plain(10), 100), ["late"]);
        assert_eq!(q.next_wakeup(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn replacing_and_removing_keep_the_indexes_consistent() {
        let mut q = Queue::default();
        q.push(job("a", "t", 0, 0, Some(100)), at(10), &pending);
        q.push(job("a", "t", 0, 0, None), at(10), &pending);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_wakeup(), None);
        assert_eq!(q.name_of("a"), Some("a.toml"));
        assert!(q.remove("a.toml").is_some());
        assert!(q.is_empty() && q.name_of("a").is_none());
        assert_eq!(drain(&mut q, &World::plain(10), 1000), Vec::<String>::new());
        // A held job removed leaves no trace in the parents' index.
        let mut child = job("c", "t", 0, 0, None);
        child.extra_mut().after = vec!["p".into()];
        q.push(child, at(10), &pending);
        assert_eq!(q.awaited().count(), 1);
        assert!(q.remove("c.toml").is_some());
        assert_eq!(q.awaited().count(), 0);
        q.parent_ended("p", Parent::Ended(Status::Succeeded), at(10));
        assert!(q.is_empty() && q.first(10).is_empty());
    }

    #[test]
    fn first_rows_follow_start_order() {
        let mut q = Queue::default();
        q.push(job("d", "x", 0, 0, Some(100)), at(10), &pending);
        q.push(job("b", "y", 0, 2, None), at(10), &pending);
        q.push(job("a", "x", 1, 3, None), at(10), &pending);
        q.push(job("c", "y", 0, 1, None), at(10), &pending);
        let mut e = job("e", "x", 9, 0, None);
        e.extra_mut().after = vec!["a".into()];
        q.push(e, at(10), &pending);
        let ids: Vec<&str> = q.first(3).iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        let ids: Vec<&str> = q.first(10).iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b", "d", "e"], "held ones last");
        assert_eq!(q.counts()["x"], 3);
        assert_eq!(q.waiting_for("e.toml"), ["a"]);
    }

    /// Dependencies: how a child's parents decide whether it is ready,
    /// held or doomed when it is queued.
    #[test]
    fn a_child_is_ready_held_or_doomed_by_what_its_parents_became() {
        use Parent::{Ended, Gone, Pending};
        use Status::{Cancelled, Failed, Succeeded};
        type Case = (
            &'static [&'static str],
            &'static [&'static str],
            &'static [(&'static str, Parent)],
            &'static str,
        );
        let cases: &[Case] = &[
            (&["p"], &[], &[("p", Ended(Succeeded))], "ready"),
            (&["p"], &[], &[("p", Pending)], "held p"),
            (
                &["p"],
                &[],
                &[("p", Ended(Failed))],
                "doomed dependency p failed",
            ),
            (&["p"], &[], &[], "doomed dependency p unknown"),
            (&[], &["p"], &[("p", Ended(Failed))], "ready"),
            (&[], &["p"], &[("p", Gone)], "ready"),
            (&[], &["p"], &[("p", Pending)], "held p"),
            (
                &["p", "q"],
                &["r"],
                &[("p", Ended(Succeeded)), ("q", Pending), ("r", Pending)],
                "held q r",
            ),
            (
                &["p", "q"],
                &[],
                &[("p", Pending), ("q", Ended(Cancelled))],
                "doomed dependency q cancelled",
            ),
        ];
        for (after, after_any, table, want) in cases {
            let mut q = Queue::default();
            let mut c = job("c", "t", 0, 0, None);
            c.extra_mut().after = after.iter().map(|s| s.to_string()).collect();
            c.extra_mut().after_any = after_any.iter().map(|s| s.to_string()).collect();
            assert_eq!(q.push(c, at(10), &parents(table)), Pushed::Queued);
            let doomed = q.take_doomed();
            let got = if let Some((j, why)) = doomed.first() {
                assert_eq!(j.id, "c");
                format!("doomed {why}")
            } else if q.waiting_for("c.toml").is_empty() {
                assert_eq!(drain(&mut q, &World::plain(9), 10), ["c"]);
                "ready".to_string()
            } else {
                assert!(drain(&mut q, &World::plain(9), 10).is_empty());
                format!("held {}", q.waiting_for("c.toml").join(" "))
            };
            assert_eq!(
                got, *want,
                "after {after:?} after_any {after_any:?} {table:?}"
            );
            if got.starts_with("doomed") {
                assert!(q.is_empty(), "a doomed job leaves the queue");
            }
        }
    }

    /// A diamond: a → (b, c) → d, with `e` after d and `f` after_any d.
    /// When b fails, d is cancelled, then e (after d) is, but f runs.
    #[test]
    fn a_failure_cancels_down_the_tree_and_after_any_children_still_run() {
        let mut q = Queue::default();
        let mut add = |name: &str, after: &[&str], after_any: &[&str]| {
            let mut j = job(name, "t", 0, 0, None);
            j.extra_mut().after = after.iter().map(|s| s.to_string()).collect();
            j.extra_mut().after_any = after_any.iter().map(|s| s.to_string()).collect();
            q.push(j, at(0), &pending);
        };
        add("b", &["a"], &[]);
        add("c", &["a"], &[]);
        add("d", &["b", "c"], &[]);
        add("e", &["d"], &[]);
        add("f", &[], &["d"]);
        let w = World::plain(9);
        assert!(drain(&mut q, &w, 0).is_empty(), "all wait for a");
        q.parent_ended("a", Parent::Ended(Status::Succeeded), at(1));
        assert_eq!(drain(&mut q, &w, 1), ["b", "c"]);
        q.parent_ended("c", Parent::Ended(Status::Succeeded), at(2));
        assert_eq!(q.waiting_for("d.toml"), ["b"]);
        q.parent_ended("b", Parent::Ended(Status::Failed), at(3));
        // The daemon ends each doomed job and tells the queue, as it does
        // for every record: that reaches the next generation.
        let mut cancelled = Vec::new();
        loop {
            let doomed = q.take_doomed();
            if doomed.is_empty() {
                break;
            }
            for (j, why) in doomed {
                cancelled.push(format!("{} ({why})", j.id));
                q.parent_ended(&j.id, Parent::Ended(Status::Cancelled), at(4));
            }
        }
        assert_eq!(
            cancelled,
            ["d (dependency b failed)", "e (dependency d cancelled)"]
        );
        assert_eq!(drain(&mut q, &w, 4), ["f"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_parent_found_gone_later_dooms_after_and_releases_after_any() {
        let mut q = Queue::default();
        let mut a = job("a", "t", 0, 0, None);
        a.extra_mut().after = vec!["p".into()];
        let mut b = job("b", "t", 0, 1, Some(50));
        b.extra_mut().after_any = vec!["p".into()];
        q.push(a, at(0), &pending);
        q.push(b, at(0), &pending);
        q.parent_ended("p", Parent::Gone, at(10));
        let doomed: Vec<(String, String)> = q
            .take_doomed()
            .into_iter()
            .map(|(j, w)| (j.id, w))
            .collect();
        assert_eq!(doomed, [("a".into(), "dependency p unknown".into())]);
        // b's not_before still holds it once its parent is gone.
        assert_eq!(q.next_wakeup(), Some(at(50)));
        assert!(drain(&mut q, &World::plain(9), 10).is_empty());
        assert_eq!(drain(&mut q, &World::plain(9), 50), ["b"]);
    }

    #[test]
    fn at_most_one_queued_job_per_type_and_unique_key() {
        let mut q = Queue::default();
        let u = |name: &str, kind: &str, key: &str| {
            let mut j = job(name, kind, 0, 0, None);
            j.extra_mut().unique = Some(key.into());
            j
        };
        let cases = [
            (u("a", "t", "k"), Pushed::Queued),
            (u("b", "t", "k"), Pushed::Duplicate("a".into())),
            // Another type, or another key: not a duplicate.
            (u("c", "s", "k"), Pushed::Queued),
            (u("d", "t", "l"), Pushed::Queued),
            // The same file read again replaces itself.
            (u("a", "t", "k"), Pushed::Queued),
        ];
        for (j, want) in cases {
            let id = j.id.clone();
            assert_eq!(q.push(j, at(0), &pending), want, "{id}");
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.holder("t", "k").map(|j| j.id.as_str()), Some("a"));
        // Once it has left the queue (started, cancelled), the key is
        // free here.
        assert!(q.remove("a.toml").is_some());
        assert_eq!(q.holder("t", "k"), None);
        assert_eq!(q.push(u("e", "t", "k"), at(0), &pending), Pushed::Queued);
    }

    #[test]
    fn a_paused_type_starts_nothing_and_blocks_no_other_type() {
        let cases: [(&[&str], &[&str]); 4] = [
            (&[], &["a1", "b1", "a2", "b2"]),
            (&["a"], &["b1", "b2"]),
            (&["b"], &["a1", "a2"]),
            (&["ALL"], &[]),
        ];
        for (paused, want) in cases {
            let mut q = Queue::default();
            for (i, (name, kind)) in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")]
                .into_iter()
                .enumerate()
            {
                q.push(job(name, kind, 0, i as u64, None), at(0), &pending);
            }
            let w = World {
                paused,
                ..World::plain(9)
            };
            assert_eq!(drain(&mut q, &w, 0), want, "paused {paused:?}");
            // Resumed: the rest start, in order.
            let rest = drain(&mut q, &World::plain(9), 0);
            assert_eq!(rest.len() + want.len(), 4, "paused {paused:?}");
        }
    }

    fn needing(name: &str, submitted: u64, needs: &[(&str, u32)]) -> Queued {
        let mut j = job(name, "t", 0, submitted, None);
        j.extra_mut().needs = needs.iter().map(|(r, n)| (r.to_string(), *n)).collect();
        j
    }

    #[test]
    fn jobs_start_only_when_their_needs_are_free_and_never_over_commit() {
        type Case = (
            &'static [(&'static str, usize)],
            &'static [(&'static str, &'static [(&'static str, u32)])],
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            // Three one-GPU jobs on two GPUs: two start.
            (
                &[("gpu", 2)],
                &[
                    ("a", &[("gpu", 1)]),
                    ("b", &[("gpu", 1)]),
                    ("c", &[("gpu", 1)]),
                ],
                &["a", "b"],
            ),
            // A job needing nothing is never held back.
            (
                &[("gpu", 1)],
                &[("a", &[("gpu", 1)]), ("b", &[("gpu", 1)]), ("c", &[])],
                &["a", "c"],
            ),
            // A small job behind a big one that does not fit may go by.
            (
                &[("gpu", 2)],
                &[
                    ("a", &[("gpu", 1)]),
                    ("big", &[("gpu", 2)]),
                    ("b", &[("gpu", 1)]),
                ],
                &["a", "b"],
            ),
            (
                &[("gpu", 2), ("lic", 1)],
                &[
                    ("a", &[("gpu", 2), ("lic", 1)]),
                    ("b", &[("lic", 1)]),
                    ("c", &[("gpu", 1)]),
                ],
                &["a"],
            ),
        ];
        for (resources, jobs, want) in cases {
            let mut q = Queue::default();
            for (i, (name, needs)) in jobs.iter().enumerate() {
                q.push(needing(name, i as u64, needs), at(0), &pending);
            }
            let w = World {
                resources,
                ..World::plain(9)
            };
            assert_eq!(drain(&mut q, &w, 0), *want, "{resources:?} {jobs:?}");
        }
    }

    /// The starvation rule: the head that cannot fit lets jobs behind it
    /// that take what it needs go by at most BYPASS_LIMIT times, then
    /// reserves; jobs needing other things still go.
    #[test]
    fn a_big_job_is_passed_a_bounded_number_of_times_then_reserves() {
        let w = World {
            resources: &[("gpu", 2), ("lic", 1)],
            ..World::plain(99)
        };
        let mut q = Queue::default();
        q.push(needing("big", 0, &[("gpu", 2)]), at(0), &pending);
        for i in 0..10 {
            q.push(
                needing(&format!("s{i}"), 1 + i, &[("gpu", 1)]),
                at(0),
                &pending,
            );
            q.push(
                needing(&format!("l{i}"), 1 + i, &[("lic", 1)]),
                at(0),
                &pending,
            );
        }
        // One GPU is busy with a job that is not in the queue: big does
        // not fit; one small job at a time takes the other GPU and ends.
        let mut order = Vec::new();
        for _ in 0..10 {
            let started = drain_while_running(&mut q, &w, 0, &[("t", &[("gpu", 1)])]);
            order.push(started.join(","));
        }
        let small: Vec<&String> = order.iter().filter(|s| s.contains('s')).collect();
        assert_eq!(
            small.len(),
            BYPASS_LIMIT as usize,
            "small jobs passed big {BYPASS_LIMIT} times, then none: {order:?}"
        );
        assert!(
            order.iter().all(|s| s.contains('l')),
            "a job needing something else is never held back: {order:?}"
        );
        // Once the busy GPU is free, big starts before any small job.
        let started = drain(&mut q, &w, 0);
        assert_eq!(
            started.first().map(String::as_str),
            Some("big"),
            "{started:?}"
        );
    }

    #[test]
    fn a_job_needing_more_than_exists_is_handed_out_to_be_rejected() {
        let mut q = Queue::default();
        q.push(needing("huge", 0, &[("gpu", 3)]), at(0), &pending);
        q.push(needing("ok", 1, &[("gpu", 1)]), at(0), &pending);
        let w = World {
            resources: &[("gpu", 2)],
            ..World::plain(9)
        };
        assert_eq!(drain(&mut q, &w, 0), ["huge", "ok"]);
    }
}
