//! Durations and timestamps as users write them and as records store them.
//!
//! Owns the one spelling of each: durations are `500ms`, `90s`, `5m`, `2h`,
//! `7d` or a whole number of seconds; timestamps are RFC 3339 in UTC with
//! milliseconds. Everything else in the crate works with `Duration` and
//! `SystemTime` and converts only here. No clock is read in this module
//! except by [`now`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, Visitor};
use toml::value::{Datetime, Offset};

/// The wall clock. Kept in one place so that the pure parts of the daemon
/// take `now` as an argument instead of reading it.
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Parses a duration: a number and a unit, or a whole number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("invalid duration {text:?}: {e}"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "invalid duration {text:?}: {e} (write e.g. \"500ms\", \"90s\", \"5m\", \"2h\", \"7d\")"
        )
    })
}

/// Formats a duration the way users write it, for logs and the report.
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

/// A duration field that accepts either a string or an integer of seconds.
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
                u64::try_from(v)
                    .map(|s| Dur(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("negative duration {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size: an integer, or a string such as `"1GiB"` or `"512M"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"1GiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("negative size {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| Size(b.as_u64()))
                    .map_err(|e| E::custom(format!("invalid size {v:?}: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `2026-11-22T10:00:00.125Z`: what records, logs and the API print.
pub fn format_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 timestamp (as the HTTP API receives `not_before`).
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let dt: Datetime = text
        .parse()
        .map_err(|e| format!("invalid timestamp {text:?}: {e}"))?;
    from_toml(&dt)
}

/// The TOML datetime of an instant, in UTC with milliseconds.
pub fn to_toml(t: SystemTime) -> Datetime {
    // The formatted string is always a valid TOML offset datetime; the
    // fallback keeps this infallible without an unwrap.
    format_rfc3339(t).parse().unwrap_or(Datetime {
        date: None,
        time: None,
        offset: None,
    })
}

/// The instant a TOML datetime names. A datetime without an offset is read
/// as UTC, a date alone as midnight UTC; a time alone is an error.
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
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        date.year, date.month, date.day, h, m, s, ns
    );
    let utc = humantime::parse_rfc3339(&text).map_err(|e| format!("invalid datetime {dt}: {e}"))?;
    let minutes = match dt.offset {
        Some(Offset::Custom { minutes }) => i64::from(minutes),
        _ => 0,
    };
    let shift = Duration::from_secs(minutes.unsigned_abs() * 60);
    // 10:00+02:00 is 08:00Z: subtract a positive offset.
    let t = if minutes >= 0 {
        utc.checked_sub(shift)
    } else {
        utc.checked_add(shift)
    };
    t.ok_or_else(|| format!("datetime {dt} is out of range"))
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
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "5x", "-3", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
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
    }
}
