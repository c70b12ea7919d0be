// Copyright 2022 The Tari Project
// SPDX-License-Identifier: BSD-3-Clause

//! Bulletproofs+ `ScalarProtocol` trait for using a Scalar

/// Bulletproofs+ `CurvePointProtocol` trait
pub mod curve_point_protocol;
/// Bulletproofs+ `ScalarProtocol` trait for using a Scalar
pub mod scalar_protocol;
/// Bulletproofs+ `TranscriptProtocol` trait for using a Scalar
pub mod transcript_protocol;
