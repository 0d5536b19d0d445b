//! Schedules: `[schedules.NAME]` in `raccoond.toml`, and the pure
//! computation of their ticks.
//!
//! Takes a schedule's table as the configuration reader found it and gives
//! a [`Schedule`]: when it ticks (`cron`, five fields, in a time zone; or
//! `every`, a whole number of seconds), whether a missed tick is caught up,
//! and the text of the job each tick submits. That text is judged when the
//! configuration is loaded by `job::check_schedules` (the judge every
//! submission goes through), so a schedule whose job the daemon would
//! reject never loads; this module only shapes it.
//!
//! Then, given a schedule, `now` and the newest tick already fired on the
//! spool, it says which ticks are due ([`Schedule::due`]), what happens at
//! start ([`Schedule::at_start`]) and whether a tick may still be claimed
//! ([`may_claim`]). Who fires a tick is decided on the spool, by the
//! daemon (`daemon::schedules`) and the spool (`spool::ticks`), never here.
//!
//! Pure: no IO and no clock; `now` is an argument. The one thing read from
//! the system, the daemon's own time zone, is found by [`zone`] and handed
//! in by the configuration reader.
//!
//! Invariants:
//! - a tick is a whole second from 1970-01-01 to 9999-12-31 ([`Tick`]); a
//!   schedule whose next tick would fall outside has no next tick;
//! - `every` ticks are the multiples of `every` since the Unix epoch, so
//!   every daemon sharing a spool computes the same ticks, whenever it
//!   started; `cron` ticks are what croner gives in the schedule's zone
//!   (a time skipped by a DST change runs at the first instant after the
//!   gap; a repeated hour runs once for a fixed-time pattern, twice for an
//!   interval pattern);
//! - a tick's job id, `NAME-YYYYMMDDTHHMMSSZ`, is a valid job id: a name is
//!   at most [`MAX_NAME`] characters.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Deserialize;

use crate::time::Dur;

pub mod zone;

pub use zone::Zone;

/// The longest schedule name: with `-` and the 16 characters of a tick's
/// stamp, its jobs' ids stay within the 100 characters of an id.
pub const MAX_NAME: usize = 100 - 1 - STAMP_LEN;

/// `YYYYMMDDTHHMMSSZ`.
const STAMP_LEN: usize = 16;

/// When more ticks than this are due at once (the daemon was stopped by
/// a debugger or a suspend, the clock was set forward), only the latest
/// fires: the same rule as `catch_up`. Fewer are fired one by one, oldest
/// first, so that a loop that is merely late loses none.
pub const MAX_LATE: usize = 16;

/// Job keys a schedule's `job` table may not set: the schedule sets
/// `unique` itself, `attempts` and `submitted` are the daemon's
/// bookkeeping, and a fixed `not_before` would hold every tick's job alike.
const SET_BY_THE_SCHEDULE: [&str; 4] = ["unique", "attempts", "submitted", "not_before"];

/// The seconds from the epoch to 9999-12-31T23:59:59Z, the last tick.
const LAST_SECS: i64 = 253_402_300_799;

/// A schedule's table as `raccoond.toml` writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSchedule {
    cron: Option<String>,
    every: Option<Dur>,
    tz: Option<String>,
    catch_up: Option<bool>,
    job: Option<toml::Table>,
}

/// One instant a schedule fires at: a whole second within the range.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(i64);

impl std::fmt::Debug for Tick {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Tick({})", self.stamp())
    }
}

impl Tick {
    /// The tick at `secs` after the epoch, when that is within 1970 to 9999.
    pub fn from_secs(secs: i64) -> Option<Tick> {
        (0..=LAST_SECS).contains(&secs).then_some(Tick(secs))
    }

