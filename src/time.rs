//! Durations and timestamps as users write them and as records store them,
//! their ranges (SPEC §3), and the arithmetic on them that the daemon does.
//!
//! Owns the one spelling of each: durations are `500ms`, `90s`, `5m`, `2h`,
//! `7d` or a whole number of seconds; timestamps are RFC 3339 in UTC with
//! milliseconds. Everything else in the crate works with `Duration`,
//! `SystemTime` and `Instant` and converts only here. No clock is read in
//! this module except by [`now`].
//!
//! Invariants:
//! - parsing admits only durations from 0 to [`MAX_DURATION`] and instants
//!   from [`EARLIEST`] to [`latest`] (after the datetime's offset is
//!   applied); anything else is an error that gives the range;
//! - nothing here panics, whatever `Duration`, `SystemTime` or `Instant`
//!   it is given: formatting clamps an instant into the range, and every
//!   sum ([`deadline`], [`add`], [`retry_delay`]) saturates at the end of
//!   its range instead of overflowing.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, Visitor};
use toml::value::{Date, Datetime, Offset, Time};

/// The longest duration any value may have: 100 years of 365.25 days (as
/// `100y` spells it), so that `"100y"` itself is admitted.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// [`MAX_DURATION`]'s range as error messages give it.
pub const DURATION_RANGE: &str = "0 to 100 years";

/// The earliest instant a datetime may name.
pub const EARLIEST: SystemTime = UNIX_EPOCH;

/// Seconds from the epoch to 9999-12-31T23:59:59Z, the last second RFC 3339
/// (four-digit years) can write.
const LATEST_SECS: u64 = 253_402_300_799;

/// The datetime range as error messages give it.
pub const DATETIME_RANGE: &str = "1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z";

/// The latest instant a datetime may name: 9999-12-31T23:59:59.999999999Z.
pub fn latest() -> SystemTime {
    // Cannot overflow: SystemTime holds 2^63 seconds either side of the epoch.
    UNIX_EPOCH + Duration::new(LATEST_SECS, 999_999_999)
}

/// The wall clock. Kept in one place so that the pure parts of the daemon
/// take `now` as an argument instead of reading it.
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Parses a duration: a number and a unit, or a whole number of seconds,
/// from 0 to [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let out_of_range = || format!("{t} is out of range ({DURATION_RANGE})");
    let d = if t.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only a number too large for u64 can fail here.
        t.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| out_of_range())?
    } else {
        humantime::parse_duration(t).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => out_of_range(),
            e => format!(
                "invalid duration {text:?}: {e} (write e.g. \"500ms\", \"90s\", \"5m\", \"2h\", \"7d\")"
            ),
        })?
    };
    if d > MAX_DURATION {
        return Err(out_of_range());
    }
    Ok(d)
}

/// A duration from a whole number of seconds, checked against the range.
pub fn duration_from_secs(secs: i64) -> Result<Duration, String> {
    u64::try_from(secs)
        .ok()
        .map(Duration::from_secs)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("{secs} is out of range ({DURATION_RANGE})"))
}

/// Formats a duration the way users write it, for logs and the report.
/// Any `Duration` is fine, `Duration::MAX` included.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else if ms < 86_400_000 {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    } else {
        format!("{}d{:02}h", ms / 86_400_000, (ms / 3_600_000) % 24)
    }
}

/// A duration field that accepts either a string or an integer of seconds,
/// within the range (an error says which range; the deserializer that
/// reports it adds the key and the place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"90s\" or a whole number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                duration_from_secs(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Some(Duration::from_secs(v))
                    .filter(|d| *d <= MAX_DURATION)
                    .map(Dur)
                    .ok_or_else(|| E::custom(format!("{v} is out of range ({DURATION_RANGE})")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A datetime field (a TOML datetime) that names an instant within the
/// range, offset applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(pub SystemTime);

impl<'de> serde::Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let dt = Datetime::deserialize(d)?;
        from_toml(&dt).map(Stamp).map_err(de::Error::custom)
    }
}

