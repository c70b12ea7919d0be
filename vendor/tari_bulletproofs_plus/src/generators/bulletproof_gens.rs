// Copyright 2022 The Tari Project
// SPDX-License-Identifier: BSD-3-Clause
//   Modified from:
//     Copyright (c) 2018 Chain, Inc.
//     SPDX-License-Identifier: MIT

use alloc::{sync::Arc, vec::Vec};
use core::{
    convert::TryFrom,
    fmt::{Debug, Formatter},
};

use byteorder::{ByteOrder, LittleEndian};
use curve25519_dalek::traits::VartimePrecomputedMultiscalarMul;
use itertools::Itertools;

use crate::{
    errors::ProofError,
    generators::{aggregated_gens_iter::AggregatedGensIter, generators_chain::GeneratorsChain},
    traits::{Compressable, FromUniformBytes, Precomputable},
};

/// The `BulletproofGens` struct contains all the generators needed for aggregating up to `m` range proofs of up to `n`
/// bits each.
///
/// # Extensible Generator Generation
///
/// Instead of constructing a single vector of size `m*n`, as described in the Bulletproofs paper, we construct each
/// party's generators separately.
///
/// To construct an arbitrary-length chain of generators, we apply SHAKE256 to a domain separator label, and feed each
/// 64 bytes of XOF output into the curve hash-to-group function. Each of the `m` parties' generators are
/// constructed using a different domain separation label, and proving and verification uses the first `n` elements of
/// the arbitrary-length chain.
///
/// This means that the aggregation size (number of parties) is orthogonal to the rangeproof size (number of bits),
/// and allows using the same `BulletproofGens` object for different proving parameters.
///
/// This construction is also forward-compatible with constraint system proofs, which use a much larger slice of the
/// generator chain, and even forward-compatible to multiparty aggregation of constraint system proofs, since the
/// generators are namespaced by their party index.
/// Tally's low-memory patch: a function that produces generator `index` of party `party`'s G chain (`h = false`) or
/// H chain (`h = true`), e.g. by decompressing a constant; `None` beyond its capacity. Generators from a source are
/// never held in memory nor precomputed: proofs and verifications with them use multiscalar multiplications over a
/// bounded number of points at a time (`msm_chunk`).
pub type GeneratorSource<P> = fn(h: bool, party: usize, index: usize) -> Option<P>;

pub struct BulletproofGens<P: Precomputable> {
    /// The maximum number of usable generators for each party.
    pub gens_capacity: usize,
    /// Number of values or parties
    pub party_capacity: usize,
    /// Precomputed \\(\mathbf G\\) generators for each party.
    ///
    /// These fields are private (along with `precomp`) to enforce the invariant that the precomputation tables are
    /// only ever created alongside the generator vectors they were built from; `shares_precomp` relies on this to
    /// treat pointer equality of the tables as proof that the generator vectors are identical.
    g_vec: Vec<Vec<P>>,
    /// Precomputed \\(\mathbf H\\) generators for each party.
    h_vec: Vec<Vec<P>>,
    /// Interleaved precomputed generators (`None` with a source)
    precomp: Option<Arc<P::Precomputation>>,
    /// Where the generators come from when they are not in `g_vec` and `h_vec` (low-memory patch)
    source: Option<GeneratorSource<P>>,
    /// Points per multiscalar multiplication with a source
    msm_chunk: usize,
}

// This manual `Clone` implementation is required since derived cloning requires the curve library precomputation struct
// to support `Clone`
impl<P> Clone for BulletproofGens<P>
where
    P: Precomputable,
    Vec<P>: Clone,
{
    fn clone(&self) -> Self {
        BulletproofGens {
            gens_capacity: self.gens_capacity,
            party_capacity: self.party_capacity,
            g_vec: self.g_vec.clone(),
            h_vec: self.h_vec.clone(),
            precomp: self.precomp.clone(),
            source: self.source,
            msm_chunk: self.msm_chunk,
        }
    }
}

impl<P: FromUniformBytes + Precomputable> BulletproofGens<P> {
    /// Create a new `BulletproofGens` object.
    ///
    /// # Inputs
    ///
    /// * `gens_capacity` is the number of generators to precompute for each party.  For rangeproofs, it is sufficient
    ///   to pass `64`, the maximum bitsize of the rangeproofs.  For circuit proofs, the capacity must be greater than
    ///   the number of multipliers, rounded up to the next power of two.
    ///
    /// * `party_capacity` is the maximum number of parties that can produce an aggregated proof.
    pub fn new(gens_capacity: usize, party_capacity: usize) -> Result<Self, ProofError> {
        let mut g_vec: Vec<Vec<P>> = (0..party_capacity).map(|_| Vec::new()).collect();
        let mut h_vec: Vec<Vec<P>> = (0..party_capacity).map(|_| Vec::new()).collect();

        // Generate the points
        for (i, (g, h)) in g_vec.iter_mut().zip(h_vec.iter_mut()).enumerate() {
            let party_index = u32::try_from(i).map_err(|_| ProofError::SizeOverflow)?;

            let mut label = [b'G', 0, 0, 0, 0];
            LittleEndian::write_u32(&mut label[1..5], party_index);
            g.extend(&mut GeneratorsChain::<P>::new(&label).take(gens_capacity));

            label[0] = b'H';
            h.extend(&mut GeneratorsChain::<P>::new(&label).take(gens_capacity));
        }

        // Generate a flattened interleaved iterator for the precomputation tables
        let iter_g_vec = g_vec.iter().flat_map(move |g_j| g_j.iter());
        let iter_h_vec = h_vec.iter().flat_map(move |h_j| h_j.iter());
        let iter_interleaved = iter_g_vec.interleave(iter_h_vec);
        let precomp = Arc::new(P::Precomputation::new(iter_interleaved));

        Ok(BulletproofGens {
            gens_capacity,
            party_capacity,
            g_vec,
            h_vec,
            precomp: Some(precomp),
            source: None,
            msm_chunk: 0,
        })
    }