    /// The whole second `t` falls in, held within the range.
    pub fn floor(t: SystemTime) -> Tick {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(LAST_SECS),
            Err(_) => 0,
        };
        Tick(secs.clamp(0, LAST_SECS))
    }

    pub fn secs(self) -> i64 {
        self.0
    }

    /// The instant of the tick.
    pub fn time(self) -> SystemTime {
        // Within 0..=LAST_SECS: the cast and the sum cannot fail.
        UNIX_EPOCH + Duration::from_secs(self.0.unsigned_abs())
    }

    /// `20261129T030000Z`: the tick in a job id and a marker's name. Its
    /// order as text is its order in time.
    pub fn stamp(self) -> String {
        match DateTime::<Utc>::from_timestamp(self.0, 0) {
            Some(t) => t.format("%Y%m%dT%H%M%SZ").to_string(),
            None => "99991231T235959Z".into(),
        }
    }

    /// A stamp read back; `None` unless it is exactly one [`Tick::stamp`]
    /// writes.
    pub fn parse_stamp(text: &str) -> Option<Tick> {
        if text.len() != STAMP_LEN || !text.is_ascii() {
            return None;
        }
        let t = chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ").ok()?;
        let tick = Tick::from_secs(t.and_utc().timestamp())?;
        (tick.stamp() == text).then_some(tick)
    }

    /// The tick just before this one, as a second.
    fn before(self) -> Option<Tick> {
        Tick::from_secs(self.0 - 1)
    }

    /// The tick just after this one, as a second.
    fn after(self) -> Option<Tick> {
        Tick::from_secs(self.0 + 1)
    }
}

/// When a schedule ticks.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// A five-field cron expression, in a time zone.
    Cron {
        /// The expression as written, for people.
        expr: String,
        /// The parsed pattern (boxed: it is large, and schedules are few).
        cron: Box<Cron>,
        zone: Zone,
    },
    /// Every so many seconds (at least 1), aligned to the Unix epoch.
    Every(u64),
}

impl When {
    /// A cron expression of five fields (minute, hour, day of month, month,
    /// day of week; names and croner's `L`, `#`, `W` and `@daily` allowed).
    pub fn cron(expr: &str, zone: Zone) -> Result<When, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("{expr:?}: {e}"))?;
        // A pattern that matches no date (`0 0 31 2 *`) would never fire:
        // say so now rather than wait forever. Asked from a fixed instant
        // so that loading does not depend on the clock.
        let from = DateTime::<Utc>::from_timestamp(946_684_800, 0)
            .map(|t| t.with_timezone(&zone.tz))
            .ok_or("the year 2000 is out of range")?;
        if cron.find_next_occurrence(&from, true).is_err() {
            return Err(format!("{expr:?} matches no date"));
        }
        Ok(When::Cron {
            expr: expr.to_string(),
            cron: Box::new(cron),
            zone,
        })
    }

    /// Every `d`: a whole number of seconds, at least one (a tick's id
    /// names a second).
    pub fn every(d: Duration) -> Result<When, String> {
        if d.subsec_nanos() != 0 {
            return Err(format!(
                "{} is not a whole number of seconds (a tick is named by its second)",
                humantime::format_duration(d)
            ));
        }
        if d.as_secs() == 0 {
            return Err("must be at least 1s".into());
        }
        Ok(When::Every(d.as_secs()))
    }

    /// `cron "0 3 * * *" (Europe/Paris)` or `every 1h`: for logs and the
    /// report. Two schedules that read the same tick the same.
    pub fn describe(&self) -> String {
        match self {
            When::Cron { expr, zone, .. } => format!("cron {expr:?} ({})", zone.name()),
            When::Every(secs) => format!("every {}", format_every(*secs)),
        }
    }

    /// The first tick at or after `t`.
    pub fn first_at_or_after(&self, t: Tick) -> Option<Tick> {
        match self {
            When::Every(e) => {
                let e = i64::try_from(*e).ok()?;
                let k = t.0.checked_add(e - 1)? / e;
                Tick::from_secs(k.checked_mul(e)?)
            }
            When::Cron { cron, zone, .. } => {
                let from = zone.tz.timestamp_opt(t.0, 0).single()?;
                let next = cron.find_next_occurrence(&from, true).ok()?;
                Tick::from_secs(next.timestamp())
            }
        }
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: Tick) -> Option<Tick> {
        match self {
            When::Every(e) => {
                let e = i64::try_from(*e).ok()?;
                Tick::from_secs(t.0 / e * e)
            }
            When::Cron { cron, zone, .. } => {
                let from = zone.tz.timestamp_opt(t.0, 0).single()?;
                let prev = cron.find_previous_occurrence(&from, true).ok()?;
                Tick::from_secs(prev.timestamp())
            }
        }
    }

    /// The first tick after `t`.
    pub fn first_after(&self, t: Tick) -> Option<Tick> {
        self.first_at_or_after(t.after()?)
    }
}

