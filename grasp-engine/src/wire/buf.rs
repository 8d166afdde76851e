//! Small message buffers that cost one allocation, however they are shared.
//!
//! A `Bytes` copied from a slice or made from a `Vec` allocates its shared
//! header on its first clone (the engine slices a received message for its
//! values; the driver keeps a sent one until it is flushed): two
//! allocations per message. [`share`] puts a small message and its
//! reference count in one allocation with `Bytes::from_owner`.

use bytes::Bytes;

/// Messages up to this size are stored inline with their reference count;
/// nearly every GRASP message is smaller.
const INLINE: usize = 120;

/// A copy of `buf` as a `Bytes`: one allocation, clones included, when
/// `buf` is short; otherwise a plain copy.
pub fn share(buf: &[u8]) -> Bytes {
    if buf.len() > INLINE {
        return Bytes::copy_from_slice(buf);
    }
    let mut s = Inline {
        len: buf.len() as u8,
        data: [0; INLINE],
    };
    s.data[..buf.len()].copy_from_slice(buf);
    Bytes::from_owner(s)
}

struct Inline {
    len: u8,
    data: [u8; INLINE],
}

impl AsRef<[u8]> for Inline {
    fn as_ref(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_short_and_long_alike() {
        for n in [0, 1, 23, INLINE, INLINE + 1, 4000] {
            let src: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let b = share(&src);
            assert_eq!(&b[..], &src[..]);
            let c = b.slice(n / 2..);
            drop(b);
            assert_eq!(&c[..], &src[n / 2..]);
        }
    }
}
