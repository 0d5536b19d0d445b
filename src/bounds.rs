//! The ranges of the whole numbers and byte sizes users write (SPEC §3,
//! raccoond.toml(5)), as types that refuse anything outside them.
//!
//! A field declared `Int<LO, HI>` or `Bytes<LO, HI>` deserializes only to a
//! value within `LO..=HI`; anything else (a negative count, a number past
//! `u32`, `i64::MIN`) is an error that gives the value and the range, and
//! the TOML reader adds the key and its place. Nothing is ever cast into
//! range, so nothing wraps. Durations and datetimes have their ranges in
//! [`crate::time`]. No IO.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// `retries` and `attempts`: a run count. A million runs of anything is
/// far past any use, and `attempts + 1` can never overflow.
pub type Count = Int<0, 1_000_000>;

/// A job's `priority`.
pub type Priority = Int<{ -1_000_000 }, 1_000_000>;

/// `total` and a type's `limit` (also `--total`, `--limit`): jobs running
/// at once, each a process.
pub type Slots = Int<1, { MAX_SLOTS as i64 }>;

/// The largest `total` or `limit`.
pub const MAX_SLOTS: usize = 100_000;

/// `max_queued`: jobs the daemon holds in memory at most (SPEC §8).
pub type Queued = Int<1, 100_000_000>;

/// A type's `nice`: what setpriority(2) takes.
pub type Nice = Int<{ -20 }, 19>;

/// A type's `max_processes` (RLIMIT_NPROC): at least the task itself, at
/// most the kernel's PID_MAX_LIMIT.
pub type Processes = Int<1, 4_194_304>;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const PIB: u64 = 1 << 50;

/// `max_job_bytes`: a job file is read into memory whole.
pub type JobBytes = Bytes<1, GIB>;

/// `max_output_bytes`, per stream; 0 keeps nothing.
pub type OutputBytes = Bytes<0, TIB>;

/// `[mail] max_attachment_bytes`: attachments are held in memory while a
/// message is built; 0 attaches nothing.
pub type AttachmentBytes = Bytes<0, GIB>;

/// A type's `max_memory` (RLIMIT_AS): below a mebibyte no program starts.
pub type MemoryBytes = Bytes<MIB, PIB>;

/// A whole number within `LO..=HI`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int<const LO: i64, const HI: i64>(i64);

impl<const LO: i64, const HI: i64> Int<LO, HI> {
    /// `v` when it is within the range, else the error that says so.
    pub fn new(v: i128) -> Result<Self, String> {
        if (i128::from(LO)..=i128::from(HI)).contains(&v) {
            // Within LO..=HI, so within i64.
            Ok(Int(i64::try_from(v).unwrap_or(LO)))
        } else {
            Err(format!("{v} is out of range ({})", Self::range()))
        }
    }

    /// The range as messages and the man page give it: `0 to 1000000`.
    pub fn range() -> String {
        format!("{LO} to {HI}")
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// The value as a `u32`, for ranges within `u32` (a range that is not
    /// does not compile), so the conversion never fails.
    pub fn u32(self) -> u32 {
        const { assert!(LO >= 0 && HI <= u32::MAX as i64, "the range must fit u32") };
        u32::try_from(self.0).unwrap_or(0)
    }

    /// The value as a `usize`, for ranges within `u32` (a range that is
    /// not does not compile), so the conversion never fails.
    pub fn usize(self) -> usize {
        const { assert!(LO >= 0 && HI <= u32::MAX as i64, "the range must fit u32") };
        usize::try_from(self.0).unwrap_or(0)
    }
}

impl<'de, const LO: i64, const HI: i64> serde::Deserialize<'de> for Int<LO, HI> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const LO: i64, const HI: i64>;
        impl<const LO: i64, const HI: i64> Visitor<'_> for V<LO, HI> {
            type Value = Int<LO, HI>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a whole number from {LO} to {HI}")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Int::new(i128::from(v)).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Int::new(i128::from(v)).map_err(E::custom)
            }
        }
        d.deserialize_i64(V::<LO, HI>)
    }
}

/// A byte size within `LO..=HI`: an integer, or a string such as `"1GiB"`
/// or `"512M"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes<const LO: u64, const HI: u64>(u64);

impl<const LO: u64, const HI: u64> Bytes<LO, HI> {
    /// `v` bytes when that is within the range, else the error that says so.
    pub fn new(v: u64, written: &str) -> Result<Self, String> {
        if (LO..=HI).contains(&v) {
            Ok(Bytes(v))
        } else {
            Err(format!("{written} is out of range ({})", Self::range()))
        }
    }