/// `3600` → `1h`, `5400` → `1h 30m`: as humantime writes it (and
/// [`crate::time::parse_duration`] reads it back).
pub fn format_every(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// A schedule, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Its name in `[schedules.NAME]`: the prefix of its jobs' ids, their
    /// `unique` key, and the folder of its tick markers.
    pub name: String,
    /// When it ticks.
    pub when: When,
    /// Whether the latest tick missed while no daemon ran is submitted at
    /// the next start.
    pub catch_up: bool,
    /// The type of its jobs, for the report and the client.
    pub kind: String,
    /// The job file each tick submits: the `job` table with `unique =
    /// NAME`, exactly as `job::parse` accepted it at load.
    pub job_text: String,
}

/// What a schedule does when the daemon starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The missed tick to submit now (`catch_up = true` only).
    pub catch_up: Option<Tick>,
    /// The first tick to wait for: the first at or after the start.
    pub next: Option<Tick>,
}

/// What is due when the loop wakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The ticks to fire now, oldest first.
    pub fire: Vec<Tick>,
    /// The first and last tick passed over after a long stall (more than
    /// [`MAX_LATE`] due at once), for the log.
    pub skipped: Option<(Tick, Tick)>,
    /// The tick to wait for next; `None`: the schedule has no more.
    pub next: Option<Tick>,
}

/// Whether a tick may still be claimed, given the newest tick fired on
/// the spool: only a tick after it. A tick at or before it was fired (or
/// passed over by a daemon that fired a later one); its marker may have
/// been pruned since, so its absence proves nothing.
pub fn may_claim(tick: Tick, newest_fired: Option<Tick>) -> bool {
    newest_fired.is_none_or(|n| tick > n)
}

impl Schedule {
    /// Checks a `[schedules.NAME]` table. `local` gives the daemon's time
    /// zone, asked only for a `cron` without `tz`. Errors name the key:
    /// `schedules.NAME.cron: …`.
    pub fn load(
        name: &str,
        raw: FileSchedule,
        local: &dyn Fn() -> Result<Zone, String>,
    ) -> Result<Schedule, String> {
        let at = |key: &str, msg: String| format!("schedules.{name}.{key}: {msg}");
        if !valid_name(name) {
            return Err(format!(
                "schedules.{name:?}: a schedule name is 1-{MAX_NAME} characters of A-Z a-z 0-9 . _ -, \
                 not starting with a dot (its jobs are NAME-YYYYMMDDTHHMMSSZ)"
            ));
        }
        let when = match (raw.cron, raw.every) {
            (Some(_), Some(_)) => {
                return Err(format!("schedules.{name}: set cron or every, not both"));
            }
            (None, None) => {
                return Err(format!(
                    "schedules.{name}: set cron = \"0 3 * * *\" or every = \"1h\""
                ));
            }
            (Some(expr), None) => {
                let zone = match raw.tz {
                    Some(tz) => Zone::named(&tz).map_err(|e| at("tz", e))?,
                    None => local().map_err(|e| at("tz", e))?,
                };
                When::cron(&expr, zone).map_err(|e| at("cron", e))?
            }
            (None, Some(every)) => {
                if raw.tz.is_some() {
                    return Err(at(
                        "tz",
                        "goes with cron only: every's ticks are counted from the Unix epoch, in no zone"
                            .into(),
                    ));
                }
                When::every(every.0).map_err(|e| at("every", e))?
            }
        };
        let Some(mut table) = raw.job else {
            return Err(format!(
                "schedules.{name}: job is required, e.g. job = {{ type = \"make_report\" }}"
            ));
        };
        if let Some(key) = SET_BY_THE_SCHEDULE.iter().find(|k| table.contains_key(**k)) {
            return Err(at(
                &format!("job.{key}"),
                "is set by the schedule, not in its job".into(),
            ));
        }
        let Some(toml::Value::String(kind)) = table.get("type").cloned() else {
            return Err(at(
                "job",
                "type is required, e.g. job = { type = \"make_report\" }".into(),
            ));
        };
        table.insert("unique".into(), toml::Value::String(name.to_string()));
        let job_text = toml::to_string(&table).map_err(|e| at("job", e.to_string()))?;
        Ok(Schedule {
            name: name.to_string(),
            when,
            catch_up: raw.catch_up.unwrap_or(false),
            kind,
            job_text,
        })
    }

    /// The id of the job a tick submits: `NAME-YYYYMMDDTHHMMSSZ`.
    pub fn job_id(&self, tick: Tick) -> String {
        job_id(&self.name, tick)
    }

