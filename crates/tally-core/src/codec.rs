//! Canonical CBOR (RFC 8949 §4.2.1 "core deterministic encoding") for every
//! wire object.
//!
//! Objects are encoded as definite-length arrays of fixed arity; integers in
//! their shortest form; byte strings definite. Decoding is strict: exact
//! arity, bounded lengths, no trailing bytes, and finally the decoded value
//! is re-encoded and compared with the input, so any non-canonical form
//! (long integer heads, indefinite lengths, …) is rejected. "Parse, don't
//! validate": a decoder returns a typed value or a [`CodecError`].

use alloc::vec::Vec;
use core::fmt;

use minicbor::data::Type;

/// Why bytes were not a valid wire object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// Input ended inside an item.
    Truncated,
    /// Bytes left after the top-level object.
    TrailingBytes,
    /// Valid CBOR but not in canonical (deterministic) form.
    NonCanonical,
    /// An item of another CBOR type, arity or length than the format says.
    Malformed,
    /// A `version` field this implementation does not know.
    UnsupportedVersion,
    /// A tag, suite or kind code this implementation does not know.
    UnknownCode,
    /// A length above the format's bound (history budget, outputs per record…).
    TooLong,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            CodecError::Truncated => "input ends inside an item",
            CodecError::TrailingBytes => "trailing bytes after the object",
            CodecError::NonCanonical => "encoding is not canonical CBOR",
            CodecError::Malformed => "item has the wrong CBOR type, arity or length",
            CodecError::UnsupportedVersion => "unsupported format version",
            CodecError::UnknownCode => "unknown suite, kind or form code",
            CodecError::TooLong => "length exceeds the format's bound",
        };
        f.write_str(s)
    }
}

impl From<minicbor::decode::Error> for CodecError {
    fn from(e: minicbor::decode::Error) -> Self {
        if e.is_end_of_input() {
            CodecError::Truncated
        } else {
            CodecError::Malformed
        }
    }
}

/// Writes canonical CBOR into a growable buffer. Writing into a `Vec` cannot
/// fail, so the writer methods return nothing.
pub struct Writer {
    enc: minicbor::Encoder<Vec<u8>>,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            enc: minicbor::Encoder::new(Vec::new()),
        }
    }
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            enc: minicbor::Encoder::new(Vec::with_capacity(n)),
        }
    }
    // The encoder writes to a Vec, whose Write impl is infallible; the
    // results are therefore ignored deliberately.
    pub fn array(&mut self, n: usize) {
        let _ = self.enc.array(n as u64);
    }
    pub fn u64(&mut self, v: u64) {
        let _ = self.enc.u64(v);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        let _ = self.enc.bytes(b);
    }
    pub fn text(&mut self, s: &str) {
        let _ = self.enc.str(s);
    }
    pub fn bool(&mut self, b: bool) {
        let _ = self.enc.bool(b);
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.enc.into_writer()
    }
    /// What was written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.enc.writer()
    }
    /// Appends what another writer wrote (complete items, as
    /// [`Writer::as_bytes`] gives them): an object encoded in pieces is
    /// encoded once, by the code that makes the pieces.
    pub fn append_encoded(&mut self, encoded: &[u8]) {
        self.enc.writer_mut().extend_from_slice(encoded);
    }
    /// Forgets what was written, keeping the buffer (a caller encoding
    /// many small pieces one after the other reuses one allocation).
    pub fn clear(&mut self) {
        self.enc.writer_mut().clear();
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

/// Strict reader over one input buffer.
pub struct Reader<'b> {
    dec: minicbor::Decoder<'b>,
}

