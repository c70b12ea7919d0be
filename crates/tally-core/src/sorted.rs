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

impl<K: Ord + Copy, V: Copy> VecMap<K, V> {
    /// The map of `entries`, sorted in place ([`heapsort`]); of entries
    /// with one key, one is kept (callers pass one value per key).
    pub fn from_vec(mut entries: Vec<(K, V)>) -> Self {
        heapsort_by(&mut entries, &|a, b| a.0 < b.0);
        entries.dedup_by(|a, b| a.0 == b.0);
        VecMap { entries }
    }
}

/// A set of `K`, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecSet<K> {
    items: Vec<K>,
}

impl<K> Default for VecSet<K> {
    fn default() -> Self {
        VecSet { items: Vec::new() }
    }
}

impl<K: Ord> VecSet<K> {
    pub const fn new() -> Self {
        VecSet { items: Vec::new() }
    }
    /// As `BTreeSet::insert`: whether `k` was not in the set.
    pub fn insert(&mut self, k: K) -> bool {
        match self.items.binary_search(&k) {
            Ok(_) => false,
            Err(i) => {
                self.items.insert(i, k);
                true
            }
        }
    }
    pub fn contains(&self, k: &K) -> bool {
        self.items.binary_search(k).is_ok()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// The set of `items` (duplicates dropped), sorted in place
    /// ([`heapsort`]): O(n log n) for a set made at once, where inserting
    /// one by one moves O(n²) entries.
    pub fn from_vec(mut items: Vec<K>) -> Self {
        heapsort_by(&mut items, &|a, b| a < b);
        items.dedup_by(|a, b| a == b);
        VecSet { items }
    }
}

/// Sorts `v` by `less` (heapsort: in place, O(n log n), not stable).
/// Not core's sort: each instantiation of `sort_unstable` costs the
/// Cortex-M4 payment firmware about 2.5 KiB of flash, this one about 0.2.
fn heapsort_by<T>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) {
    fn sift<T>(v: &mut [T], mut root: usize, end: usize, less: &dyn Fn(&T, &T) -> bool) {
        loop {
            let mut child = 2 * root + 1;
            if child >= end {
                return;
            }
            if child + 1 < end && less(&v[child], &v[child + 1]) {
                child += 1;
            }
            if !less(&v[root], &v[child]) {
                return;
            }
            v.swap(root, child);
            root = child;
        }
    }
    let n = v.len();
    for i in (0..n / 2).rev() {
        sift(v, i, n, less);
    }
    for end in (1..n).rev() {
        v.swap(0, end);
        sift(v, 0, end, less);
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

    #[test]
    fn made_at_once_as_one_by_one() {
        let mut x: u32 = 11;
        for n in [0usize, 1, 2, 3, 7, 64, 500] {
            let mut keys = Vec::new();
            for _ in 0..n {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                keys.push((x >> 16) % 97);
            }
            let set = VecSet::from_vec(keys.clone());
            let mut one = VecSet::new();
            for k in &keys {
                one.insert(*k);
            }
            assert_eq!(set, one);
            let b: BTreeSet<u32> = keys.iter().copied().collect();
            assert_eq!(set.items, b.into_iter().collect::<Vec<_>>());
            let map = VecMap::from_vec(keys.iter().map(|&k| (k, k * 2)).collect());
            assert_eq!(map.len(), set.len());
            assert!(keys.iter().all(|k| map.get(k) == Some(&(k * 2))));
            assert!(map.entries.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}