    /// What happens at the daemon's start, at `now`, with `newest_fired`
    /// the newest tick marked on the spool. Ticks from the start's second
    /// on fire as they come. With `catch_up`, the latest tick before that
    /// second is submitted now when it is after the newest fired one; a
    /// schedule that never fired on this spool (no marker) is new and
    /// catches nothing up, so that adding a nightly schedule at noon does
    /// not run it at once.
    pub fn at_start(&self, now: SystemTime, newest_fired: Option<Tick>) -> Start {
        let start = Tick::floor(now);
        let catch_up = if self.catch_up && newest_fired.is_some() {
            start
                .before()
                .and_then(|t| self.when.latest_at_or_before(t))
                .filter(|t| may_claim(*t, newest_fired))
        } else {
            None
        };
        Start {
            catch_up,
            next: self.when.first_at_or_after(start),
        }
    }

    /// The ticks due at `now` when `next` is the one waited for: each
    /// tick up to `now`, oldest first; after a stall of more than
    /// [`MAX_LATE`] ticks, only the latest.
    pub fn due(&self, next: Option<Tick>, now: SystemTime) -> Due {
        let now = Tick::floor(now);
        let Some(first) = next.filter(|t| *t <= now) else {
            return Due {
                fire: Vec::new(),
                skipped: None,
                next,
            };
        };
        let mut fire = vec![first];
        let mut last = first;
        while fire.len() <= MAX_LATE {
            match self.when.first_after(last) {
                Some(t) if t <= now => {
                    fire.push(t);
                    last = t;
                }
                _ => break,
            }
        }
        let mut skipped = None;
        if fire.len() > MAX_LATE {
            let latest = self.when.latest_at_or_before(now).unwrap_or(last);
            let passed = latest
                .before()
                .and_then(|t| self.when.latest_at_or_before(t))
                .filter(|t| *t >= first);
            skipped = passed.map(|p| (first, p));
            fire = vec![latest];
            last = latest;
        }
        Due {
            fire,
            skipped,
            next: self.when.first_after(last),
        }
    }
}

/// The id of the job schedule `name` submits for `tick`.
pub fn job_id(name: &str, tick: Tick) -> String {
    format!("{name}-{}", tick.stamp())
}

/// A schedule's name: a job id's characters, short enough that its jobs'
/// ids are ids.
pub fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME && crate::ids::valid_id(name)
}

impl FromStr for Tick {
    type Err = String;