    /// Generators produced by `source` on demand (Tally's low-memory patch): nothing is hashed to the curve, held or
    /// precomputed; multiscalar multiplications over them take `msm_chunk` points at a time (at least 1). The source
    /// must produce the same points as [`BulletproofGens::new`] would for the proofs to interoperate.
    pub fn from_source(
        gens_capacity: usize,
        party_capacity: usize,
        source: GeneratorSource<P>,
        msm_chunk: usize,
    ) -> Result<Self, ProofError> {
        u32::try_from(party_capacity).map_err(|_| ProofError::SizeOverflow)?;
        Ok(BulletproofGens {
            gens_capacity,
            party_capacity,
            g_vec: Vec::new(),
            h_vec: Vec::new(),
            precomp: None,
            source: Some(source),
            msm_chunk: msm_chunk.max(1),
        })
    }

    /// Return an iterator over the aggregation of the parties' G generators with given size `n`.
    pub(crate) fn g_iter(&self, n: usize, m: usize) -> impl Iterator<Item = P> + '_
    where P: Clone {
        AggregatedGensIter {
            n,
            m,
            array: &self.g_vec,
            source: self.source.map(|s| (s, false)),
            party_idx: 0,
            gen_idx: 0,
        }
    }

    /// Return an iterator over the aggregation of the parties' H generators with given size `n`.
    pub(crate) fn h_iter(&self, n: usize, m: usize) -> impl Iterator<Item = P> + '_
    where P: Clone {
        AggregatedGensIter {
            n,
            m,
            array: &self.h_vec,
            source: self.source.map(|s| (s, true)),
            party_idx: 0,
            gen_idx: 0,
        }
    }

    /// Return the interleaved precomputation tables (`None` for generators from a source).
    pub(crate) fn precomp(&self) -> Option<Arc<P::Precomputation>> {
        self.precomp.clone()
    }

    /// With generators from a source: the points per multiscalar multiplication.
    pub(crate) fn msm_chunk(&self) -> Option<usize> {
        self.source.map(|_| self.msm_chunk)
    }

    /// Returns `true` if `self` and `other` share the same precomputation tables.
    ///
    /// Because the tables are only ever created in [`BulletproofGens::new`] alongside the generator vectors they are
    /// built from (enforced by field privacy), and cloning shares them, pointer equality guarantees the generator
    /// vectors are identical without an element-wise comparison. A `false` result is inconclusive.
    pub(crate) fn shares_precomp(&self, other: &Self) -> bool {
        match (&self.precomp, &other.precomp) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Test-only read access to the per-party G generator vectors.
    #[cfg(test)]
    pub(crate) fn g_vec(&self) -> &[Vec<P>] {
        &self.g_vec
    }

    /// Test-only read access to the per-party H generator vectors.
    #[cfg(test)]
    pub(crate) fn h_vec(&self) -> &[Vec<P>] {
        &self.h_vec
    }

    /// Test-only mutable access to the per-party G generator vectors, for constructing intentionally mismatched
    /// generators. Mutating generators whose precomputation tables are shared with another instance breaks the
    /// invariant `shares_precomp` relies on, so tests must only mutate freshly created generators.
    #[cfg(test)]
    pub(crate) fn g_vec_mut(&mut self) -> &mut [Vec<P>] {
        &mut self.g_vec
    }

    /// Test-only mutable access to the per-party H generator vectors; see [`BulletproofGens::g_vec_mut`].
    #[cfg(test)]
    pub(crate) fn h_vec_mut(&mut self) -> &mut [Vec<P>] {
        &mut self.h_vec
    }
}

impl<P> Debug for BulletproofGens<P>
where
    P: Compressable + Debug + Precomputable,
    P::Compressed: Debug,
{
    fn fmt(&self, f: &mut Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RangeParameters")
            .field("gens_capacity", &self.gens_capacity)
            .field("party_capacity", &self.party_capacity)
            .field("g_vec", &self.g_vec)
            .field("h_vec", &self.h_vec)
            .finish()
    }
}