/// `t` moved into the datetime range: what every formatter prints, so that
/// an instant from outside (a file's mtime set to 1900 by its writer, a
/// clock gone wrong) prints as the nearest end instead of panicking.
pub fn clamp(t: SystemTime) -> SystemTime {
    t.clamp(EARLIEST, latest())
}

/// `2026-11-22T10:00:00.125Z`: what records, logs and the API print.
/// Instants outside the range print as its nearest end.
pub fn format_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(clamp(t)).to_string()
}

/// Parses an RFC 3339 timestamp (as the HTTP API receives `not_before`),
/// within the range.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let dt: Datetime = text
        .parse()
        .map_err(|e| format!("invalid timestamp {text:?}: {e}"))?;
    from_toml(&dt)
}

/// The instant a number of seconds since the epoch names (as the HTTP API
/// may receive `not_before`), within the range.
pub fn from_unix_secs(secs: i64) -> Result<SystemTime, String> {
    u64::try_from(secs)
        .ok()
        .filter(|s| *s <= LATEST_SECS)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .ok_or_else(|| format!("{secs} is out of range ({DATETIME_RANGE})"))
}

/// The TOML datetime of an instant, in UTC with milliseconds; instants
/// outside the range become its nearest end.
pub fn to_toml(t: SystemTime) -> Datetime {
    let t = clamp(t);
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    Datetime {
        date: Some(Date { year, month, day }),
        time: Some(Time {
            // Each is below 24, 60 and 60: the casts cannot truncate.
            hour: (of_day / 3600) as u8,
            minute: (of_day / 60 % 60) as u8,
            second: Some((of_day % 60) as u8),
            nanosecond: Some(since.subsec_millis() * 1_000_000),
        }),
        offset: Some(Offset::Z),
    }
}

/// The instant a TOML datetime names, within the range. A datetime without
/// an offset is read as UTC, a date alone as midnight UTC; a time alone is
/// an error.
pub fn from_toml(dt: &Datetime) -> Result<SystemTime, String> {
    let Some(date) = dt.date else {
        return Err(format!("{dt} has no date"));
    };
    let (h, m, s, ns) = match dt.time {
        Some(t) => (
            t.hour,
            t.minute,
            t.second.unwrap_or(0),
            t.nanosecond.unwrap_or(0),
        ),
        None => (0, 0, 0, 0),
    };
    // The parser checks these; a Datetime built by hand is checked here.
    let valid = (1..=12).contains(&date.month)
        && date.day >= 1
        && date.day <= days_in_month(date.year, date.month)
        && h <= 23
        && m <= 59
        && s <= 60
        && ns < 1_000_000_000;
    if !valid {
        return Err(format!("invalid datetime {dt}"));
    }
    let offset_minutes = match dt.offset {
        Some(Offset::Custom { minutes }) if (-24 * 60..=24 * 60).contains(&minutes) => {
            i64::from(minutes)
        }
        Some(Offset::Custom { .. }) => return Err(format!("invalid datetime {dt}: bad offset")),
        _ => 0,
    };
    // Every term is small (|days| < 4e6): no i64 arithmetic here overflows.
    // 10:00+02:00 is 08:00Z: subtract the offset.
    let secs = days_from_civil(i64::from(date.year), date.month, date.day) * 86_400
        + i64::from(h) * 3600
        + i64::from(m) * 60
        + i64::from(s)
        - offset_minutes * 60;
    match u64::try_from(secs) {
        Ok(secs) if secs <= LATEST_SECS => Ok(UNIX_EPOCH + Duration::new(secs, ns)),
        _ => Err(format!("{dt} is out of range ({DATETIME_RANGE})")),
    }
}

fn is_leap(year: u16) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01, for days within the range (H.
/// Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u16, u8, u8) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    // Within the range the year is at most 9999, the month at most 12 and
    // the day at most 31; the fallbacks are never taken.
    (
        u16::try_from(year).unwrap_or(9999),
        u8::try_from(month).unwrap_or(12),
        u8::try_from(day).unwrap_or(31),
    )
}

