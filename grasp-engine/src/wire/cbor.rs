//! A small, strict, allocation-free CBOR (RFC 8949) reader and a minimal writer.
//!
//! GRASP needs only a fraction of CBOR's data model to parse its own message
//! structure, but must carry objective values of *any* CBOR verbatim (graspy
//! re-sends them byte for byte, and signatures over them may follow). So the
//! codec works on the encoded bytes directly: this reader walks heads and
//! validates well-formedness without building a tree, and objective values stay
//! as the exact byte span they arrived in (see [`super::Value`]). Converting a
//! value into a Rust type goes through `ciborium`.
//!
//! Why not `ciborium` for the message structure as well: its `Value` tree loses
//! the encoded width of floats and the shape of indefinite-length items (so a
//! decoded value would not re-encode to the same bytes), and building the tree
//! costs an allocation per node, which keeps it far from the codec's speed
//! target. Everything here is bounded: lengths are checked against the bytes
//! actually present before anything is taken, nesting depth is limited, and
//! nothing allocates.

use std::fmt;

use super::DecodeError;

pub(crate) const MAJOR_UINT: u8 = 0;
pub(crate) const MAJOR_NINT: u8 = 1;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_MAP: u8 = 5;
pub(crate) const MAJOR_TAG: u8 = 6;
pub(crate) const MAJOR_SIMPLE: u8 = 7;

/// The deepest nesting any reader allows, whatever its limits say: the
/// size of [`Reader::skip`]'s stack of open containers.
pub(crate) const MAX_NESTING: usize = 64;

/// The encoded `null` simple value.
pub(crate) const NULL: u8 = 0xf6;

/// One decoded CBOR head (initial byte plus argument).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Head {
    Uint(u64),
    /// Negative integer `-1 - n`.
    Nint(u64),
    /// Byte string of the given length, `None` when indefinite.
    Bytes(Option<u64>),
    Text(Option<u64>),
    Array(Option<u64>),
    Map(Option<u64>),
    Tag(u64),
    /// Simple value (false = 20, true = 21, null = 22, undefined = 23, ...).
    Simple(u8),
    /// Float of 2, 4 or 8 bytes, widened to f64 for display only.
    Float(f64),
    /// The "break" stop code of an indefinite-length item.
    Break,
}

impl Head {
    /// Human name of the kind of item, used in error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Head::Uint(_) => "unsigned integer",
            Head::Nint(_) => "negative integer",
            Head::Bytes(_) => "byte string",
            Head::Text(_) => "text string",
            Head::Array(_) => "array",
            Head::Map(_) => "map",
            Head::Tag(_) => "tag",
            Head::Simple(20 | 21) => "boolean",
            Head::Simple(22) => "null",
            Head::Simple(_) => "simple value",
            Head::Float(_) => "float",
            Head::Break => "break code",
        }
    }
}

