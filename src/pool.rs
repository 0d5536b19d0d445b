//! The daemon's counted resources: which units of each are held, by which
//! running job.
//!
//! Takes `[resources]` (each resource's units by name) and grants a job
//! the units its `needs` asks for, all or nothing, the first free ones in
//! the order they are declared; takes them back when the job ends. The
//! scheduler decides *whether* a job fits from [`Pool::free`]; this says
//! *which* units it gets, and [`environment`] how a task learns them
//! (`RACCOON_RESOURCE_GPU=0,1`). Pure: no IO, no clock, tested by table.
//!
//! Invariant: a unit is held by at most one job (never over-committed).
//! A reload may rename or drop units: units held under the old names stay
//! held until their job gives them back, and only units the configuration
//! still names are free.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Resources;
use crate::config::resources::variable;

/// The units one job holds, by resource.
pub type Grant = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// Each resource's units, in declared order.
    units: Resources,
    /// The units held now, by resource.
    held: BTreeMap<String, BTreeSet<String>>,
}

impl Pool {
    pub fn new(resources: &Resources) -> Pool {
        Pool {
            units: resources.clone(),
            held: BTreeMap::new(),
        }
    }

    /// Takes a new configuration's resources; units held stay held.
    pub fn reconfigure(&mut self, resources: &Resources) {
        self.units = resources.clone();
    }

    /// Units of each resource not held.
    pub fn free(&self) -> BTreeMap<String, usize> {
        self.units
            .iter()
            .map(|(r, units)| {
                let held = self.held.get(r);
                let n = units
                    .iter()
                    .filter(|u| held.is_none_or(|h| !h.contains(*u)))
                    .count();
                (r.clone(), n)
            })
            .collect()
    }

    /// Units of each resource there are.
    pub fn capacity(&self) -> BTreeMap<String, usize> {
        self.units
            .iter()
            .map(|(r, units)| (r.clone(), units.len()))
            .collect()
    }

    /// Grants `needs` (resource and count), all or nothing: the first
    /// free units of each, in declared order. `None` when any does not
    /// fit (nothing is taken then).
    pub fn take<'a>(
        &mut self,
        needs: impl IntoIterator<Item = (&'a String, u32)>,
    ) -> Option<Grant> {
        let mut grant = Grant::new();
        for (r, n) in needs {
            if n == 0 {
                continue;
            }
            let units = self.units.get(r)?;
            let held = self.held.get(r);
            let got: Vec<String> = units
                .iter()
                .filter(|u| held.is_none_or(|h| !h.contains(*u)))
                .take(n as usize)
                .cloned()
                .collect();
            if got.len() < n as usize {
                return None;
            }
            grant.insert(r.clone(), got);
        }
        for (r, units) in &grant {
            self.held
                .entry(r.clone())
                .or_default()
                .extend(units.iter().cloned());
        }
        Some(grant)
    }

    /// Gives back what a job held.
    pub fn give(&mut self, grant: &Grant) {
        for (r, units) in grant {
            if let Some(h) = self.held.get_mut(r) {
                for u in units {
                    h.remove(u);
                }
                if h.is_empty() {
                    self.held.remove(r);
                }
            }
        }
    }
}

/// The variables that tell a task what it holds:
/// `RACCOON_RESOURCE_<NAME>` = its units, comma-separated.
pub fn environment(grant: &Grant) -> Vec<(String, String)> {
    grant
        .iter()
        .map(|(r, units)| (variable(r), units.join(",")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> Resources {
        Resources::from([
            ("gpu".to_string(), vec!["0".to_string(), "1".to_string()]),
            ("lic".to_string(), vec!["1".into(), "2".into(), "3".into()]),
        ])
    }

    fn needs(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
        pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
    }

    fn take(pool: &mut Pool, pairs: &[(&str, u32)]) -> Option<Grant> {
        let n = needs(pairs);
        pool.take(n.iter().map(|(r, c)| (r, *c)))
    }

    #[test]
    fn units_are_granted_in_order_all_or_nothing_and_never_twice() {
        let mut pool = Pool::new(&resources());
        let a = take(&mut pool, &[("gpu", 1)]).unwrap();
        assert_eq!(
            environment(&a),
            [("RACCOON_RESOURCE_GPU".into(), "0".into())]
        );
        let b = take(&mut pool, &[("gpu", 1), ("lic", 2)]).unwrap();
        assert_eq!(
            environment(&b),
            [
                ("RACCOON_RESOURCE_GPU".into(), "1".into()),
                ("RACCOON_RESOURCE_LIC".into(), "1,2".into())
            ]
        );
        // Nothing left of gpu: the whole grant fails and takes nothing.
        assert!(take(&mut pool, &[("lic", 1), ("gpu", 1)]).is_none());
        assert_eq!(pool.free()["lic"], 1);
        assert!(take(&mut pool, &[("tpu", 1)]).is_none());
        pool.give(&a);
        assert_eq!(pool.free()["gpu"], 1);
        let c = take(&mut pool, &[("gpu", 1), ("lic", 0)]).unwrap();
        assert_eq!(c["gpu"], ["0"], "the freed unit is granted again");
        assert!(!c.contains_key("lic"));
        pool.give(&b);
        pool.give(&c);
        assert_eq!(pool.free(), pool.capacity());
    }

    #[test]
    fn a_reload_keeps_held_units_held() {
        let mut pool = Pool::new(&resources());
        let a = take(&mut pool, &[("gpu", 2)]).unwrap();
        let smaller = Resources::from([("gpu".to_string(), vec!["1".to_string()])]);
        pool.reconfigure(&smaller);
        assert_eq!(pool.free()["gpu"], 0, "unit 1 is still held");
        assert!(!pool.free().contains_key("lic"));
        pool.give(&a);
        assert_eq!(pool.free()["gpu"], 1);
        assert_eq!(take(&mut pool, &[("gpu", 1)]).unwrap()["gpu"], ["1"]);
    }
}