impl<'b> Reader<'b> {
    pub fn new(bytes: &'b [u8]) -> Self {
        Reader {
            dec: minicbor::Decoder::new(bytes),
        }
    }
    pub fn position(&self) -> usize {
        self.dec.position()
    }
    pub fn input(&self) -> &'b [u8] {
        self.dec.input()
    }
    /// The argument of the next item's head when the item is of major
    /// type `major` and its head is canonical (shortest form), with the
    /// head's length; `None` otherwise, and then the caller takes the
    /// general path (minicbor), which classifies what it finds exactly as
    /// before. A fast path only: for every input it accepts, the general
    /// path gives the same value (boot decodes a state of 15 KB, about
    /// 800 instructions per 32-byte digest through the general path on
    /// the Cortex-M4; docs/PERFORMANCE.md).
    #[inline]
    fn head(&self, major: u8) -> Option<(u64, usize)> {
        let input = self.dec.input();
        let p = self.dec.position();
        let b = *input.get(p)?;
        if b >> 5 != major {
            return None;
        }
        let at = |n: usize| -> Option<u64> {
            let bytes = input.get(p + 1..p + 1 + n)?;
            Some(bytes.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
        };
        let (v, len, min) = match b & 0x1f {
            info @ 0..=23 => return Some((u64::from(info), 1)),
            24 => (at(1)?, 2, 24),
            25 => (at(2)?, 3, 0x100),
            26 => (at(4)?, 5, 0x1_0000),
            27 => (at(8)?, 9, 0x1_0000_0000),
            _ => return None,
        };
        (v >= min).then_some((v, len))
    }
    /// A canonical definite byte string's contents (see [`Reader::head`]).
    #[inline]
    fn fast_bytes(&mut self) -> Option<&'b [u8]> {
        let (len, head) = self.head(2)?;
        let start = self.dec.position() + head;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        let b = self.dec.input().get(start..end)?;
        self.dec.set_position(end);
        Some(b)
    }
    fn expect_type(&self, t: Type) -> Result<(), CodecError> {
        match self.dec.datatype() {
            Ok(ty) if ty == t => Ok(()),
            Ok(Type::ArrayIndef) | Ok(Type::BytesIndef) | Ok(Type::StringIndef) => {
                Err(CodecError::NonCanonical)
            }
            Ok(_) => Err(CodecError::Malformed),
            Err(e) => Err(e.into()),
        }
    }
    /// A definite array of exactly `n` items.
    pub fn array(&mut self, n: usize) -> Result<(), CodecError> {
        if let Some((len, head)) = self.head(4) {
            if len != n as u64 {
                return Err(CodecError::Malformed);
            }
            self.dec.set_position(self.dec.position() + head);
            return Ok(());
        }
        self.expect_type(Type::Array)?;
        match self.dec.array()? {
            Some(len) if len == n as u64 => Ok(()),
            _ => Err(CodecError::Malformed),
        }
    }
    /// A definite array of at most `max` items; returns its length.
    pub fn array_max(&mut self, max: usize) -> Result<usize, CodecError> {
        if let Some((len, head)) = self.head(4) {
            if len > max as u64 {
                return Err(CodecError::TooLong);
            }
            self.dec.set_position(self.dec.position() + head);
            return Ok(len as usize);
        }
        self.expect_type(Type::Array)?;
        match self.dec.array()? {
            Some(len) if len <= max as u64 => Ok(len as usize),
            Some(_) => Err(CodecError::TooLong),
            None => Err(CodecError::NonCanonical),
        }
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        if let Some((v, head)) = self.head(0) {
            self.dec.set_position(self.dec.position() + head);
            return Ok(v);
        }
        match self.dec.datatype() {
            Ok(Type::U8 | Type::U16 | Type::U32 | Type::U64) => Ok(self.dec.u64()?),
            Ok(_) => Err(CodecError::Malformed),
            Err(e) => Err(e.into()),
        }
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.u64()?).map_err(|_| CodecError::Malformed)
    }
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        u16::try_from(self.u64()?).map_err(|_| CodecError::Malformed)
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        u8::try_from(self.u64()?).map_err(|_| CodecError::Malformed)
    }
    pub fn bool(&mut self) -> Result<bool, CodecError> {
        let p = self.dec.position();
        if let Some(&b @ (0xf4 | 0xf5)) = self.dec.input().get(p) {
            self.dec.set_position(p + 1);
            return Ok(b == 0xf5);
        }
        self.expect_type(Type::Bool)?;
        Ok(self.dec.bool()?)
    }
    /// A definite byte string of at most `max` bytes.
    pub fn bytes_max(&mut self, max: usize) -> Result<&'b [u8], CodecError> {
        let b = match self.fast_bytes() {
            Some(b) => b,
            None => {
                self.expect_type(Type::Bytes)?;
                self.dec.bytes()?
            }
        };
        if b.len() > max {
            return Err(CodecError::TooLong);
        }
        Ok(b)
    }
    /// A definite byte string of exactly `len` bytes, in place.
    pub fn bytes_exact(&mut self, len: usize) -> Result<&'b [u8], CodecError> {
        let b = match self.fast_bytes() {
            Some(b) => b,
            None => {
                self.expect_type(Type::Bytes)?;
                self.dec.bytes()?
            }
        };
        if b.len() != len {
            return Err(CodecError::Malformed);
        }
        Ok(b)
    }
    /// A definite byte string of exactly `N` bytes.
    pub fn bytes_array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let b = match self.fast_bytes() {
            Some(b) => b,
            None => {
                self.expect_type(Type::Bytes)?;
                self.dec.bytes()?
            }
        };
        b.try_into().map_err(|_| CodecError::Malformed)
    }
    /// A definite text string of at most `max` bytes.
    pub fn text_max(&mut self, max: usize) -> Result<&'b str, CodecError> {
        self.expect_type(Type::String)?;
        let s = self.dec.str()?;
        if s.len() > max {
            return Err(CodecError::TooLong);
        }
        Ok(s)
    }
    /// The format version; anything but `expected` is refused.
    pub fn version(&mut self, expected: u8) -> Result<(), CodecError> {
        if self.u64()? != u64::from(expected) {
            return Err(CodecError::UnsupportedVersion);
        }
        Ok(())
    }
}

