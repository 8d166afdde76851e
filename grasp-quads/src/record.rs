//! The sealed record: a CBOR array of unsigned integers and byte strings
//! (the exact layout is in the crate docs). Hand-written because it is tiny
//! and must be strict: definite lengths only, shortest forms not required
//! but sizes bounded by what is present.

use crate::DropReason;

/// Record format version.
pub(crate) const VERSION: u64 = 1;

/// Record kinds.
pub(crate) mod kind {
    /// A multicast.
    pub(crate) const MULTICAST: u64 = 0;
    /// The initiator's first record on a unicast channel.
    pub(crate) const OPEN: u64 = 1;
    /// The responder's first record on a unicast channel.
    pub(crate) const ANSWER: u64 = 2;
    /// An initiator's record under its opening key (sent before it saw the
    /// responder's first record).
    pub(crate) const EARLY: u64 = 3;
    /// A record under the sender's session key.
    pub(crate) const DATA: u64 = 4;
}

/// A CBOR item of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    Uint(u64),
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

/// Starts a record of `n` items with the version and kind; returns the
/// buffer. The caller appends the header items, then [`push_ciphertext`].
pub(crate) fn start(n: u64, kind: u64, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    head(&mut out, 4, n);
    head(&mut out, 0, VERSION);
    head(&mut out, 0, kind);
    out
}

pub(crate) fn push_uint(out: &mut Vec<u8>, v: u64) {
    head(out, 0, v);
}

pub(crate) fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

/// The byte-string head of a ciphertext of `len` bytes (the ciphertext
/// itself follows).
pub(crate) fn push_bytes_head(out: &mut Vec<u8>, len: usize) {
    head(out, 2, len as u64);
}

/// At most four header fields, without allocating.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    items: [Option<Item<'a>>; 4],
    len: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn first(&self) -> Option<&Item<'a>> {
        self.get(0)
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Item<'a>> {
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

/// A parsed record: its items and where the last one (the ciphertext)
/// starts, so the header bytes before it can be authenticated as they were
/// received.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub(crate) kind: u64,
    /// Items after version and kind, the ciphertext excluded.
    pub(crate) fields: Fields<'a>,
    /// Bytes of the record before the ciphertext item's head.
    pub(crate) header: &'a [u8],
    pub(crate) ciphertext: &'a [u8],
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DropReason> {
        let end = self.pos.checked_add(n).ok_or(DropReason::Truncated)?;
        let s = self.b.get(self.pos..end).ok_or(DropReason::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn head(&mut self) -> Result<(u8, u64), DropReason> {
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
            _ => return Err(DropReason::Malformed),
        };
        Ok((major, v))
    }

    fn item(&mut self) -> Result<Item<'a>, DropReason> {
        match self.head()? {
            (0, v) => Ok(Item::Uint(v)),
            (2, len) => {
                let len = usize::try_from(len).map_err(|_| DropReason::Truncated)?;
                Ok(Item::Bytes(self.take(len)?))
            }
            _ => Err(DropReason::Malformed),
        }
    }
}

/// Parses a whole record (`b` must be exactly one record).
pub(crate) fn parse(b: &[u8]) -> Result<Parsed<'_>, DropReason> {
    let mut c = Cursor { b, pos: 0 };
    let (major, n) = c.head()?;
    if major != 4 {
        return Err(DropReason::Malformed);
    }
    if !(3..=7).contains(&n) {
        return Err(DropReason::Malformed);
    }
    let Item::Uint(version) = c.item()? else {
        return Err(DropReason::Malformed);
    };
    if version != VERSION {
        return Err(DropReason::UnknownVersion);
    }
    let Item::Uint(kind) = c.item()? else {
        return Err(DropReason::Malformed);
    };
    let mut fields = Fields::default();
    for i in 0..(n - 3) as usize {
        fields.items[i] = Some(c.item()?);
    }
    fields.len = (n - 3) as usize;
    let header_end = c.pos;
    let Item::Bytes(ciphertext) = c.item()? else {
        return Err(DropReason::Malformed);
    };
    if c.pos != b.len() {
        return Err(DropReason::Malformed);
    }
    Ok(Parsed {
        kind,
        fields,
        header: &b[..header_end],
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let mut r = start(5, kind::OPEN, 64);
        push_bytes(&mut r, &[1; 8]);
        push_uint(&mut r, 1_700_000_000_000);
        let hdr = r.len();
        push_bytes(&mut r, b"ciphertext-and-tag");
        let p = parse(&r).unwrap();
        assert_eq!(p.kind, kind::OPEN);
        assert_eq!(
            p.fields,
            vec![Item::Bytes(&[1; 8]), Item::Uint(1_700_000_000_000)]
        );
        assert_eq!(p.header, &r[..hdr]);
        assert_eq!(p.ciphertext, b"ciphertext-and-tag");
        // Every truncation is Truncated, never a panic.
        for n in 0..r.len() {
            assert_eq!(parse(&r[..n]).unwrap_err(), DropReason::Truncated, "{n}");
        }
        // Trailing bytes, wrong version, wrong types.
        let mut t = r.clone();
        t.push(0);
        assert_eq!(parse(&t).unwrap_err(), DropReason::Malformed);
        let mut v = r.clone();
        v[1] = 2;
        assert_eq!(parse(&v).unwrap_err(), DropReason::UnknownVersion);
        assert_eq!(parse(&[0x81, 0x00]).unwrap_err(), DropReason::Malformed);
        assert_eq!(
            parse(&[0x83, 0x01, 0x04, 0x01]).unwrap_err(),
            DropReason::Malformed
        );
        // A claimed length far beyond the input is Truncated, not an allocation.
        assert_eq!(
            parse(&[0x83, 0x01, 0x04, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .unwrap_err(),
            DropReason::Truncated
        );
    }
}
