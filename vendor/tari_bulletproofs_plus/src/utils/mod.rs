// Copyright 2022 The Tari Project
// SPDX-License-Identifier: BSD-3-Clause

//! Bulletproofs+ utilities

pub mod generic;
pub(crate) mod nullrng;