/// Seconds since the epoch, for the APIs that speak unix time.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the epoch, for ordering and ids.
pub fn unix_millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

// ---- arithmetic the daemon does on these values ------------------------

/// The instant `d` after `now`, for timeouts, grace periods and wake-ups.
/// A duration past [`MAX_DURATION`] counts as [`MAX_DURATION`]: a deadline
/// a century away is "never" for a daemon, and `Instant` cannot overflow
/// then.
pub fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_DURATION))
        // Unreachable on Linux (a monotonic clock plus a century fits in
        // its 64-bit seconds); never a panic all the same.
        .unwrap_or(now)
}

/// `t + d` on the wall clock (an expiry, a retry's `not_before`), held
/// within the datetime range (at most [`latest`]), so that the result can
/// always be written down and read back.
pub fn add(t: SystemTime, d: Duration) -> SystemTime {
    clamp(t.checked_add(d).unwrap_or_else(latest))
}

/// How long from `now` until `t`; zero when `t` has passed.
pub fn until(now: SystemTime, t: SystemTime) -> Duration {
    t.duration_since(now).unwrap_or(Duration::ZERO)
}

/// The monotonic instant at which the wall clock reads `t`, given that it
/// reads `now_wall` at `now` (for a `not_before` as a loop deadline).
pub fn instant_at(now: Instant, now_wall: SystemTime, t: SystemTime) -> Instant {
    deadline(now, until(now_wall, t))
}

/// The delay before retry `attempt` (1 for the first retry): `base`
/// doubled for each earlier retry, times `1 + jitter` (`jitter` is held
/// within ±0.1), at most [`MAX_DURATION`].
pub fn retry_delay(base: Duration, attempt: u32, jitter: f64) -> Duration {
    // 2^20 times is already far past any useful delay; it keeps the shift
    // in range.
    let doubled = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(MAX_DURATION);
    let jitter = if jitter.is_finite() {
        jitter.clamp(-0.1, 0.1)
    } else {
        0.0
    };
    // `mul_f64` panics on overflow; this cannot overflow (at most 1.1 ×
    // MAX_DURATION) and caps anyway.
    Duration::try_from_secs_f64(doubled.as_secs_f64() * (1.0 + jitter))
        .unwrap_or(MAX_DURATION)
        .min(MAX_DURATION)
}

