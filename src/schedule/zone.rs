//! Time zones of `cron` schedules: a `tz` name, or the daemon's own zone.
//!
//! Owns finding the daemon's local zone as an IANA name, the way the C
//! library would choose it: `TZ` when it is set (`Europe/Paris`,
//! `:Europe/Paris`, or a path into a `zoneinfo` folder), else the target of
//! the `/etc/localtime` link (`…/zoneinfo/Europe/Paris`), else
//! `/etc/timezone` (Debian's copy of the name), else UTC. A zone that
//! exists but has no IANA name (a POSIX `TZ` rule such as `CET-1CEST`, an
//! `/etc/localtime` that is a copy rather than a link and no
//! `/etc/timezone`) is an error that asks for `tz`, never a silent guess.
//!
//! [`local`] is the only function here that reads the system (the
//! environment and two files); the choice itself is [`choose`], pure and
//! tested by table. Never consulted for an `every` schedule.

use std::path::Path;

use chrono_tz::Tz;

/// A time zone and where it came from (for logs and `raccoon schedules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The zone's rules.
    pub tz: Tz,
    /// Where the name came from: `tz`, `TZ`, `/etc/localtime`,
    /// `/etc/timezone`, or that none was found.
    pub from: String,
}

impl Zone {
    /// A zone named by `tz` in `raccoond.toml`.
    pub fn named(name: &str) -> Result<Zone, String> {
        parse(name)
            .map(|tz| Zone {
                tz,
                from: "tz".into(),
            })
            .ok_or_else(|| {
                format!(
                    "{name:?} is not an IANA time zone name (such as \"UTC\" or \"Europe/Paris\")"
                )
            })
    }

    /// The zone's IANA name.
    pub fn name(&self) -> &'static str {
        self.tz.name()
    }
}

fn parse(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// The IANA name at the end of a path into a `zoneinfo` folder
/// (`/usr/share/zoneinfo/Europe/Paris` → `Europe/Paris`).
fn after_zoneinfo(path: &str) -> Option<&str> {
    path.rsplit_once("zoneinfo/").map(|(_, name)| name)
}

/// The daemon's zone from what the system says: `tz_env` is `TZ` (`None`
/// when unset), `localtime` the target of `/etc/localtime` when it is a
/// link, `timezone` the text of `/etc/timezone`.
pub fn choose(
    tz_env: Option<&str>,
    localtime: Option<&str>,
    timezone: Option<&str>,
) -> Result<Zone, String> {
    let zone = |tz, from: &str| Zone {
        tz,
        from: from.into(),
    };
    // TZ set but empty means UTC to the C library.
    if let Some(env) = tz_env {
        let name = env.strip_prefix(':').unwrap_or(env);
        if name.is_empty() {
            return Ok(zone(Tz::UTC, "TZ"));
        }
        let name = if name.starts_with('/') {
            after_zoneinfo(name).unwrap_or(name)
        } else {
            name
        };
        return parse(name).map(|tz| zone(tz, "TZ")).ok_or_else(|| {
            format!(
                "not set, and the daemon's time zone TZ={env:?} is not an IANA name; set tz (such as \"UTC\" or \"Europe/Paris\")"
            )
        });
    }
    if let Some(target) = localtime {
        return after_zoneinfo(target)
            .and_then(parse)
            .map(|tz| zone(tz, "/etc/localtime"))
            .ok_or_else(|| {
                format!(
                    "not set, and the daemon's time zone (/etc/localtime -> {target}) has no IANA name; set tz"
                )
            });
    }
    if let Some(text) = timezone {
        let name = text.trim();
        return parse(name)
            .map(|tz| zone(tz, "/etc/timezone"))
            .ok_or_else(|| {
                format!(
                    "not set, and the daemon's time zone (/etc/timezone says {name:?}) is not an IANA name; set tz"
                )
            });
    }
    Ok(zone(Tz::UTC, "no TZ, /etc/localtime or /etc/timezone: UTC"))
}

/// The daemon's own time zone (see [`choose`]).
pub fn local() -> Result<Zone, String> {
    let env = std::env::var("TZ").ok();
    let link = std::fs::read_link(Path::new("/etc/localtime"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    // Only when /etc/localtime is not a link: a copy of a zone file says
    // no name, and Debian keeps the name beside it.
    let text = if link.is_none() {
        std::fs::read_to_string("/etc/timezone").ok()
    } else {
        None
    };
    choose(env.as_deref(), link.as_deref(), text.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_zone_comes_from_tz_then_localtime_then_timezone() {
        // (TZ, /etc/localtime's target, /etc/timezone, zone or error, from)
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Result<&'static str, &'static str>,
            &'static str,
        );
        let cases: [Case; 11] = [
            (
                Some("Europe/Paris"),
                Some("/usr/share/zoneinfo/UTC"),
                None,
                Ok("Europe/Paris"),
                "TZ",
            ),
            (Some(":Asia/Tokyo"), None, None, Ok("Asia/Tokyo"), "TZ"),
            (
                Some("/usr/share/zoneinfo/America/New_York"),
                None,
                None,
                Ok("America/New_York"),
                "TZ",
            ),
            (
                Some(""),
                Some("/usr/share/zoneinfo/Europe/Paris"),
                None,
                Ok("UTC"),
                "TZ",
            ),
            (
                Some("CET-1CEST"),
                None,
                None,
                Err("TZ=\"CET-1CEST\" is not an IANA name; set tz"),
                "",
            ),
            (
                None,
                Some("/usr/share/zoneinfo/Europe/Paris"),
                Some("Asia/Tokyo\n"),
                Ok("Europe/Paris"),
                "/etc/localtime",
            ),
            (
                None,
                Some("../usr/share/zoneinfo/Etc/UTC"),
                None,
                Ok("Etc/UTC"),
                "/etc/localtime",
            ),
            (
                None,
                Some("/etc/zones/mine"),
                None,
                Err("(/etc/localtime -> /etc/zones/mine) has no IANA name"),
                "",
            ),
            (
                None,
                None,
                Some("Europe/Berlin\n"),
                Ok("Europe/Berlin"),
                "/etc/timezone",
            ),
            (
                None,
                None,
                Some("Mars/Olympus"),
                Err("/etc/timezone says \"Mars/Olympus\""),
                "",
            ),
            (
                None,
                None,
                None,
                Ok("UTC"),
                "no TZ, /etc/localtime or /etc/timezone: UTC",
            ),
        ];
        for (env, link, file, want, from) in cases {
            let got = choose(env, link, file);
            match want {
                Ok(name) => {
                    let z = got.unwrap();
                    assert_eq!(
                        (z.name(), z.from.as_str()),
                        (name, from),
                        "{env:?} {link:?}"
                    );
                }
                Err(part) => {
                    let e = got.unwrap_err();
                    assert!(e.starts_with("not set, and the daemon's time zone"), "{e}");
                    assert!(e.contains(part), "{e}");
                }
            }
        }
    }

    #[test]
    fn a_named_zone_is_an_iana_name() {
        assert_eq!(Zone::named("Europe/Paris").unwrap().name(), "Europe/Paris");
        assert_eq!(Zone::named("UTC").unwrap().from, "tz");
        for bad in ["", "Europe/Pariss", "CET-1CEST", "../etc/passwd"] {
            assert!(Zone::named(bad).is_err(), "{bad:?}");
        }
    }
}
