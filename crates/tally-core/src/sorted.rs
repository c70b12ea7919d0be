//! Small maps and sets kept as a vector sorted by key (binary search,
//! insertion in place), for the verifier's and the SE's per-command
//! lookups. Each `BTreeMap` instantiation costs the Cortex-M4 payment
//! firmware about 0.6–1 KB of flash (insert, node splits, drop, search),
//! one per key and value type; these are a binary search and a vector
//! insertion (decision 0022, session 10). Insertion moves the entries
//! after the new one: meant for tables of at most a few hundred entries,
//! which every user bounds (the history budget, a package's certificates,
//! a batch's keys, the SE's records).

use alloc::vec::Vec;

/// A map from `K` to `V`, entries sorted by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    pub const fn new() -> Self {
        VecMap {
            entries: Vec::new(),
        }
    }
    fn find(&self, k: &K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(e, _)| e.cmp(k))
    }
    /// As `BTreeMap::insert`: the value under `k` becomes `v`; the one it
    /// replaces, if any, is returned.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.find(&k) {
            Ok(i) => Some(core::mem::replace(&mut self.entries[i].1, v)),
            Err(i) => {
                self.entries.insert(i, (k, v));
                None
            }
        }
    }
    pub fn get(&self, k: &K) -> Option<&V> {
        self.find(k).ok().map(|i| &self.entries[i].1)
    }
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        match self.find(k) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }
    pub fn contains_key(&self, k: &K) -> bool {
        self.find(k).is_ok()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A set of `K`, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecSet<K>(VecMap<K, ()>);

impl<K> Default for VecSet<K> {
    fn default() -> Self {
        VecSet(VecMap::default())
    }
}

impl<K: Ord> VecSet<K> {
    pub const fn new() -> Self {
        VecSet(VecMap::new())
    }
    /// As `BTreeSet::insert`: whether `k` was not in the set.
    pub fn insert(&mut self, k: K) -> bool {
        self.0.insert(k, ()).is_none()
    }
    pub fn contains(&self, k: &K) -> bool {
        self.0.contains_key(k)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::{BTreeMap, BTreeSet};

    /// Same answers as the B-tree collections for the same operations.
    #[test]
    fn answers_as_the_btree_collections() {
        let mut m = VecMap::new();
        let mut b = BTreeMap::new();
        let mut s = VecSet::new();
        let mut bs = BTreeSet::new();
        let mut x: u32 = 7;
        for i in 0..2000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let k = (x >> 16) % 300;
            assert_eq!(m.insert(k, i), b.insert(k, i));
            assert_eq!(s.insert(k), bs.insert(k));
            let q = (x >> 8) % 300;
            assert_eq!(m.get(&q), b.get(&q));
            assert_eq!(m.contains_key(&q), b.contains_key(&q));
            assert_eq!(s.contains(&q), bs.contains(&q));
            if let Some(v) = m.get_mut(&q) {
                *v += 1;
                *b.get_mut(&q).unwrap() += 1;
            }
            assert_eq!(m.len(), b.len());
            assert_eq!(s.len(), bs.len());
        }
        assert!(m.entries.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
