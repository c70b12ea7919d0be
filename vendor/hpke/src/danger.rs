//! ⚠️ WARNING: Do NOT use this module unless you really know what you're doing. Read further
//! inside.
//!
//! This API is unstable. If you use `danger`, make sure to **pin the patch version of this crate**
//! in your dependencies, e.g., `=0.14.0`.

pub mod streaming_enc;
