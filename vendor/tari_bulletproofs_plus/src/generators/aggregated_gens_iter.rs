// Copyright 2022 The Tari Project
// SPDX-License-Identifier: BSD-3-Clause
//   Modified from:
//     Copyright (c) 2018 Chain, Inc.
//     SPDX-License-Identifier: MIT

use alloc::vec::Vec;

use crate::generators::bulletproof_gens::GeneratorSource;

/// Iterates over the aggregated generators of `m` parties of `n` each, in party order: from the generator vectors, or
/// (Tally's low-memory patch) from a [`GeneratorSource`], one point at a time.
pub struct AggregatedGensIter<'a, P> {
    pub(super) array: &'a Vec<Vec<P>>,
    /// With a source, the generators are produced by it (`true`: the H chain) and `array` is empty.
    pub(super) source: Option<(GeneratorSource<P>, bool)>,
    pub(super) n: usize,
    pub(super) m: usize,
    pub(super) party_idx: usize,
    pub(super) gen_idx: usize,
}

impl<P: Clone> Iterator for AggregatedGensIter<'_, P> {
    type Item = P;

    fn next(&mut self) -> Option<Self::Item> {
        if self.gen_idx >= self.n {
            self.gen_idx = 0;
            self.party_idx = self.party_idx.checked_add(1)?;
        }

        if self.party_idx >= self.m {
            None
        } else {
            let cur_gen = self.gen_idx;
            self.gen_idx = self.gen_idx.checked_add(1)?;
            match self.source {
                Some((source, h)) => source(h, self.party_idx, cur_gen),
                None => self.array.get(self.party_idx)?.get(cur_gen).cloned(),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let size = self
            .n
            .saturating_mul(self.m.saturating_sub(self.party_idx))
            .saturating_sub(self.gen_idx);
        (size, Some(size))
    }
}
