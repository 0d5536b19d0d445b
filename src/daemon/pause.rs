//! Pause: `pause/<type>` and `pause/ALL` hold new starts (SPEC §13).
//!
//! The daemon lists `pause/` when inotify says it changed, at each rescan
//! and after a reload, and keeps what it found as [`Pauses`]: the
//! scheduler starts nothing of a paused type, running jobs go on. A name
//! that is neither a configured type nor `ALL` means nothing; it is logged
//! once (until it goes away) and ignored. Every change is logged, marks
//! the state to publish (report, `/metrics`, systemd's `STATUS=`) and
//! rewrites `types.json`, which tells clients what is paused.
//!
//! [`Pauses::of`] is pure and tested by table; only [`Daemon::read_pauses`]
//! reads the folder. Never removes anything from `pause/`.

use std::collections::BTreeSet;

use super::Daemon;
use crate::config::Config;
use crate::spool::PAUSE_ALL;

/// What `pause/` holds now, as far as this daemon's types go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pauses {
    /// `pause/ALL`: no type starts.
    pub all: bool,
    /// Types paused by their own file.
    pub types: BTreeSet<String>,
    /// Names that mean nothing here (already logged).
    pub ignored: BTreeSet<String>,
}

impl Pauses {
    /// What the names in `pause/` mean under `config`.
    pub fn of(names: &[String], config: &Config) -> Pauses {
        let mut p = Pauses::default();
        for name in names {
            if name == PAUSE_ALL {
                p.all = true;
            } else if config.types.contains_key(name) {
                p.types.insert(name.clone());
            } else {
                p.ignored.insert(name.clone());
            }
        }
        p
    }

    /// Whether new starts of `kind` are held.
    pub fn held(&self, kind: &str) -> bool {
        self.all || self.types.contains(kind)
    }

    /// What is paused, in words for logs and `STATUS=`: `ALL`, or the
    /// types; empty when nothing is.
    pub fn describe(&self) -> String {
        if self.all {
            PAUSE_ALL.to_string()
        } else {
            self.types.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

impl Daemon {
    /// Lists `pause/` and takes in what changed.
    pub(super) fn read_pauses(&mut self) {
        let names = match self.spool.pause_names() {
            Ok(n) => n,
            Err(e) => {
                crate::log!("pause: {e}");
                return;
            }
        };
        let now = Pauses::of(&names, &self.config);
        for name in now.ignored.difference(&self.pauses.ignored) {
            crate::log!("pause/{name}: not a type of this daemon, nor {PAUSE_ALL}; ignored");
        }
        let (before, after) = (&self.pauses, &now);
        if before.all != after.all {
            crate::log!(
                "pause: {} (every type)",
                if after.all { "paused" } else { "resumed" }
            );
        }
        for t in after.types.difference(&before.types) {
            crate::log!("pause: {t} paused");
        }
        for t in before.types.difference(&after.types) {
            crate::log!("pause: {t} resumed");
        }
        let changed = before.all != after.all || before.types != after.types;
        self.pauses = now;
        if changed {
            self.dirty = true;
            self.describe_types();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use std::path::Path;

    #[test]
    fn names_in_pause_mean_a_type_all_or_nothing() {
        let text = format!(
            "[types.a]\ncommand = [\"true\"]\nuser = \"{me}\"\n[types.b]\ncommand = [\"true\"]\nuser = \"{me}\"\n",
            me = crate::config::current_user()
        );
        let config = Config::from_text(None, &text, Path::new("/"), &Overrides::default()).unwrap();
        let names = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
        // Names in pause/, types held, types free, in words.
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a str);
        let cases: [Case; 4] = [
            (&[], &[], &[], ""),
            (&["a", "zz"], &["a"], &["b"], "a"),
            (&["ALL"], &["a", "b"], &[], "ALL"),
            (&["all", "b"], &["b"], &["a"], "b"),
        ];
        for (present, held, free, words) in cases {
            let p = Pauses::of(&names(present), &config);
            for t in held {
                assert!(p.held(t), "{present:?}: {t}");
            }
            for t in free {
                assert!(!p.held(t), "{present:?}: {t}");
            }
            assert_eq!(p.describe(), words, "{present:?}");
        }
        let p = Pauses::of(&names(&["a", "zz", "all"]), &config);
        assert_eq!(p.ignored, BTreeSet::from(["zz".into(), "all".into()]));
    }
}