    /// The range as messages and the man page give it: `1 byte to 1 GiB`.
    pub fn range() -> String {
        format!("{} to {}", show_bytes(LO), show_bytes(HI))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl<'de, const LO: u64, const HI: u64> serde::Deserialize<'de> for Bytes<LO, HI> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const LO: u64, const HI: u64>;
        impl<const LO: u64, const HI: u64> Visitor<'_> for V<LO, HI> {
            type Value = Bytes<LO, HI>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"1GiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(n) => Bytes::new(n, &v.to_string()).map_err(E::custom),
                    Err(_) => Err(E::custom(format!(
                        "{v} is out of range ({})",
                        Bytes::<LO, HI>::range()
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Bytes::new(v, &v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let t = v.trim();
                let n = t
                    .parse::<bytesize::ByteSize>()
                    .map_err(|e| E::custom(format!("invalid size {v:?}: {e}")))?;
                Bytes::new(n.as_u64(), t).map_err(E::custom)
            }
        }
        d.deserialize_any(V::<LO, HI>)
    }
}

/// `1 GiB`, `512 bytes`: exact, in the largest binary unit that divides it.
pub fn show_bytes(n: u64) -> String {
    for (unit, name) in [
        (PIB, "PiB"),
        (TIB, "TiB"),
        (GIB, "GiB"),
        (MIB, "MiB"),
        (KIB, "KiB"),
    ] {
        if n >= unit && n % unit == 0 {
            return format!("{} {name}", n / unit);
        }
    }
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

/// `34 MiB`, `1.5 GiB`, `900 bytes`: a size as people read it, in the
/// largest binary unit it reaches, with one decimal below 10 of it (what
/// a task used, shown; [`show_bytes`] is exact, for limits).
pub fn rough_bytes(n: u64) -> String {
    for (unit, name) in [
        (PIB, "PiB"),
        (TIB, "TiB"),
        (GIB, "GiB"),
        (MIB, "MiB"),
        (KIB, "KiB"),
    ] {
        if n >= unit {
            let v = n as f64 / unit as f64;
            return if v < 9.95 {
                format!("{v:.1} {name}")
            } else {
                format!("{v:.0} {name}")
            };
        }
    }
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct T {
        n: Option<Count>,
        p: Option<Priority>,
        b: Option<JobBytes>,
    }

    fn read(text: &str) -> Result<T, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn values_within_the_range_are_kept_and_others_refused_with_it() {
        let t = read("n = 1000000\np = -1000000\nb = \"1GiB\"\n").unwrap();
        assert_eq!(t.n.unwrap().u32(), 1_000_000);
        assert_eq!(t.p.unwrap().get(), -1_000_000);
        assert_eq!(t.b.unwrap().get(), GIB);
        let cases = [
            ("n = 1000001", "1000001 is out of range (0 to 1000000)"),
            ("n = -1", "-1 is out of range (0 to 1000000)"),
            (
                "n = 4294967296",
                "4294967296 is out of range (0 to 1000000)",
            ),
            (
                "p = -9223372036854775808",
                "-9223372036854775808 is out of range (-1000000 to 1000000)",
            ),
            ("b = 0", "0 is out of range (1 byte to 1 GiB)"),
            ("b = -5", "-5 is out of range (1 byte to 1 GiB)"),
            ("b = \"2GiB\"", "2GiB is out of range (1 byte to 1 GiB)"),
        ];
        for (text, want) in cases {
            assert_eq!(read(text).unwrap_err(), want, "{text}");
        }
        assert!(read("n = 1.5").unwrap_err().contains("from 0 to 1000000"));
    }

    #[test]
    fn ranges_read_as_they_are_written() {
        assert_eq!(Slots::new(MAX_SLOTS as i128).unwrap().usize(), MAX_SLOTS);
        assert_eq!(Count::new(1_000_000).unwrap().u32(), 1_000_000);
        assert_eq!(Priority::range(), "-1000000 to 1000000");
        assert_eq!(Slots::range(), "1 to 100000");
        assert_eq!(MemoryBytes::range(), "1 MiB to 1 PiB");
        assert_eq!(OutputBytes::range(), "0 bytes to 1 TiB");
        assert_eq!(show_bytes(1536), "1536 bytes");
    }

    #[test]
    fn rough_sizes_have_two_or_three_figures() {
        for (n, want) in [
            (0, "0 bytes"),
            (1, "1 byte"),
            (1023, "1023 bytes"),
            (1536, "1.5 KiB"),
            (35_651_584, "34 MiB"),
            (10 * MIB - 1, "10 MiB"),
            (9 * MIB + MIB / 2, "9.5 MiB"),
            (GIB + GIB / 2, "1.5 GiB"),
            (u64::MAX, "16384 PiB"),
        ] {
            assert_eq!(rough_bytes(n), want, "{n}");
        }
    }
}
