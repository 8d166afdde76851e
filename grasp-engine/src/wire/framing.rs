//! Splitting a byte stream (TCP, TLS) into GRASP messages.
//!
//! GRASP has no length prefix on streams: each message is one self-delimiting
//! CBOR item (RFC 8990 §2.8.2). [`StreamDecoder`] finds where the first
//! complete item in a buffer ends, so several messages in one read and one
//! message spread over many reads both work.

use bytes::{Bytes, BytesMut};

use super::cbor::Reader;
use super::{DecodeError, Limits};

/// Incremental splitter of a byte stream into whole messages.
///
/// It only frames: each returned buffer is exactly one well-formed CBOR item
/// of at most `max_message_size` bytes, still to be parsed with
/// [`Message::decode_with`](super::Message::decode_with). An item that would
/// exceed the limit is reported as soon as that many bytes are buffered,
/// without waiting for the rest. After an error the stream cannot be
/// resynchronised and the connection should be closed.
///
/// Each call rescans the buffered prefix, at most `max_message_size` bytes, so
/// even a peer that trickles one byte per segment costs bounded work per byte.
///
/// ```
/// use bytes::BytesMut;
/// use grasp_engine::wire::{Limits, StreamDecoder};
///
/// let mut dec = StreamDecoder::new(Limits::default());
/// let mut buf = BytesMut::from(&[0x81, 0x00, 0x83][..]); // [0] and the start of another
/// assert_eq!(&dec.decode(&mut buf).unwrap().unwrap()[..], &[0x81, 0x00]);
/// assert_eq!(dec.decode(&mut buf).unwrap(), None);
/// buf.extend_from_slice(&[0x07, 0x01, 0x00]);
/// assert_eq!(&dec.decode(&mut buf).unwrap().unwrap()[..], &[0x83, 0x07, 0x01, 0x00]);
/// ```
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    limits: Limits,
}

impl StreamDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        StreamDecoder { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The length of the first complete message at the front of `buf`, or
    /// `Ok(None)` if more bytes are needed (an item that cannot fit in
    /// `max_message_size` is an error as soon as that many bytes are there).
    pub fn item_len(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let max = self.limits.max_message_size;
        let window = &buf[..buf.len().min(max)];
        let mut r = Reader::new(window, self.limits.max_depth);
        match r.skip(1) {
            Ok(()) => Ok(Some(r.pos())),
            Err(DecodeError::Truncated { .. }) if buf.len() >= max => Err(DecodeError::TooLarge {
                len: buf.len(),
                max,
            }),
            Err(DecodeError::Truncated { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Splits the first complete message off the front of `buf`, or returns
    /// `Ok(None)` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        Ok(self.item_len(buf)?.map(|n| buf.split_to(n).freeze()))
    }

    /// At end of stream: `Ok(())` if nothing is left over, otherwise the error
    /// for the partial message the peer left behind.
    pub fn decode_eof(&mut self, buf: &BytesMut) -> Result<(), DecodeError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Truncated { offset: buf.len() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_in_one_read_and_one_over_many() {
        let a = [0x83, 0x07, 0x1a, 0x01, 0x02, 0x03, 0x04, 0x19, 0x07, 0xd0];
        let b = [0x81, 0x00];
        let mut stream = Vec::new();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&b);
        stream.extend_from_slice(&a);
        let mut dec = StreamDecoder::new(Limits::default());
        // All at once.
        let mut buf = BytesMut::from(&stream[..]);
        let mut got = Vec::new();
        while let Some(m) = dec.decode(&mut buf).unwrap() {
            got.push(m);
        }
        assert_eq!(got.len(), 3);
        assert!(buf.is_empty());
        // One byte at a time.
        let mut buf = BytesMut::new();
        let mut got2 = Vec::new();
        for byte in &stream {
            buf.extend_from_slice(&[*byte]);
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got2.push(m);
            }
        }
        assert_eq!(got, got2);
        assert!(dec.decode_eof(&buf).is_ok());
    }

    #[test]
    fn oversize_is_reported_early() {
        let mut dec = StreamDecoder::new(Limits {
            max_message_size: 8,
            ..Limits::default()
        });
        // A byte string claiming 1000 bytes: reported once 8 bytes are buffered.
        let mut buf = BytesMut::from(&[0x59, 0x03, 0xe8, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[0, 0]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(DecodeError::TooLarge { max: 8, .. })
        ));
    }

    #[test]
    fn malformed_is_an_error_and_partial_eof_too() {
        let mut dec = StreamDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&[0xff][..]);
        assert!(dec.decode(&mut buf).is_err());
        let buf = BytesMut::from(&[0x83][..]);
        assert!(dec.decode_eof(&buf).is_err());
    }
}
