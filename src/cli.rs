//! raccoond's command line.
//!
//! Takes the arguments; gives where the configuration is and what
//! overrides it. `--TYPE=N` (Raccoon's way to set a per-type limit) is any
//! long option that is not one of ours, which is why this uses lexopt:
//! clap cannot mix a catch-all with known options.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::Overrides;

pub const USAGE: &str = "\
usage: raccoond [--config FILE] [--spool DIR] [--listen ADDR] [--total=N]
                [--limit TYPE=N]... [--TYPE=N]... [--foreground] [--version] [--help]

  --config FILE    the configuration (raccoond.toml); without it, no types
  --spool DIR      the spool folder (default: ./spool, or the file's spool)
  --listen ADDR    serve HTTP on ADDR (\"\" turns HTTP off)
  --total N        jobs running at once (default: number of CPUs)
  --limit TYPE=N   at most N jobs of TYPE at once
  --TYPE=N         the same, as Raccoon spelled it (e.g. --make_report=2)
  --foreground     accepted for compatibility: raccoond never forks away
  --version        print the version
  --help           print this help

Command-line values override the configuration file. See raccoond(8).";

#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub config: Option<PathBuf>,
    pub overrides: Overrides,
    pub help: bool,
    pub version: bool,
}

impl PartialEq for Overrides {
    fn eq(&self, o: &Self) -> bool {
        self.spool == o.spool
            && self.listen == o.listen
            && self.total == o.total
            && self.limits == o.limits
    }
}

pub fn parse<I>(args: I) -> Result<Args, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut a = Args::default();
    let text = |v: OsString, opt: &str| -> Result<String, String> {
        v.into_string()
            .map_err(|_| format!("{opt}: not valid UTF-8"))
    };
    let count = |v: &str, opt: &str| -> Result<usize, String> {
        v.parse::<usize>()
            .map_err(|_| format!("{opt}={v}: expected a whole number"))
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("config") | Short('c') => {
                a.config = Some(p.value().map_err(|e| e.to_string())?.into())
            }
            Long("spool") => a.overrides.spool = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("listen") => {
                a.overrides.listen = Some(text(p.value().map_err(|e| e.to_string())?, "--listen")?)
            }
            Long("total") => {
                let v = text(p.value().map_err(|e| e.to_string())?, "--total")?;
                a.overrides.total = Some(count(&v, "--total")?);
            }
            Long("limit") => {
                let v = text(p.value().map_err(|e| e.to_string())?, "--limit")?;
                let Some((t, n)) = v.split_once('=') else {
                    return Err(format!("--limit {v}: expected TYPE=N"));
                };
                a.overrides
                    .limits
                    .push((t.to_string(), count(n, &format!("--limit {t}"))?));
            }
            Long("foreground") | Short('f') => {}
            Long("help") | Short('h') => a.help = true,
            Long("version") | Short('V') => a.version = true,
            Long(name) => {
                let name = name.to_string();
                let v = text(
                    p.value().map_err(|_| {
                        format!("unknown option --{name} (a type limit is --{name}=N)")
                    })?,
                    &name,
                )?;
                a.overrides
                    .limits
                    .push((name.clone(), count(&v, &format!("--{name}"))?));
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_limits_mix_with_known_options() {
        let a = parse([
            "--config",
            "r.toml",
            "--make_report=2",
            "--total=5",
            "--limit",
            "echo=3",
            "--spool",
            "/s",
            "--listen=",
        ])
        .unwrap();
        assert_eq!(a.config, Some(PathBuf::from("r.toml")));
        assert_eq!(a.overrides.total, Some(5));
        assert_eq!(a.overrides.spool, Some(PathBuf::from("/s")));
        assert_eq!(a.overrides.listen, Some(String::new()));
        assert_eq!(
            a.overrides.limits,
            vec![("make_report".to_string(), 2), ("echo".to_string(), 3)]
        );
    }

    #[test]
    fn bad_values_say_which_option() {
        assert!(parse(["--total=many"]).unwrap_err().contains("--total"));
        assert!(parse(["--limit", "x"]).unwrap_err().contains("TYPE=N"));
        assert!(parse(["--x=y"]).unwrap_err().contains("--x"));
        assert!(parse(["stray"]).is_err());
    }
}