/// A cursor over one CBOR-encoded buffer.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `buf` allowing `max_depth` levels of nesting (at most
    /// [`MAX_NESTING`]).
    pub(crate) fn new(buf: &'a [u8], max_depth: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            max_depth: max_depth.min(MAX_NESTING),
        }
    }

    /// Current byte offset.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            offset: self.buf.len(),
        }
    }

    /// Takes `n` bytes, failing (without allocating) if fewer are present.
    #[inline]
    pub(crate) fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() as u64 {
            return Err(self.truncated());
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.truncated()),
        }
    }

    /// Looks at the next head without consuming it.
    #[inline]
    pub(crate) fn peek_head(&self) -> Result<Head, DecodeError> {
        self.clone().head()
    }

    /// Reads the next head.
    #[inline]
    pub(crate) fn head(&mut self) -> Result<Head, DecodeError> {
        let start = self.pos;
        let ib = self.byte()?;
        let major = ib >> 5;
        let info = ib & 0x1f;
        let arg: Option<u64> = match info {
            0..=23 => Some(u64::from(info)),
            24 => Some(u64::from(self.byte()?)),
            25 => Some(u64::from(u16::from_be_bytes(self.array::<2>()?))),
            26 => Some(u64::from(u32::from_be_bytes(self.array::<4>()?))),
            27 => Some(u64::from_be_bytes(self.array::<8>()?)),
            28..=30 => {
                return Err(DecodeError::MalformedCbor {
                    offset: start,
                    what: "reserved additional information value (28-30)",
                })
            }
            _ => None, // 31: indefinite length or break
        };
        let head = match (major, arg) {
            (MAJOR_UINT, Some(n)) => Head::Uint(n),
            (MAJOR_NINT, Some(n)) => Head::Nint(n),
            (MAJOR_BYTES, a) => Head::Bytes(a),
            (MAJOR_TEXT, a) => Head::Text(a),
            (MAJOR_ARRAY, a) => Head::Array(a),
            (MAJOR_MAP, a) => Head::Map(a),
            (MAJOR_TAG, Some(n)) => Head::Tag(n),
            (MAJOR_SIMPLE, None) => Head::Break,
            (MAJOR_SIMPLE, Some(n)) => match info {
                0..=23 => Head::Simple(n as u8),
                24 if n < 32 => {
                    return Err(DecodeError::MalformedCbor {
                        offset: start,
                        what: "two-byte simple value below 32",
                    })
                }
                24 => Head::Simple(n as u8),
                25 => Head::Float(half_to_f64(n as u16)),
                26 => Head::Float(f64::from(f32::from_bits(n as u32))),
                _ => Head::Float(f64::from_bits(n)),
            },
            _ => {
                return Err(DecodeError::MalformedCbor {
                    offset: start,
                    what: "indefinite length on an integer or tag",
                })
            }
        };
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Skips one complete data item, checking that it is well formed, that
    /// text is UTF-8 and that nesting stays within the depth limit. `depth` is
    /// the nesting level of the item being skipped (the outermost item is 1).
    ///
    /// A loop over the items with a stack of the containers still open,
    /// not a recursion: every message is walked this way once to frame it
    /// and its value once more, and a call per item cost more than the item.
    pub(crate) fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        // Items left in each open container, innermost last (a map counts
        // its keys and values); `UNTIL_BREAK` for an indefinite-length one.
        // A count fits in 32 bits: one larger than the bytes left is
        // refused at once (every item takes at least a byte).
        const UNTIL_BREAK: u32 = u32::MAX;
        let mut open = [0u32; MAX_NESTING];
        let mut n = 0;
        loop {
            let start = self.pos;
            let Some(&ib) = self.buf.get(start) else {
                return Err(self.truncated());
            };
            // What the item opens: `Some(items)` for a container or a tag
            // (its one item), `None` for an item complete once skipped.
            let opens = match ib {
                // uint 0..23, nint -1..-24, simple values 0..23 (false,
                // true, null, undefined among them): nothing follows.
                0x00..=0x17 | 0x20..=0x37 | 0xe0..=0xf7 => {
                    self.pos += 1;
                    None
                }
                // Integers with a 1, 2, 4 or 8 byte argument (session ids).
                0x18..=0x1b | 0x38..=0x3b => {
                    self.take(1 + (1 << (ib & 0x03)))?;
                    None
                }
                // Byte and text strings shorter than 24 bytes.
                0x40..=0x57 | 0x60..=0x77 => {
                    self.pos += 1;
                    let s = self.take(u64::from(ib & 0x1f))?;
                    if ib >= 0x60 {
                        check_utf8(s, start)?;
                    }
                    None
                }
                // Arrays of fewer than 24 items, maps of fewer than 24 pairs.
                0x80..=0x97 | 0xa0..=0xb7 => {
                    self.pos += 1;
                    Some(u32::from(ib & 0x1f) << u32::from(ib >= 0xa0))
                }
                0xff => {
                    // Only an indefinite-length container ends at a break.
                    if n == 0 || open[n - 1] != UNTIL_BREAK {
                        return Err(DecodeError::MalformedCbor {
                            offset: start,
                            what: "unexpected break code",
                        });
                    }
                    self.pos += 1;
                    n -= 1;
                    None
                }
                _ => match self.head()? {
                    h @ (Head::Bytes(_) | Head::Text(_)) => {
                        self.skip_string(start, h)?;
                        None
                    }
                    Head::Array(None) | Head::Map(None) => Some(UNTIL_BREAK),
                    Head::Array(Some(l)) => Some(self.claimed(l)?),
                    Head::Map(Some(l)) => Some(self.claimed(l.saturating_mul(2))?),
                    Head::Tag(_) => Some(1),
                    Head::Break => {
                        return Err(DecodeError::MalformedCbor {
                            offset: start,
                            what: "unexpected break code",
                        })
                    }
                    Head::Uint(_) | Head::Nint(_) | Head::Simple(_) | Head::Float(_) => None,
                },
            };
            if let Some(items) = opens {
                self.check_depth(start, depth + n)?;
                if items > 0 {
                    let Some(slot) = open.get_mut(n) else {
                        return Err(DecodeError::TooDeep {
                            offset: start,
                            max: self.max_depth,
                        });
                    };
                    *slot = items;
                    n += 1;
                    continue;
                }
            }
            // One item is complete: count it against the containers it
            // completes, innermost first.
            loop {
                if n == 0 {
                    return Ok(());
                }
                let left = &mut open[n - 1];
                if *left == UNTIL_BREAK {
                    break;
                }
                *left -= 1;
                if *left > 0 {
                    break;
                }
                n -= 1;
            }
        }
    }

    /// A container's claimed item count, if the bytes left could hold that
    /// many items (each takes at least one).
    fn claimed(&self, items: u64) -> Result<u32, DecodeError> {
        match u32::try_from(items) {
            Ok(n) if items <= self.remaining() as u64 && n != u32::MAX => Ok(n),
            _ => Err(self.truncated()),
        }
    }

    /// The rest of a byte or text string whose head (at `start`) was read;
    /// an indefinite-length one's chunks must be definite strings of its
    /// own type.
    pub(crate) fn skip_string(&mut self, start: usize, head: Head) -> Result<(), DecodeError> {
        match head {
            Head::Bytes(Some(n)) => self.take(n).map(drop),
            Head::Text(Some(n)) => {
                let s = self.take(n)?;
                check_utf8(s, start)
            }
            Head::Bytes(None) | Head::Text(None) => {
                let text = matches!(head, Head::Text(_));
                loop {
                    let cstart = self.pos;
                    match self.head()? {
                        Head::Break => return Ok(()),
                        Head::Bytes(Some(n)) if !text => {
                            self.take(n)?;
                        }
                        Head::Text(Some(n)) if text => {
                            let s = self.take(n)?;
                            check_utf8(s, cstart)?;
                        }
                        _ => {
                            return Err(DecodeError::MalformedCbor {
                                offset: cstart,
                                what: "chunk of an indefinite-length string is not a definite string of the same type",
                            })
                        }
                    }
                }
            }
            _ => Err(DecodeError::MalformedCbor {
                offset: start,
                what: "not a string",
            }),
        }
    }

    #[inline]
    pub(crate) fn check_depth(&self, offset: usize, depth: usize) -> Result<(), DecodeError> {
        if depth > self.max_depth {
            Err(DecodeError::TooDeep {
                offset,
                max: self.max_depth,
            })
        } else {
            Ok(())
        }
    }

    /// Skips one item and returns the byte range it occupied.
    pub(crate) fn item_span(
        &mut self,
        depth: usize,
    ) -> Result<std::ops::Range<usize>, DecodeError> {
        let start = self.pos;
        self.skip(depth)?;
        Ok(start..self.pos)
    }
}

