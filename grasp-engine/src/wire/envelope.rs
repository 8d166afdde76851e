//! Envelopes: small, strict CBOR arrays of unsigned integers and byte
//! strings, `[version, kind, fields…, last]`, where `last` is a byte string
//! (a ciphertext, a payload, a signature). The security backends wrap GRASP
//! messages in them (QUADS records, signed TLS-backend multicasts), so they
//! stay self-delimiting and the stream framing still works. Definite lengths
//! only; every claimed length is checked against the bytes present; nothing
//! is allocated while parsing. Written and read with the one CBOR head
//! codec of the workspace (the `wire` module's CBOR reader and writer).

use super::cbor::{write_head, Head, Reader, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_UINT};
use super::DecodeError;

/// Why an envelope did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not an envelope of the expected shape.
    #[error("malformed envelope")]
    Malformed,
    /// Shorter than its own structure says.
    #[error("truncated envelope")]
    Truncated,
    /// Another format version.
    #[error("unknown envelope version")]
    UnknownVersion,
}

/// A CBOR item of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// An unsigned integer.
    Uint(u64),
    /// A byte string.
    Bytes(&'a [u8]),
}

/// Starts an envelope of `n` items with `version` and `kind`; returns the
/// buffer. The caller appends the header items, then the last one.
pub fn start(n: u64, version: u64, kind: u64, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    write_head(&mut out, MAJOR_ARRAY, n);
    write_head(&mut out, MAJOR_UINT, version);
    write_head(&mut out, MAJOR_UINT, kind);
    out
}

/// Appends an unsigned integer.
pub fn push_uint(out: &mut Vec<u8>, v: u64) {
    write_head(out, MAJOR_UINT, v);
}

/// Appends a byte string.
pub fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_head(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

/// The byte-string head of a ciphertext of `len` bytes (the ciphertext
/// itself follows).
pub fn push_bytes_head(out: &mut Vec<u8>, len: usize) {
    write_head(out, MAJOR_BYTES, len as u64);
}

/// At most six header fields, without allocating.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    items: [Option<Item<'a>>; 6],
    len: usize,
}

impl<'a> Fields<'a> {
    /// How many.
    pub fn len(&self) -> usize {
        self.len
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first.
    pub fn first(&self) -> Option<&Item<'a>> {
        self.get(0)
    }

    /// The `i`th.
    pub fn get(&self, i: usize) -> Option<&Item<'a>> {
        self.items.get(i).and_then(Option::as_ref)
    }
}

impl<'a> PartialEq<Vec<Item<'a>>> for Fields<'a> {
    fn eq(&self, other: &Vec<Item<'a>>) -> bool {
        self.len == other.len()
            && other
                .iter()
                .enumerate()
                .all(|(i, x)| self.get(i) == Some(x))
    }
}

/// A parsed envelope: its items and where the last one
/// starts, so the header bytes before it can be authenticated as they were
/// received.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// Its kind (the second item).
    pub kind: u64,
    /// Items after version and kind, the last one excluded.
    pub fields: Fields<'a>,
    /// Bytes of the envelope before the last item's head (what a MAC or
    /// signature covers).
    pub header: &'a [u8],
    /// The last item (a byte string).
    pub last: &'a [u8],
}

fn item<'a>(r: &mut Reader<'a>) -> Result<Item<'a>, EnvelopeError> {
    let bad = |e: DecodeError| match e {
        DecodeError::Truncated { .. } => EnvelopeError::Truncated,
        _ => EnvelopeError::Malformed,
    };
    match r.head().map_err(bad)? {
        Head::Uint(v) => Ok(Item::Uint(v)),
        Head::Bytes(Some(len)) => Ok(Item::Bytes(r.take(len).map_err(bad)?)),
        _ => Err(EnvelopeError::Malformed),
    }
}

/// Parses a whole envelope (`b` must be exactly one) of format `version`.
pub fn parse(b: &[u8], version: u64) -> Result<Parsed<'_>, EnvelopeError> {
    let mut c = Reader::new(b, 1);
    let n = match c.head() {
        Ok(Head::Array(Some(n))) => n,
        Err(DecodeError::Truncated { .. }) => return Err(EnvelopeError::Truncated),
        _ => return Err(EnvelopeError::Malformed),
    };
    if !(3..=9).contains(&n) {
        return Err(EnvelopeError::Malformed);
    }
    let Item::Uint(v) = item(&mut c)? else {
        return Err(EnvelopeError::Malformed);
    };
    if v != version {
        return Err(EnvelopeError::UnknownVersion);
    }
    let Item::Uint(kind) = item(&mut c)? else {
        return Err(EnvelopeError::Malformed);
    };
    let mut fields = Fields::default();
    for i in 0..(n - 3) as usize {
        fields.items[i] = Some(item(&mut c)?);
    }
    fields.len = (n - 3) as usize;
    let header_end = c.pos();
    let Item::Bytes(last) = item(&mut c)? else {
        return Err(EnvelopeError::Malformed);
    };
    if c.pos() != b.len() {
        return Err(EnvelopeError::Malformed);
    }
    Ok(Parsed {
        kind,
        fields,
        header: &b[..header_end],
        last,
    })
}
