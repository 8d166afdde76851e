//! The sealed record: a [`grasp_engine::wire::envelope`] (the exact layout is in the
//! crate docs), version 1.

pub(crate) use grasp_engine::wire::envelope::{
    push_bytes, push_bytes_head, push_uint, Item, Parsed,
};

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

/// Starts a record of `n` items.
pub(crate) fn start(n: u64, kind: u64, capacity: usize) -> Vec<u8> {
    grasp_engine::wire::envelope::start(n, VERSION, kind, capacity)
}

/// Parses a whole record.
pub(crate) fn parse(b: &[u8]) -> Result<Parsed<'_>, DropReason> {
    grasp_engine::wire::envelope::parse(b, VERSION).map_err(|e| match e {
        grasp_engine::wire::envelope::EnvelopeError::Truncated => DropReason::Truncated,
        grasp_engine::wire::envelope::EnvelopeError::UnknownVersion => DropReason::UnknownVersion,
        _ => DropReason::Malformed,
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
        assert_eq!(p.last, b"ciphertext-and-tag");
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
