//! `[resources]`: the counted things a daemon has (GPUs, licences, …), and
//! the check of a `needs` table against them.
//!
//! Takes the `[resources]` table as written and gives each resource's
//! units by name: the names given (`gpu = ["0", "1"]`), or slots `1`, `2`,
//! … for a bare count (`license = 3`). [`check_needs`] is the one check of
//! a `needs` table, for a type's (in `raccoond.toml`) and a job's (in
//! `job::parse`), so that both are refused in the same words. No IO.
//!
//! Invariant: a resource name is 1–64 characters of `[A-Za-z0-9_]` and no
//! two differ only by case (each becomes `RACCOON_RESOURCE_<NAME>`,
//! upper-cased); a unit name is 1–64 characters of `[A-Za-z0-9._-]` (no
//! comma: the variable lists them comma-separated), unique within its
//! resource; a resource has 1 to [`MAX_UNITS`] units; an admitted need is
//! 1 to the resource's size.

use std::collections::BTreeMap;

/// The most units one resource may have, and the most a job may need.
pub const MAX_UNITS: usize = 1000;

/// The most characters of a resource's or a unit's name.
const MAX_NAME: usize = 64;

/// Each resource's units, by the resource's name.
pub type Resources = BTreeMap<String, Vec<String>>;

/// Reads `[resources]`; the error names the resource and what is wrong.
pub fn parse(table: &toml::Table) -> Result<Resources, String> {
    let mut out = Resources::new();
    let mut upper: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in table {
        if !valid_resource_name(name) {
            return Err(format!(
                "{name:?}: a resource name is 1-{MAX_NAME} characters of A-Z a-z 0-9 _"
            ));
        }
        if let Some(other) = upper.insert(name.to_ascii_uppercase(), name) {
            return Err(format!(
                "{name:?} and {other:?} differ only by case (both would be RACCOON_RESOURCE_{})",
                name.to_ascii_uppercase()
            ));
        }
        let units = match value {
            toml::Value::Integer(n) => {
                let n = usize::try_from(*n)
                    .ok()
                    .filter(|n| (1..=MAX_UNITS).contains(n))
                    .ok_or_else(|| format!("{name}: {n} is out of range (1 to {MAX_UNITS})"))?;
                (1..=n).map(|i| i.to_string()).collect()
            }
            toml::Value::Array(items) => {
                if items.is_empty() || items.len() > MAX_UNITS {
                    return Err(format!(
                        "{name}: {} names; give 1 to {MAX_UNITS}",
                        items.len()
                    ));
                }
                let mut units: Vec<String> = Vec::with_capacity(items.len());
                for item in items {
                    let unit = item
                        .as_str()
                        .ok_or_else(|| format!("{name}: {item} is not a string"))?;
                    if !valid_unit_name(unit) {
                        return Err(format!(
                            "{name}: {unit:?} is not a unit name (1-{MAX_NAME} characters of A-Z a-z 0-9 . _ -)"
                        ));
                    }
                    if units.iter().any(|u| u == unit) {
                        return Err(format!("{name}: {unit:?} is named twice"));
                    }
                    units.push(unit.to_string());
                }
                units
            }
            other => {
                return Err(format!(
                    "{name}: expected a count (license = 3) or a list of names (gpu = [\"0\", \"1\"]), found {}",
                    other.type_str()
                ));
            }
        };
        out.insert(name.clone(), units);
    }
    Ok(out)
}

/// Checks a `needs` table against the resources there are: every name
/// declared, every count within what exists. Zero counts are dropped (a
/// job may say it needs none of something its type needs).
pub fn check_needs(
    needs: &BTreeMap<String, i64>,
    resources: &Resources,
) -> Result<BTreeMap<String, u32>, String> {
    let mut out = BTreeMap::new();
    for (name, n) in needs {
        let Some(units) = resources.get(name) else {
            let known: Vec<&str> = resources.keys().map(String::as_str).collect();
            return Err(if known.is_empty() {
                format!("needs: no resource {name:?} (this daemon declares no [resources])")
            } else {
                format!(
                    "needs: no resource {name:?} (this daemon has: {})",
                    known.join(", ")
                )
            });
        };
        let count = u32::try_from(*n)
            .ok()
            .filter(|n| *n as usize <= MAX_UNITS)
            .ok_or_else(|| format!("needs.{name}: {n} is out of range (0 to {MAX_UNITS})"))?;
        if count as usize > units.len() {
            return Err(format!(
                "needs: {name} = {count}, more than this daemon has ({})",
                units.len()
            ));
        }
        if count > 0 {
            out.insert(name.clone(), count);
        }
    }
    Ok(out)
}

/// The environment variable that hands a task the units it holds.
pub fn variable(resource: &str) -> String {
    format!("RACCOON_RESOURCE_{}", resource.to_ascii_uppercase())
}

fn valid_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_unit_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn counts_become_slots_and_lists_keep_their_names() {
        let r = parse(&table("gpu = [\"0\", \"1\"]\nlicense = 3\n")).unwrap();
        assert_eq!(r["gpu"], ["0", "1"]);
        assert_eq!(r["license"], ["1", "2", "3"]);
        assert_eq!(variable("gpu"), "RACCOON_RESOURCE_GPU");
    }

    #[test]
    fn every_way_to_declare_wrongly_says_which_and_why() {
        let cases = [
            ("gpu = 0", "gpu: 0 is out of range (1 to 1000)"),
            ("gpu = 1001", "gpu: 1001 is out of range"),
            ("gpu = -1", "gpu: -1 is out of range"),
            ("gpu = []", "gpu: 0 names"),
            ("gpu = [\"a,b\"]", "is not a unit name"),
            ("gpu = [\"0\", \"0\"]", "\"0\" is named twice"),
            ("gpu = [1]", "gpu: 1 is not a string"),
            ("gpu = \"two\"", "expected a count"),
            ("\"g-pu\" = 1", "a resource name is"),
            ("gpu = 1\nGPU = 2", "differ only by case"),
        ];
        for (text, want) in cases {
            let e = parse(&table(text)).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn needs_are_checked_against_what_exists() {
        let r = parse(&table("gpu = [\"0\", \"1\"]\nlicense = 3\n")).unwrap();
        let needs = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let ok = check_needs(&needs(&[("gpu", 2), ("license", 0)]), &r).unwrap();
        assert_eq!(ok, BTreeMap::from([("gpu".to_string(), 2)]));
        let cases: [(&[(&str, i64)], &str); 4] = [
            (
                &[("gpu", 3)],
                "needs: gpu = 3, more than this daemon has (2)",
            ),
            (
                &[("tpu", 1)],
                "needs: no resource \"tpu\" (this daemon has: gpu, license)",
            ),
            (&[("gpu", -1)], "needs.gpu: -1 is out of range (0 to 1000)"),
            (&[("gpu", 1 << 40)], "out of range"),
        ];
        for (n, want) in cases {
            let e = check_needs(&needs(n), &r).unwrap_err();
            assert!(e.contains(want), "{n:?}: {e}");
        }
        let e = check_needs(&needs(&[("gpu", 1)]), &Resources::new()).unwrap_err();
        assert!(e.contains("declares no [resources]"), "{e}");
    }
}