    fn from_str(s: &str) -> Result<Tick, String> {
        Tick::parse_stamp(s).ok_or_else(|| format!("{s:?} is not a tick (YYYYMMDDTHHMMSSZ)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use std::path::Path;

    /// The instant of an RFC 3339 text.
    fn at(text: &str) -> SystemTime {
        crate::time::parse_rfc3339(text).unwrap()
    }

    fn tick(text: &str) -> Tick {
        Tick::floor(at(text))
    }

    fn stamps(ticks: &[Tick]) -> Vec<String> {
        ticks.iter().map(|t| t.stamp()).collect()
    }

    fn config() -> Config {
        let text = format!(
            "[types.report]\ncommand = [\"report\", \"{{n}}\"]\nuser = \"{}\"\nparams = {{ n = \"integer\" }}\n",
            crate::config::current_user()
        );
        Config::from_text(None, &text, Path::new("/"), &Overrides::default()).unwrap()
    }

    fn paris() -> Result<Zone, String> {
        Zone::named("Europe/Paris")
    }

    fn load(name: &str, body: &str) -> Result<Schedule, String> {
        let raw: FileSchedule = toml::from_str(body).map_err(|e| e.to_string())?;
        let s = Schedule::load(name, raw, &paris)?;
        // The job's judge, as the configuration's loading runs it.
        crate::job::parse(s.job_text.as_bytes(), &config())
            .map_err(|e| format!("schedules.{name}.job: {e}"))?;
        Ok(s)
    }

    fn cron(expr: &str, zone: &str) -> Schedule {
        load(
            "s",
            &format!(
                "cron = {expr:?}\ntz = {zone:?}\njob = {{ type = \"report\", params = {{ n = 1 }} }}\n"
            ),
        )
        .unwrap()
    }

    fn every(d: &str, catch_up: bool) -> Schedule {
        load(
            "s",
            &format!(
                "every = {d:?}\ncatch_up = {catch_up}\njob = {{ type = \"report\", params = {{ n = 1 }} }}\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn stamps_are_the_ticks_second_in_utc_and_read_back() {
        let t = tick("2026-11-29T03:00:00.999Z");
        assert_eq!(t.stamp(), "20261129T030000Z");
        assert_eq!(Tick::parse_stamp("20261129T030000Z"), Some(t));
        assert_eq!(Tick::from_secs(0).unwrap().stamp(), "19700101T000000Z");
        assert_eq!(
            Tick::from_secs(LAST_SECS).unwrap().stamp(),
            "99991231T235959Z"
        );
        for bad in [
            "",
            "20261129T030000",
            "20261129T030000z",
            "20261329T030000Z",
            "2026-11-29T03:00Z",
            "20261129T030000Z.",
            "+0261129T030000Z",
        ] {
            assert_eq!(Tick::parse_stamp(bad), None, "{bad:?}");
        }
        assert_eq!(Tick::from_secs(-1), None);
        assert_eq!(Tick::from_secs(LAST_SECS + 1), None);
        assert_eq!(Tick::floor(UNIX_EPOCH - Duration::from_secs(5)).secs(), 0);
        assert_eq!(
            job_id("nightly", t),
            "nightly-20261129T030000Z",
            "the id of a tick's job"
        );
        let longest = "n".repeat(MAX_NAME);
        assert!(crate::ids::valid_id(&job_id(&longest, t)));
    }

    #[test]
    fn cron_ticks_in_a_zone_from_a_fixed_now() {
        // (expression, zone, now, first at or after, latest at or before)
        let cases = [
            (
                "0 3 * * *",
                "UTC",
                "2026-11-29T10:00:00Z",
                "2026-11-30T03:00:00Z",
                "2026-11-29T03:00:00Z",
            ),
            (
                "0 3 * * *",
                "Europe/Paris",
                "2026-11-29T10:00:00Z",
                "2026-11-30T02:00:00Z",
                "2026-11-29T02:00:00Z",
            ),
            (
                "*/15 * * * *",
                "UTC",
                "2026-11-29T10:07:30Z",
                "2026-11-29T10:15:00Z",
                "2026-11-29T10:00:00Z",
            ),
            // A tick exactly at now is both.
            (
                "30 10 * * *",
                "UTC",
                "2026-11-29T10:30:00Z",
                "2026-11-29T10:30:00Z",
                "2026-11-29T10:30:00Z",
            ),
            (
                "0 9 * * mon-fri",
                "America/New_York",
                "2026-11-28T12:00:00Z",
                "2026-11-30T14:00:00Z",
                "2026-11-27T14:00:00Z",
            ),
            (
                "@monthly",
                "UTC",
                "2026-11-29T00:00:00Z",
                "2026-12-01T00:00:00Z",
                "2026-11-01T00:00:00Z",
            ),
            (
                "0 0 29 2 *",
                "UTC",
                "2026-11-29T00:00:00Z",
                "2028-02-29T00:00:00Z",
                "2024-02-29T00:00:00Z",
            ),
        ];
        for (expr, zone, now, next, prev) in cases {
            let s = cron(expr, zone);
            let now = tick(now);
            assert_eq!(
                s.when.first_at_or_after(now),
                Some(tick(next)),
                "{expr} in {zone}: next"
            );
            assert_eq!(
                s.when.latest_at_or_before(now),
                Some(tick(prev)),
                "{expr} in {zone}: latest"
            );
        }
    }

    /// Europe/Paris: clocks go forward at 02:00 on 2026-03-29 (CET to
    /// CEST, 01:00Z) and back at 03:00 on 2026-10-25 (CEST to CET, 01:00Z).
    #[test]
    fn dst_changes_in_paris_follow_croner() {
        let ticks = |s: &Schedule, from: &str, n: usize| {
            let mut out = Vec::new();
            let mut t = s.when.first_at_or_after(tick(from));
            while let Some(x) = t {
                if out.len() == n {
                    break;
                }
                out.push(x);
                t = s.when.first_after(x);
            }
            stamps(&out)
        };
        // 02:30 does not exist on the 29th: that day's run is at the first
        // instant after the gap (03:00 CEST = 01:00Z), once.
        assert_eq!(
            ticks(
                &cron("30 2 * * *", "Europe/Paris"),
                "2026-03-28T00:00:00Z",
                3
            ),
            ["20260328T013000Z", "20260329T010000Z", "20260330T003000Z"]
        );
        // 02:30 happens twice on 25 October: a fixed-time job runs once,
        // at the first.
        assert_eq!(
            ticks(
                &cron("30 2 * * *", "Europe/Paris"),
                "2026-10-24T00:00:00Z",
                3
            ),
            ["20261024T003000Z", "20261025T003000Z", "20261026T013000Z"]
        );
        // An interval job runs in both of the repeated hours.
        assert_eq!(
            ticks(
                &cron("30 * * * *", "Europe/Paris"),
                "2026-10-24T23:00:00Z",
                4
            ),
            [
                "20261024T233000Z",
                "20261025T003000Z",
                "20261025T013000Z",
                "20261025T023000Z"
            ]
        );
        // Over the gap, an hourly job skips the hour that does not exist.
        assert_eq!(
            ticks(
                &cron("0 * * * *", "Europe/Paris"),
                "2026-03-29T00:00:00Z",
                3
            ),
            ["20260329T000000Z", "20260329T010000Z", "20260329T020000Z"]
        );
        // Daily at 03:00: 24 hours apart but across a change, 23 or 25.
        let s = cron("0 3 * * *", "Europe/Paris");
        let a = s
            .when
            .first_at_or_after(tick("2026-03-28T12:00:00Z"))
            .unwrap();
        let b = s.when.first_after(a).unwrap();
        assert_eq!(
            (a.stamp(), b.stamp()),
            ("20260329T010000Z".into(), "20260330T010000Z".into())
        );
        let a = s
            .when
            .latest_at_or_before(tick("2026-10-26T12:00:00Z"))
            .unwrap();
        assert_eq!(a.stamp(), "20261026T020000Z");
        assert_eq!(
            s.when
                .latest_at_or_before(a.before().unwrap())
                .unwrap()
                .stamp(),
            "20261025T020000Z"
        );
    }

    #[test]
    fn every_ticks_are_aligned_to_the_epoch_whatever_the_start() {
        // (every, now, first at or after, latest at or before)
        let cases = [
            (
                "1h",
                "2026-11-29T10:20:00Z",
                "2026-11-29T11:00:00Z",
                "2026-11-29T10:00:00Z",
            ),
            (
                "1h",
                "2026-11-29T10:00:00Z",
                "2026-11-29T10:00:00Z",
                "2026-11-29T10:00:00Z",
            ),
            (
                "1s",
                "2026-11-29T10:20:07.5Z",
                "2026-11-29T10:20:07Z",
                "2026-11-29T10:20:07Z",
            ),
            (
                "7m",
                "1970-01-01T00:10:00Z",
                "1970-01-01T00:14:00Z",
                "1970-01-01T00:07:00Z",
            ),
            // 100 years: the first tick is at the epoch, the next in 2070
            // (365.25-day years).
            (
                "100y",
                "2026-11-29T10:00:00Z",
                "2070-01-01T00:00:00Z",
                "1970-01-01T00:00:00Z",
            ),
        ];
        for (d, now, next, prev) in cases {
            let s = every(d, false);
            let now = tick(now);
            assert_eq!(s.when.first_at_or_after(now), Some(tick(next)), "{d}: next");
            assert_eq!(
                s.when.latest_at_or_before(now),
                Some(tick(prev)),
                "{d}: latest"
            );
        }
        // Past the end of the range there is no next tick.
        let s = every("100y", false);
        assert_eq!(
            s.when.first_after(Tick::from_secs(LAST_SECS - 10).unwrap()),
            None
        );
    }

    #[test]
    fn due_ticks_fire_in_order_and_a_long_stall_fires_only_the_latest() {
        let s = every("1m", false);
        let t = tick;
        // (next waited for, now, ticks fired, skipped, next after)
        type Case = (
            Option<&'static str>,
            &'static str,
            &'static [&'static str],
            Option<(&'static str, &'static str)>,
            Option<&'static str>,
        );
        let cases: [Case; 5] = [
            (
                Some("2026-11-29T10:01:00Z"),
                "2026-11-29T10:00:59.999Z",
                &[],
                None,
                Some("2026-11-29T10:01:00Z"),
            ),
            (
                Some("2026-11-29T10:01:00Z"),
                "2026-11-29T10:01:00.001Z",
                &["2026-11-29T10:01:00Z"],
                None,
                Some("2026-11-29T10:02:00Z"),
            ),
            // Late by two ticks and a half: all three fire, oldest first.
            (
                Some("2026-11-29T10:01:00Z"),
                "2026-11-29T10:03:30Z",
                &[
                    "2026-11-29T10:01:00Z",
                    "2026-11-29T10:02:00Z",
                    "2026-11-29T10:03:00Z",
                ],
                None,
                Some("2026-11-29T10:04:00Z"),
            ),
            // Suspended for an hour: the latest only, the rest named.
            (
                Some("2026-11-29T10:01:00Z"),
                "2026-11-29T11:00:30Z",
                &["2026-11-29T11:00:00Z"],
                Some(("2026-11-29T10:01:00Z", "2026-11-29T10:59:00Z")),
                Some("2026-11-29T11:01:00Z"),
            ),
            (None, "2026-11-29T11:00:30Z", &[], None, None),
        ];
        for (next, now, fire, skipped, after) in cases {
            let due = s.due(next.map(t), at(now));
            let want: Vec<Tick> = fire.iter().map(|f| t(f)).collect();
            assert_eq!(due.fire, want, "{next:?} at {now}");
            assert_eq!(due.skipped, skipped.map(|(a, b)| (t(a), t(b))), "{now}");
            assert_eq!(due.next, after.map(t), "{now}");
        }
        // Exactly MAX_LATE due: all fire.
        let due = s.due(Some(t("2026-11-29T10:01:00Z")), at("2026-11-29T10:16:00Z"));
        assert_eq!(due.fire.len(), MAX_LATE);
        assert_eq!(due.skipped, None);
    }

    #[test]
    fn at_start_catch_up_submits_only_the_latest_missed_tick_once() {
        let now = at("2026-11-29T10:20:30.5Z");
        // (catch_up, newest fired on the spool, caught up, next)
        let cases: [(bool, Option<&str>, Option<&str>); 6] = [
            // Several missed ticks (10:17 to 10:20): only 10:20.
            (
                true,
                Some("2026-11-29T10:16:00Z"),
                Some("2026-11-29T10:20:00Z"),
            ),
            // The latest was fired (by another daemon, or before a crash).
            (true, Some("2026-11-29T10:20:00Z"), None),
            // A marker in the future (a peer's clock is ahead): nothing.
            (true, Some("2026-11-29T10:21:00Z"), None),
            // Never fired on this spool: a new schedule catches nothing up.
            (true, None, None),
            (false, Some("2026-11-29T10:16:00Z"), None),
            (false, None, None),
        ];
        for (catch_up, newest, want) in cases {
            let s = every("1m", catch_up);
            let start = s.at_start(now, newest.map(tick));
            assert_eq!(start.catch_up, want.map(tick), "{catch_up} {newest:?}");
            assert_eq!(start.next, Some(tick("2026-11-29T10:21:00Z")));
        }
        // A tick in the start's own second is not missed: it is next.
        let s = every("1m", true);
        let start = s.at_start(
            at("2026-11-29T10:21:00.7Z"),
            Some(tick("2026-11-29T10:16:00Z")),
        );
        assert_eq!(start.next, Some(tick("2026-11-29T10:21:00Z")));
        assert_eq!(start.catch_up, Some(tick("2026-11-29T10:20:00Z")));
        // A daily cron: missed at 03:00 Paris while down from 01:00 to 09:00.
        let mut s = cron("0 3 * * *", "Europe/Paris");
        s.catch_up = true;
        let start = s.at_start(
            at("2026-11-29T08:00:00Z"),
            Some(tick("2026-11-28T02:00:00Z")),
        );
        assert_eq!(start.catch_up, Some(tick("2026-11-29T02:00:00Z")));
        assert_eq!(start.next, Some(tick("2026-11-30T02:00:00Z")));
    }

    #[test]
    fn a_tick_may_be_claimed_only_after_the_newest_fired() {
        let t = |s| Tick::from_secs(s).unwrap();
        assert!(may_claim(t(10), None));
        assert!(may_claim(t(10), Some(t(9))));
        assert!(!may_claim(t(10), Some(t(10))));
        assert!(!may_claim(t(10), Some(t(11))));
    }

    #[test]
    fn a_schedules_job_is_the_job_table_with_unique_checked_by_the_job_parser() {
        let s = load(
            "nightly",
            "cron = \"0 3 * * *\"\njob = { type = \"report\", priority = 5, params = { n = 3 } }\n",
        )
        .unwrap();
        assert_eq!(s.kind, "report");
        assert!(!s.catch_up);
        let job: toml::Table = toml::from_str(&s.job_text).unwrap();
        assert_eq!(job["unique"].as_str(), Some("nightly"));
        assert_eq!(job["priority"].as_integer(), Some(5));
        let parsed = crate::job::parse(s.job_text.as_bytes(), &config()).unwrap();
        assert_eq!(parsed.priority, 5);
        // No tz: the daemon's zone, as `local` says.
        assert_eq!(s.when.describe(), "cron \"0 3 * * *\" (Europe/Paris)");
        assert_eq!(every("90m", false).when.describe(), "every 1h 30m");
    }

    #[test]
    fn errors_name_the_key_and_what_is_wrong() {
        let job = "job = { type = \"report\", params = { n = 1 } }";
        let cases = [
            (
                "a/b",
                format!("every = \"1h\"\n{job}"),
                "schedules.\"a/b\": a schedule name is 1-83 characters",
            ),
            (
                "x",
                format!("every = \"1h\"\ncron = \"* * * * *\"\n{job}"),
                "schedules.x: set cron or every, not both",
            ),
            (
                "x",
                job.to_string(),
                "schedules.x: set cron = \"0 3 * * *\" or every = \"1h\"",
            ),
            ("x", "every = \"1h\"".into(), "schedules.x: job is required"),
            (
                "x",
                format!("cron = \"0 3 * *\"\n{job}"),
                "schedules.x.cron: \"0 3 * *\": Invalid pattern",
            ),
            (
                "x",
                format!("cron = \"0 0 * * * *\"\n{job}"),
                "schedules.x.cron: \"0 0 * * * *\"",
            ),
            (
                "x",
                format!("cron = \"61 * * * *\"\n{job}"),
                "schedules.x.cron: \"61 * * * *\"",
            ),
            (
                "x",
                format!("cron = \"0 0 31 2 *\"\n{job}"),
                "schedules.x.cron: \"0 0 31 2 *\" matches no date",
            ),
            (
                "x",
                format!("cron = \"0 3 * * *\"\ntz = \"Europe/Pariss\"\n{job}"),
                "schedules.x.tz: \"Europe/Pariss\" is not an IANA time zone name",
            ),
            (
                "x",
                format!("every = \"1h\"\ntz = \"UTC\"\n{job}"),
                "schedules.x.tz: goes with cron only",
            ),
            (
                "x",
                format!("every = \"500ms\"\n{job}"),
                "schedules.x.every: 500ms is not a whole number of seconds",
            ),
            (
                "x",
                format!("every = 0\n{job}"),
                "schedules.x.every: must be at least 1s",
            ),
            (
                "x",
                "every = \"1h\"\njob = { type = \"nope\" }".into(),
                "schedules.x.job: unknown type \"nope\"",
            ),
            (
                "x",
                "every = \"1h\"\njob = { type = \"report\", params = { n = \"one\" } }".into(),
                "schedules.x.job: param \"n\": expected an integer",
            ),
            (
                "x",
                "every = \"1h\"\njob = { type = \"report\", timout = 1, params = { n = 1 } }"
                    .into(),
                "schedules.x.job: invalid job file",
            ),
            (
                "x",
                "every = \"1h\"\njob = { type = \"report\", unique = \"y\", params = { n = 1 } }"
                    .into(),
                "schedules.x.job.unique: is set by the schedule",
            ),
            (
                "x",
                "every = \"1h\"\njob = { type = \"report\", not_before = 2026-01-01T00:00:00Z }"
                    .into(),
                "schedules.x.job.not_before: is set by the schedule",
            ),
        ];
        for (name, body, want) in cases {
            let e = load(name, &body).unwrap_err();
            assert!(e.contains(want), "{name} {body:?}:\n{e}\nwant: {want}");
        }
        let e = Schedule::load(
            "x",
            toml::from_str(&format!("cron = \"0 3 * * *\"\n{job}")).unwrap(),
            &|| Err("the daemon's time zone TZ=\"CET-1CEST\" is not an IANA name; set tz".into()),
        )
        .unwrap_err();
        assert!(
            e.starts_with("schedules.x.tz: the daemon's time zone"),
            "{e}"
        );
    }
}
