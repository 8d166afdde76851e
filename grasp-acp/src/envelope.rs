//! Envelopes: small, strict CBOR arrays of unsigned integers and byte
//! strings, `[version, kind, fields…, last]`, where `last` is a byte string
//! (a ciphertext, a payload, a signature). The security backends wrap GRASP
//! messages in them (QUADS records, signed TLS-backend multicasts), so they
//! stay self-delimiting and the stream framing still works. Definite lengths
//! only; every claimed length is checked against the bytes present; nothing
//! is allocated while parsing.

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

fn head(out: &mut Vec<u8>, major: u8, v: u64) {
    let m = major << 5;
    if v < 24 {
        out.push(m | v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[m | 24, v as u8]);
    } else if v <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Starts an envelope of `n` items with `version` and `kind`; returns the
/// buffer. The caller appends the header items, then the last one.
pub fn start(n: u64, version: u64, kind: u64, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    head(&mut out, 4, n);
    head(&mut out, 0, version);
    head(&mut out, 0, kind);
    out
}

/// Appends an unsigned integer.
pub fn push_uint(out: &mut Vec<u8>, v: u64) {
    head(out, 0, v);
}

/// Appends a byte string.
pub fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

/// The byte-string head of a ciphertext of `len` bytes (the ciphertext
/// itself follows).
pub fn push_bytes_head(out: &mut Vec<u8>, len: usize) {
    head(out, 2, len as u64);
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

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let end = self.pos.checked_add(n).ok_or(EnvelopeError::Truncated)?;
        let s = self.b.get(self.pos..end).ok_or(EnvelopeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn head(&mut self) -> Result<(u8, u64), EnvelopeError> {
        let ib = self.take(1)?[0];
        let major = ib >> 5;
        let info = ib & 0x1f;
        let v = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes(
                self.take(2)?.try_into().unwrap_or([0; 2]),
            )),
            26 => u64::from(u32::from_be_bytes(
                self.take(4)?.try_into().unwrap_or([0; 4]),
            )),
            27 => u64::from_be_bytes(self.take(8)?.try_into().unwrap_or([0; 8])),
            _ => return Err(EnvelopeError::Malformed),
        };
        Ok((major, v))
    }

    fn item(&mut self) -> Result<Item<'a>, EnvelopeError> {
        match self.head()? {
            (0, v) => Ok(Item::Uint(v)),
            (2, len) => {
                let len = usize::try_from(len).map_err(|_| EnvelopeError::Truncated)?;
                Ok(Item::Bytes(self.take(len)?))
            }
            _ => Err(EnvelopeError::Malformed),
        }
    }
}

/// Parses a whole envelope (`b` must be exactly one) of format `version`.
pub fn parse(b: &[u8], version: u64) -> Result<Parsed<'_>, EnvelopeError> {
    let mut c = Cursor { b, pos: 0 };
    let (major, n) = c.head()?;
    if major != 4 {
        return Err(EnvelopeError::Malformed);
    }
    if !(3..=9).contains(&n) {
        return Err(EnvelopeError::Malformed);
    }
    let Item::Uint(v) = c.item()? else {
        return Err(EnvelopeError::Malformed);
    };
    if v != version {
        return Err(EnvelopeError::UnknownVersion);
    }
    let Item::Uint(kind) = c.item()? else {
        return Err(EnvelopeError::Malformed);
    };
    let mut fields = Fields::default();
    for i in 0..(n - 3) as usize {
        fields.items[i] = Some(c.item()?);
    }
    fields.len = (n - 3) as usize;
    let header_end = c.pos;
    let Item::Bytes(last) = c.item()? else {
        return Err(EnvelopeError::Malformed);
    };
    if c.pos != b.len() {
        return Err(EnvelopeError::Malformed);
    }
    Ok(Parsed {
        kind,
        fields,
        header: &b[..header_end],
        last,
    })
}