/// A jitter within ±0.1 from the sub-second part of an instant (the daemon
/// passes the clock's), so that jobs failing together do not retry together.
pub fn jitter(t: SystemTime) -> f64 {
    let nanos = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 2001) / 10_000.0 - 0.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("90s", Duration::from_secs(90)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7200)),
            ("7d", Duration::from_secs(7 * 86400)),
            ("30", Duration::from_secs(30)),
            ("0", Duration::ZERO),
            ("36500d", Duration::from_secs(36500 * 86400)),
            ("100y", MAX_DURATION),
            ("3155760000", MAX_DURATION),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "5x", "-3", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_past_a_century_are_out_of_range() {
        for text in [
            "9223372036854775807s",
            "200years",
            "101y",
            "3155760001",
            "99999999999999999999999",
            "99999999999999999999999s",
        ] {
            let e = parse_duration(text).unwrap_err();
            assert_eq!(e, format!("{text} is out of range (0 to 100 years)"));
        }
        assert!(duration_from_secs(-1).unwrap_err().contains("out of range"));
        assert!(duration_from_secs(i64::MAX).is_err());
        assert_eq!(duration_from_secs(0), Ok(Duration::ZERO));
    }

    #[test]
    fn toml_datetimes_round_trip_and_honour_offsets() {
        let t = parse_rfc3339("2026-11-22T10:00:00.125Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-22T10:00:00.125Z");
        assert_eq!(from_toml(&to_toml(t)).unwrap(), t);
        let plus2 = parse_rfc3339("2026-11-22T12:00:00.125+02:00").unwrap();
        assert_eq!(plus2, t);
        let local: Datetime = "2026-11-22T10:00:00.125".parse().unwrap();
        assert_eq!(from_toml(&local).unwrap(), t);
        let date: Datetime = "2026-11-22".parse().unwrap();
        assert_eq!(
            format_rfc3339(from_toml(&date).unwrap()),
            "2026-11-22T00:00:00.000Z"
        );
        let time_only: Datetime = "10:00:00".parse().unwrap();
        assert!(from_toml(&time_only).is_err());
        assert_eq!(to_toml(t).to_string(), "2026-11-22T10:00:00.125Z");
    }

    #[test]
    fn datetimes_are_admitted_from_1970_to_9999_after_their_offset() {
        let ok = [
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T00:01:00+00:01", 0),
            ("1969-12-31T23:59:00-00:01", 0),
            ("1970-01-01", 0),
            ("2000-02-29T00:00:00Z", 951_782_400),
            ("9999-12-31T23:59:59Z", LATEST_SECS),
            ("9999-12-31T23:59:59.999999999Z", LATEST_SECS),
            ("9999-12-31T23:58:59-00:01", LATEST_SECS),
        ];
        for (text, secs) in ok {
            let t = parse_rfc3339(text).unwrap();
            assert_eq!(unix_secs(t), secs, "{text}");
        }
        for text in [
            "1970-01-01T00:00:00+00:01",
            "1969-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-00:01",
            "9999-12-31T23:59:60Z",
            "9999-12-31T23:59:59-23:59",
        ] {
            let e = parse_rfc3339(text).unwrap_err();
            assert_eq!(e, format!("{text} is out of range ({DATETIME_RANGE})"));
        }
        assert!(from_unix_secs(-1).is_err());
        assert!(from_unix_secs(i64::MAX).is_err());
        assert_eq!(unix_secs(from_unix_secs(1).unwrap()), 1);
    }

    #[test]
    fn a_datetime_built_by_hand_is_checked_too() {
        let mut dt: Datetime = "2026-02-28T10:00:00Z".parse().unwrap();
        dt.date = Some(Date {
            year: 2026,
            month: 2,
            day: 29,
        });
        assert!(from_toml(&dt).unwrap_err().contains("invalid datetime"));
        dt.date = Some(Date {
            year: 2026,
            month: 13,
            day: 1,
        });
        assert!(from_toml(&dt).is_err());
        dt.date = Some(Date {
            year: 2026,
            month: 1,
            day: 1,
        });
        dt.offset = Some(Offset::Custom { minutes: i16::MAX });
        assert!(from_toml(&dt).is_err());
    }

    #[test]
    fn instants_outside_the_range_print_as_its_ends() {
        let before = UNIX_EPOCH - Duration::from_secs(86400 * 365 * 70);
        assert_eq!(format_rfc3339(before), "1970-01-01T00:00:00.000Z");
        let after = UNIX_EPOCH + Duration::from_secs(i64::MAX.unsigned_abs());
        assert_eq!(format_rfc3339(after), "9999-12-31T23:59:59.999Z");
        assert_eq!(to_toml(after).to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339(latest()), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn sums_saturate_at_the_end_of_their_range() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::MAX), now + MAX_DURATION);
        assert_eq!(
            deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(add(latest(), Duration::MAX), latest());
        assert_eq!(
            add(UNIX_EPOCH, Duration::from_secs(5)),
            UNIX_EPOCH + Duration::from_secs(5)
        );
        assert_eq!(until(latest(), UNIX_EPOCH), Duration::ZERO);
        assert_eq!(
            instant_at(now, UNIX_EPOCH, latest()),
            now + MAX_DURATION,
            "9999 is further than a century: capped"
        );
    }

    #[test]
    fn retry_delays_double_and_are_capped() {
        let base = Duration::from_secs(10);
        let cases = [
            (base, 0, 0.0, 10.0),
            (base, 1, 0.0, 10.0),
            (base, 2, 0.0, 20.0),
            (base, 3, 0.1, 44.0),
            (base, 3, -0.1, 36.0),
            (base, 3, 5.0, 44.0),
            (base, 3, f64::NAN, 40.0),
            (base, u32::MAX, 0.0, 10.0 * f64::from(1u32 << 20)),
            (MAX_DURATION, 2, 0.1, MAX_DURATION.as_secs_f64()),
            (
                Duration::MAX,
                u32::MAX,
                f64::INFINITY,
                MAX_DURATION.as_secs_f64(),
            ),
        ];
        for (base, attempt, jitter, want) in cases {
            let got = retry_delay(base, attempt, jitter).as_secs_f64();
            assert!(
                (got - want).abs() < 1e-6 * want.max(1.0),
                "{base:?} {attempt} {jitter}: {got} != {want}"
            );
        }
        for t in [
            UNIX_EPOCH,
            latest(),
            UNIX_EPOCH + Duration::new(5, 999_999_999),
        ] {
            assert!((-0.1..=0.1).contains(&jitter(t)));
        }
    }

    #[test]
    fn any_duration_formats() {
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(7260), "2h01m"),
            (Duration::from_secs(5 * 86400 + 14 * 3600), "5d14h"),
            (MAX_DURATION, "36525d00h"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want);
        }
        assert!(format_duration(Duration::MAX).ends_with('h'));
    }
}