fn check_utf8(s: &[u8], offset: usize) -> Result<(), DecodeError> {
    // Names and keys are ASCII; the check for that is a fraction of the
    // general one on short strings.
    if s.is_ascii() {
        return Ok(());
    }
    std::str::from_utf8(s)
        .map(drop)
        .map_err(|_| DecodeError::InvalidUtf8 { offset })
}

/// IEEE 754 half precision to f64 (RFC 8949 Appendix D).
fn half_to_f64(h: u16) -> f64 {
    let exp = (h >> 10) & 0x1f;
    let mant = f64::from(h & 0x3ff);
    let val = match exp {
        0 => mant * 2f64.powi(-24),
        31 => {
            if mant == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => (mant + 1024.0) * 2f64.powi(i32::from(exp) - 25),
    };
    if h & 0x8000 != 0 {
        -val
    } else {
        val
    }
}

/// Appends a head with the shortest encoding of `arg` (what cbor2 and every
/// deterministic encoder produce).
#[inline]
pub(crate) fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let mt = major << 5;
    if arg < 24 {
        out.push(mt | arg as u8);
    } else if arg <= u64::from(u8::MAX) {
        out.extend_from_slice(&[mt | 24, arg as u8]);
    } else if arg <= u64::from(u16::MAX) {
        out.push(mt | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= u64::from(u32::MAX) {
        out.push(mt | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(mt | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

#[inline]
pub(crate) fn write_uint(out: &mut Vec<u8>, v: u64) {
    write_head(out, MAJOR_UINT, v);
}

#[inline]
pub(crate) fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_head(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

#[inline]
pub(crate) fn write_text(out: &mut Vec<u8>, s: &str) {
    write_head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[inline]
pub(crate) fn write_array(out: &mut Vec<u8>, len: usize) {
    write_head(out, MAJOR_ARRAY, len as u64);
}

/// Writes one well-formed item in CBOR diagnostic notation (RFC 8949 §8), in
/// the style of Python's cbor2 as used in the captured vectors:
/// `[1, 42, h'fd00', ["EX1", 5, 6, null]]`.
pub(crate) fn write_diag(r: &mut Reader<'_>, f: &mut dyn fmt::Write) -> fmt::Result {
    let head = match r.head() {
        Ok(h) => h,
        Err(_) => return f.write_str("<malformed>"),
    };
    match head {
        Head::Uint(n) => write!(f, "{n}"),
        Head::Nint(n) => write!(f, "{}", -1i128 - i128::from(n)),
        Head::Bytes(Some(n)) => {
            let s = r.take(n).map_err(|_| fmt::Error)?;
            f.write_str("h'")?;
            for b in s {
                write!(f, "{b:02x}")?;
            }
            f.write_char('\'')
        }
        Head::Text(Some(n)) => {
            let s = r.take(n).map_err(|_| fmt::Error)?;
            write_quoted(f, &String::from_utf8_lossy(s))
        }
        Head::Bytes(None) | Head::Text(None) => {
            f.write_str("(_ ")?;
            let mut first = true;
            while r.peek_head().map_err(|_| fmt::Error)? != Head::Break {
                if !first {
                    f.write_str(", ")?;
                }
                first = false;
                write_diag(r, f)?;
            }
            r.pos += 1;
            f.write_char(')')
        }
        Head::Array(len) => {
            f.write_char('[')?;
            if len.is_none() {
                f.write_str("_ ")?;
            }
            write_seq(r, f, len, false)?;
            f.write_char(']')
        }
        Head::Map(len) => {
            f.write_char('{')?;
            if len.is_none() {
                f.write_str("_ ")?;
            }
            write_seq(r, f, len, true)?;
            f.write_char('}')
        }
        Head::Tag(t) => {
            write!(f, "{t}(")?;
            write_diag(r, f)?;
            f.write_char(')')
        }
        Head::Simple(20) => f.write_str("false"),
        Head::Simple(21) => f.write_str("true"),
        Head::Simple(22) => f.write_str("null"),
        Head::Simple(23) => f.write_str("undefined"),
        Head::Simple(n) => write!(f, "simple({n})"),
        Head::Float(x) => {
            if x.is_nan() {
                f.write_str("NaN")
            } else if x.is_infinite() {
                f.write_str(if x > 0.0 { "Infinity" } else { "-Infinity" })
            } else {
                write!(f, "{x:?}")
            }
        }
        Head::Break => f.write_str("<break>"),
    }
}

fn write_seq(
    r: &mut Reader<'_>,
    f: &mut dyn fmt::Write,
    len: Option<u64>,
    map: bool,
) -> fmt::Result {
    let mut i = 0u64;
    loop {
        match len {
            Some(n) if i >= n => return Ok(()),
            None if r.peek_head().map_err(|_| fmt::Error)? == Head::Break => {
                r.pos += 1;
                return Ok(());
            }
            _ => {}
        }
        if i > 0 {
            f.write_str(", ")?;
        }
        write_diag(r, f)?;
        if map {
            f.write_str(": ")?;
            write_diag(r, f)?;
        }
        i += 1;
    }
}

fn write_quoted(f: &mut dyn fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_all(b: &[u8]) -> Result<usize, DecodeError> {
        let mut r = Reader::new(b, 8);
        r.skip(1)?;
        Ok(r.pos())
    }

    #[test]
    fn heads_and_lengths() {
        assert_eq!(skip_all(&[0x00]).unwrap(), 1);
        assert_eq!(skip_all(&[0x1b, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap(), 9);
        assert_eq!(skip_all(&[0x62, b'h', b'i']).unwrap(), 3);
        assert_eq!(skip_all(&[0x9f, 0x01, 0x02, 0xff]).unwrap(), 4);
        assert_eq!(skip_all(&[0x7f, 0x61, b'a', 0x61, b'b', 0xff]).unwrap(), 6);
        assert_eq!(skip_all(&[0xf9, 0x3c, 0x00]).unwrap(), 3);
    }

    #[test]
    fn claimed_lengths_do_not_outlive_input() {
        // A byte string claiming 2^64-1 bytes, an array claiming 2^64-1 items.
        let e = skip_all(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(e, DecodeError::Truncated { .. }));
        let e = skip_all(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]).unwrap_err();
        assert!(matches!(e, DecodeError::Truncated { .. }));
    }

    #[test]
    fn rejects_ill_formed() {
        for bad in [
            &[0x1c][..],               // reserved info
            &[0x1f],                   // indefinite uint
            &[0xf8, 0x10],             // two-byte simple < 32
            &[0xff],                   // lone break
            &[0x5f, 0x61, 0x61, 0xff], // text chunk in byte string
            &[0x62, 0xff, 0xfe],       // bad UTF-8
        ] {
            assert!(skip_all(bad).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn depth_limit() {
        let mut deep = vec![0x81; 9];
        deep.push(0);
        assert!(matches!(skip_all(&deep), Err(DecodeError::TooDeep { .. })));
        let mut ok = vec![0x81; 8];
        ok.push(0);
        assert!(skip_all(&ok).is_ok());
        let tags = [
            0xd8, 0x18, 0xd8, 0x18, 0xd8, 0x18, 0xd8, 0x18, 0xd8, 0x18, 0xd8, 0x18, 0xd8, 0x18,
            0xd8, 0x18, 0xd8, 0x18, 0x00,
        ];
        assert!(matches!(skip_all(&tags), Err(DecodeError::TooDeep { .. })));
    }

    #[test]
    fn containers_end_where_they_should() {
        for (ok, len) in [
            (&[0x80][..], 1),                           // []
            (&[0xa0], 1),                               // {}
            (&[0x82, 0x80, 0xa0], 3),                   // [[], {}]
            (&[0x9f, 0x9f, 0xff, 0x01, 0xff], 5),       // [_ [_ ], 1]
            (&[0xbf, 0x61, b'k', 0x9f, 0xff, 0xff], 6), // {_ "k": [_ ]}
            (&[0xc1, 0xc2, 0x82, 0x01, 0x02], 5),       // 1(2([1, 2]))
            (&[0x82, 0x81, 0x81, 0x00, 0x01], 5),       // [[[0]], 1]
            (&[0x98, 0x01, 0x5f, 0x41, 0x00, 0xff], 6), // [(_ h'00')]
            (&[0x83, 0x00, 0x80, 0x00, 0x00], 4),       // trailing byte left
        ] {
            assert_eq!(skip_all(ok).unwrap(), len, "{ok:02x?}");
        }
        for bad in [
            &[0x82, 0x00, 0xff][..], // break inside a definite array
            &[0xa1, 0x00],           // a map missing its value
            &[0x9f, 0x00],           // unterminated
            &[0xc1],                 // a tag without its item
            &[0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00], // 2^63-1 pairs
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // "until break"?
        ] {
            assert!(skip_all(bad).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn nesting_is_capped_whatever_the_limit() {
        let mut deep = vec![0x81; MAX_NESTING];
        deep.push(0);
        assert!(Reader::new(&deep, usize::MAX).skip(1).is_ok());
        let mut deeper = vec![0x81; MAX_NESTING + 1];
        deeper.push(0);
        let e = Reader::new(&deeper, usize::MAX).skip(1).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::TooDeep {
                    max: MAX_NESTING,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn shortest_heads() {
        let mut v = Vec::new();
        for (n, want) in [
            (0u64, &[0x00][..]),
            (23, &[0x17]),
            (24, &[0x18, 0x18]),
            (255, &[0x18, 0xff]),
            (256, &[0x19, 0x01, 0x00]),
            (65536, &[0x1a, 0, 1, 0, 0]),
            (1 << 32, &[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            v.clear();
            write_uint(&mut v, n);
            assert_eq!(v, want);
        }
    }

    #[test]
    fn half_floats() {
        assert_eq!(half_to_f64(0x3c00), 1.0);
        assert_eq!(half_to_f64(0xc000), -2.0);
        assert_eq!(half_to_f64(0x0001), 5.960464477539063e-8);
        assert!(half_to_f64(0x7e00).is_nan());
        assert_eq!(half_to_f64(0x7c00), f64::INFINITY);
    }
}