/// A wire object with one canonical encoding.
pub trait Cbor: Sized {
    fn write(&self, w: &mut Writer);
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError>;

    /// The canonical encoding.
    fn to_cbor(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_bytes()
    }

    /// Decodes exactly one canonical object: trailing bytes and any
    /// non-canonical encoding are errors.
    fn from_cbor(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let value = Self::read(&mut r)?;
        if r.position() != bytes.len() {
            return Err(CodecError::TrailingBytes);
        }
        // Strict reading already fixes arity and types; re-encoding catches
        // the remaining freedoms of CBOR (integer and length head sizes).
        if value.to_cbor() != bytes {
            return Err(CodecError::NonCanonical);
        }
        Ok(value)
    }
}

/// Reads a bounded sequence of `T`.
pub fn read_vec<T: Cbor>(r: &mut Reader<'_>, max: usize) -> Result<Vec<T>, CodecError> {
    let n = r.array_max(max)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(T::read(r)?);
    }
    Ok(v)
}

/// Reads a bounded sequence of 32-byte digests (ids, as [`read_vec`] of
/// `Hash32` reads them), each copied once from the input: boot decodes
/// tables of hundreds (docs/PERFORMANCE.md, "Cortex-M4").
pub fn read_digests(
    r: &mut Reader<'_>,
    max: usize,
) -> Result<Vec<crate::crypto::Hash32>, CodecError> {
    let n = r.array_max(max)?;
    let mut v = alloc::vec![crate::crypto::Hash32::default(); n];
    for h in v.iter_mut() {
        h.0.copy_from_slice(r.bytes_exact(32)?);
    }
    Ok(v)
}

pub fn write_vec<T: Cbor>(w: &mut Writer, items: &[T]) {
    w.array(items.len());
    for i in items {
        i.write(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair(u64, [u8; 2]);
    impl Cbor for Pair {
        fn write(&self, w: &mut Writer) {
            w.array(2);
            w.u64(self.0);
            w.bytes(&self.1);
        }
        fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            r.array(2)?;
            Ok(Pair(r.u64()?, r.bytes_array()?))
        }
    }

    #[test]
    fn round_trip_and_strictness() {
        let p = Pair(24, [1, 2]);
        let b = p.to_cbor();
        assert_eq!(b, [0x82, 0x18, 24, 0x42, 1, 2]);
        assert!(Pair::from_cbor(&b).is_ok());
        // trailing byte
        let mut t = b.clone();
        t.push(0);
        assert_eq!(Pair::from_cbor(&t).err(), Some(CodecError::TrailingBytes));
        // non-shortest integer head (0x19 0x00 0x18 = 24 in two bytes)
        let long = [0x82, 0x19, 0x00, 24, 0x42, 1, 2];
        assert_eq!(Pair::from_cbor(&long).err(), Some(CodecError::NonCanonical));
        // indefinite array
        let indef = [0x9f, 0x18, 24, 0x42, 1, 2, 0xff];
        assert_eq!(
            Pair::from_cbor(&indef).err(),
            Some(CodecError::NonCanonical)
        );
        // truncated
        assert_eq!(Pair::from_cbor(&b[..4]).err(), Some(CodecError::Truncated));
        // wrong arity
        assert_eq!(
            Pair::from_cbor(&[0x81, 0x01]).err(),
            Some(CodecError::Malformed)
        );
        // wrong type
        assert_eq!(
            Pair::from_cbor(&[0x82, 0x41, 0, 0x42, 1, 2]).err(),
            Some(CodecError::Malformed)
        );
    }
}