#[cfg(test)]
pub(crate) mod props {
    //! Property tests: every admitted value goes through every formatter
    //! and every sum without a panic. Each runs 256 cases.

    use super::*;
    use proptest::prelude::*;

    /// Durations across the range, with its ends and their neighbours
    /// weighted in.
    pub fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(MAX_DURATION),
            Just(MAX_DURATION - Duration::from_nanos(1)),
            Just(Duration::from_nanos(1)),
            (0..=MAX_DURATION.as_secs(), 0u32..1_000_000_000)
                .prop_map(|(s, n)| Duration::new(s, n).min(MAX_DURATION)),
            (0u64..86_400 * 30).prop_map(Duration::from_secs),
        ]
    }

    /// Any duration at all, out of range ones included.
    pub fn wild_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            any_duration(),
            Just(Duration::MAX),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    /// Instants across the datetime range, with its ends weighted in.
    pub fn any_instant() -> impl Strategy<Value = SystemTime> {
        prop_oneof![
            Just(EARLIEST),
            Just(latest()),
            Just(UNIX_EPOCH + Duration::from_secs(LATEST_SECS)),
            (0..=LATEST_SECS, 0u32..1_000_000_000)
                .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n)),
            (1_700_000_000u64..1_900_000_000).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        ]
    }

    /// Any instant a `SystemTime` can hold here: before 1970 and past 9999
    /// too (a file's mtime, a clock gone wrong).
    pub fn wild_instant() -> impl Strategy<Value = SystemTime> {
        prop_oneof![
            any_instant(),
            (0..i64::MAX.unsigned_abs()).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            (0..i64::MAX.unsigned_abs()).prop_map(|s| UNIX_EPOCH - Duration::from_secs(s)),
        ]
    }

    /// A TOML datetime as a user may write one: any year, any offset.
    pub fn datetime_text() -> impl Strategy<Value = String> {
        let year = prop_oneof![
            1 => Just(1969u16),
            2 => Just(1970),
            2 => Just(9999),
            1 => Just(0),
            1 => 0u16..=9999,
            4 => 1970u16..=9999,
        ];
        let offset = prop_oneof![
            Just(String::new()),
            Just("Z".to_string()),
            Just("+00:01".to_string()),
            Just("-00:01".to_string()),
            (0u8..24, 0u8..60, any::<bool>())
                .prop_map(|(h, m, plus)| format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
        ];
        let second = prop_oneof![Just(0u8), Just(59), Just(60), 0u8..=60];
        (
            year,
            1u8..=12,
            1u8..=31,
            prop_oneof![Just(0u8), Just(23), 0u8..24],
            prop_oneof![Just(0u8), Just(59), 0u8..60],
            second,
            prop_oneof![
                Just(String::new()),
                Just(".999".to_string()),
                "\\.[0-9]{1,9}"
            ],
            offset,
        )
            .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
            })
    }

    /// A TOML datetime within the range: its ends, and any day between
    /// them with any offset.
    pub fn admitted_datetime_text() -> BoxedStrategy<String> {
        prop_oneof![
            prop_oneof![
                Just("1970-01-01T00:00:00Z"),
                Just("1970-01-01T00:01:00+00:01"),
                Just("1970-01-01"),
                Just("9999-12-31T23:59:59.999Z"),
                Just("9999-12-31T23:59:59.999999999"),
                Just("9999-12-31T23:58:59-00:01"),
            ]
            .prop_map(String::from),
            (
                1971u16..=9998,
                1u8..=12,
                1u8..=28,
                0u8..24,
                0u8..60,
                0u8..=60,
                -1439i32..=1439,
            )
                .prop_map(|(y, mo, d, h, mi, s, off)| {
                    let sign = if off < 0 { '-' } else { '+' };
                    let off = off.unsigned_abs();
                    format!(
                        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{sign}{:02}:{:02}",
                        off / 60,
                        off % 60
                    )
                }),
        ]
        .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn admitted_instants_format_and_round_trip(t in any_instant()) {
            let text = format_rfc3339(t);
            prop_assert_eq!(text.len(), 24);
            let back = parse_rfc3339(&text).unwrap();
            let ms = Duration::from_millis(u64::from(t.duration_since(UNIX_EPOCH).unwrap().subsec_millis()));
            let secs = Duration::from_secs(unix_secs(t));
            prop_assert_eq!(back, UNIX_EPOCH + secs + ms);
            let dt = to_toml(t);
            prop_assert_eq!(dt.to_string().parse::<Datetime>().unwrap(), dt);
            prop_assert_eq!(text.parse::<Datetime>().unwrap(), dt);
            prop_assert_eq!(from_toml(&dt).unwrap(), back);
        }

        #[test]
        fn any_instant_formats_without_panic(t in wild_instant()) {
            let text = format_rfc3339(t);
            prop_assert!(parse_rfc3339(&text).is_ok(), "{}", text);
            prop_assert!(from_toml(&to_toml(t)).is_ok());
            let _ = unix_secs(t);
            let _ = unix_millis(t);
            let _ = jitter(t);
        }

        #[test]
        fn parsed_datetimes_are_in_range_or_refused_with_the_range(text in datetime_text()) {
            match text.parse::<Datetime>() {
                Err(_) => {}
                Ok(dt) => match from_toml(&dt) {
                    Ok(t) => {
                        prop_assert!(t >= EARLIEST && t <= latest(), "{}", text);
                        let _ = format_rfc3339(t);
                    }
                    Err(e) => prop_assert!(
                        e.contains("out of range") || e.contains("invalid datetime"),
                        "{}: {}", text, e
                    ),
                },
            }
        }

        #[test]
        fn parsed_durations_are_in_range(n in any::<u64>(), unit in "(ns|us|ms|s|m|h|d|w|M|y|years|)") {
            match parse_duration(&format!("{n}{unit}")) {
                Ok(d) => prop_assert!(d <= MAX_DURATION),
                Err(e) => prop_assert!(e.contains("out of range"), "{}{}: {}", n, unit, e),
            }
        }

        #[test]
        fn sums_and_delays_never_panic(
            d in wild_duration(),
            t in wild_instant(),
            attempt in prop_oneof![Just(0u32), Just(1), Just(1_000_001), Just(u32::MAX), any::<u32>()],
            j in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), -0.1f64..=0.1],
            ahead in any_duration(),
        ) {
            let now = Instant::now();
            for at in [now, deadline(now, ahead)] {
                let dl = deadline(at, d);
                prop_assert!(dl >= at && dl <= at + MAX_DURATION);
            }
            let sum = add(t, d);
            prop_assert!(sum >= EARLIEST && sum <= latest());
            let _ = format_rfc3339(sum);
            let _ = instant_at(now, t, sum);
            let delay = retry_delay(d, attempt, j);
            prop_assert!(delay <= MAX_DURATION);
            let _ = format_duration(delay);
            let _ = format_duration(d);
            let _ = format_duration(until(t, sum));
        }
    }
}
