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
    /// The head of a definite byte string of `len` bytes, which the
    /// caller appends itself (a table written in pieces, straight to
    /// flash). A byte string's head is an unsigned integer's with major
    /// type 2.
    pub fn bytes_head(&mut self, len: usize) {
        let start = self.enc.writer().len();
        let _ = self.enc.u64(len as u64);
        self.enc.writer_mut()[start] |= 0x40;
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
///
/// Hand-written over the bytes (it was minicbor's `Decoder`): it reads
/// exactly what that reader read and refuses what it refused, with the
/// same [`CodecError`] (test `reads_as_the_minicbor_reader`), in less code
/// and time on the Cortex-M4 (decision 0022, session 10). Like it, it
/// reads a head in a longer form than needed; [`Cbor::from_cbor`] refuses
/// those by re-encoding.
pub struct Reader<'b> {
    input: &'b [u8],
    pos: usize,
}

impl<'b> Reader<'b> {
    pub fn new(bytes: &'b [u8]) -> Self {
        Reader {
            input: bytes,
            pos: 0,
        }
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn input(&self) -> &'b [u8] {
        self.input
    }
    /// The next item's initial byte.
    fn initial(&self) -> Result<u8, CodecError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(CodecError::Truncated)
    }
    /// The next item's initial byte if it is of major type `major` with
    /// its argument in the head; else an indefinite array, byte or text
    /// string is `NonCanonical`, anything else `Malformed`.
    fn expect(&self, major: u8) -> Result<u8, CodecError> {
        let b = self.initial()?;
        if b >> 5 == major && b & 0x1f <= 27 {
            return Ok(b);
        }
        Err(match b {
            0x5f | 0x7f | 0x9f => CodecError::NonCanonical,
            _ => self.other(b),
        })
    }
    /// The error for an item of another type than the one read:
    /// `Malformed`, but minicbor told a negative integer's type (by size)
    /// from the first byte of its argument, so one with nothing after its
    /// initial byte was `Truncated`.
    fn other(&self, b: u8) -> CodecError {
        if (0x38..=0x3b).contains(&b) && self.input.len() - self.pos <= 1 {
            CodecError::Truncated
        } else {
            CodecError::Malformed
        }
    }
    /// Reads the head that starts with `b` (checked by the caller): its
    /// argument.
    fn head(&mut self, b: u8) -> Result<u64, CodecError> {
        let n = match b & 0x1f {
            info @ 0..=23 => {
                self.pos += 1;
                return Ok(u64::from(info));
            }
            24 => 1,
            25 => 2,
            26 => 4,
            _ => 8,
        };
        let start = self.pos + 1;
        let arg = self
            .input
            .get(start..start + n)
            .ok_or(CodecError::Truncated)?;
        self.pos = start + n;
        Ok(arg.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    }
    /// The next `len` bytes, in place.
    fn take(&mut self, len: u64) -> Result<&'b [u8], CodecError> {
        let len = usize::try_from(len).map_err(|_| CodecError::Malformed)?;
        let b = self
            .pos
            .checked_add(len)
            .and_then(|end| self.input.get(self.pos..end))
            .ok_or(CodecError::Truncated)?;
        self.pos += len;
        Ok(b)
    }
    /// A definite array of exactly `n` items.
    pub fn array(&mut self, n: usize) -> Result<(), CodecError> {
        let b = self.expect(4)?;
        if self.head(b)? != n as u64 {
            return Err(CodecError::Malformed);
        }
        Ok(())
    }
    /// A definite array of at most `max` items; returns its length.
    pub fn array_max(&mut self, max: usize) -> Result<usize, CodecError> {
        let b = self.expect(4)?;
        let len = self.head(b)?;
        if len > max as u64 {
            return Err(CodecError::TooLong);
        }
        Ok(len as usize)
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let b = self.initial()?;
        if b >> 5 != 0 || b & 0x1f > 27 {
            return Err(self.other(b));
        }
        self.head(b)
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
        match self.initial()? {
            b @ (0xf4 | 0xf5) => {
                self.pos += 1;
                Ok(b == 0xf5)
            }
            0x5f | 0x7f | 0x9f => Err(CodecError::NonCanonical),
            b => Err(self.other(b)),
        }
    }
    /// A definite byte string, in place.
    fn bytes(&mut self) -> Result<&'b [u8], CodecError> {
        let b = self.expect(2)?;
        let len = self.head(b)?;
        self.take(len)
    }
    /// A definite byte string of at most `max` bytes.
    pub fn bytes_max(&mut self, max: usize) -> Result<&'b [u8], CodecError> {
        let b = self.bytes()?;
        if b.len() > max {
            return Err(CodecError::TooLong);
        }
        Ok(b)
    }
    /// A definite byte string of exactly `len` bytes, in place.
    pub fn bytes_exact(&mut self, len: usize) -> Result<&'b [u8], CodecError> {
        let b = self.bytes()?;
        if b.len() != len {
            return Err(CodecError::Malformed);
        }
        Ok(b)
    }
    /// A definite byte string of exactly `N` bytes.
    pub fn bytes_array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        self.bytes()?.try_into().map_err(|_| CodecError::Malformed)
    }
    /// A definite text string of at most `max` bytes.
    pub fn text_max(&mut self, max: usize) -> Result<&'b str, CodecError> {
        let b = self.expect(3)?;
        let len = self.head(b)?;
        let s = core::str::from_utf8(self.take(len)?).map_err(|_| CodecError::Malformed)?;
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

    use alloc::format;

    /// A byte string written as its head and then its bytes is the same
    /// encoding as [`Writer::bytes`], at every head size.
    #[test]
    fn a_byte_string_head_then_its_bytes_is_the_byte_string() {
        for len in [0usize, 1, 23, 24, 255, 256, 65_535, 65_536] {
            let body = alloc::vec![0xA5u8; len];
            let mut a = Writer::new();
            a.bytes(&body);
            let mut b = Writer::new();
            b.bytes_head(len);
            b.append_encoded(&body);
            assert_eq!(a.as_bytes(), b.as_bytes(), "length {len}");
        }
    }

    /// The reader as it was (minicbor's decoder), to check the
    /// hand-written one against.
    struct OldReader<'b> {
        dec: minicbor::Decoder<'b>,
    }
    impl<'b> OldReader<'b> {
        fn expect_type(&self, t: minicbor::data::Type) -> Result<(), CodecError> {
            use minicbor::data::Type;
            match self.dec.datatype() {
                Ok(ty) if ty == t => Ok(()),
                Ok(Type::ArrayIndef) | Ok(Type::BytesIndef) | Ok(Type::StringIndef) => {
                    Err(CodecError::NonCanonical)
                }
                Ok(_) => Err(CodecError::Malformed),
                Err(e) => Err(e.into()),
            }
        }
        fn array_max(&mut self, max: usize) -> Result<usize, CodecError> {
            self.expect_type(minicbor::data::Type::Array)?;
            match self.dec.array()? {
                Some(len) if len <= max as u64 => Ok(len as usize),
                Some(_) => Err(CodecError::TooLong),
                None => Err(CodecError::NonCanonical),
            }
        }
        fn array(&mut self, n: usize) -> Result<(), CodecError> {
            self.expect_type(minicbor::data::Type::Array)?;
            match self.dec.array()? {
                Some(len) if len == n as u64 => Ok(()),
                _ => Err(CodecError::Malformed),
            }
        }
        fn u64(&mut self) -> Result<u64, CodecError> {
            use minicbor::data::Type;
            match self.dec.datatype() {
                Ok(Type::U8 | Type::U16 | Type::U32 | Type::U64) => Ok(self.dec.u64()?),
                Ok(_) => Err(CodecError::Malformed),
                Err(e) => Err(e.into()),
            }
        }
        fn bool(&mut self) -> Result<bool, CodecError> {
            self.expect_type(minicbor::data::Type::Bool)?;
            Ok(self.dec.bool()?)
        }
        fn bytes_max(&mut self, max: usize) -> Result<&'b [u8], CodecError> {
            self.expect_type(minicbor::data::Type::Bytes)?;
            let b = self.dec.bytes()?;
            if b.len() > max {
                return Err(CodecError::TooLong);
            }
            Ok(b)
        }
        fn text_max(&mut self, max: usize) -> Result<&'b str, CodecError> {
            self.expect_type(minicbor::data::Type::String)?;
            let s = self.dec.str()?;
            if s.len() > max {
                return Err(CodecError::TooLong);
            }
            Ok(s)
        }
    }

    /// The hand-written reader reads what minicbor's did, fails where it
    /// failed with the same error, and stops at the same place: every
    /// read on inputs made of heads of every major type and length form
    /// (short, long, truncated, reserved, indefinite, break, UTF-8 good
    /// and bad).
    #[test]
    fn reads_as_the_minicbor_reader() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for b in 0..=255u8 {
            for tail in [
                &[][..],
                &[0][..],
                &[1, 2][..],
                &[0x61, 0xff, 0][..],
                &[0, 0, 0, 5, 0x41][..],
            ] {
                let mut v = alloc::vec![b];
                v.extend_from_slice(tail);
                inputs.push(v);
            }
        }
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    // Mostly plausible heads and small arguments.
                    match r % 4 {
                        0 => (r >> 8) as u8,
                        1 => [
                            0x18, 0x19, 0x1a, 0x1b, 0x58, 0x78, 0x98, 0x9f, 0x5f, 0x7f, 0xff, 0xf4,
                            0xf5,
                        ][(r >> 8) as usize % 13],
                        _ => ((r >> 8) % 8) as u8 | (((r >> 16) % 8) as u8) << 5,
                    }
                })
                .collect();
            inputs.push(v);
        }
        for input in &inputs {
            for op in 0..7u8 {
                let mut new = Reader::new(input);
                let mut old = OldReader {
                    dec: minicbor::Decoder::new(input),
                };
                // Up to four reads of one kind in a row.
                for _ in 0..4 {
                    let (a, b) = match op {
                        0 => (format!("{:?}", new.u64()), format!("{:?}", old.u64())),
                        1 => (
                            format!("{:?}", new.array_max(3)),
                            format!("{:?}", old.array_max(3)),
                        ),
                        2 => (format!("{:?}", new.array(1)), format!("{:?}", old.array(1))),
                        3 => (format!("{:?}", new.bool()), format!("{:?}", old.bool())),
                        4 => (
                            format!("{:?}", new.bytes_max(4)),
                            format!("{:?}", old.bytes_max(4)),
                        ),
                        5 => (
                            format!("{:?}", new.text_max(4)),
                            format!("{:?}", old.text_max(4)),
                        ),
                        _ => (
                            format!("{:?}", new.bytes_max(1 << 20)),
                            format!("{:?}", old.bytes_max(1 << 20)),
                        ),
                    };
                    assert_eq!(a, b, "op {op} on {input:02x?}");
                    if a.starts_with("Err") {
                        break;
                    }
                    assert_eq!(
                        new.position(),
                        old.dec.position(),
                        "op {op} on {input:02x?}"
                    );
                }
            }
        }
    }

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
