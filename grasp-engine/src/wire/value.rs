//! Objective values: arbitrary CBOR, carried verbatim.

use std::fmt;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use super::cbor::{self, Head, Reader};
use super::{DecodeError, Limits};

/// CBOR tag 24: "encoded CBOR data item" (RFC 8949 §3.4.5.1), which RFC 8991
/// §2.3.2.4 uses to carry a raw CBOR value inside an objective.
pub const TAG_ENCODED_CBOR: u64 = 24;

/// One well-formed CBOR data item, kept as its exact encoded bytes.
///
/// GRASP never interprets objective values (RFC 8990 §2.10), so the codec
/// keeps them as they came: a value decoded from the wire re-encodes to the
/// same bytes, tags included (tag 24 embedded CBOR among them), and decoding a
/// message does not build a tree. Use [`Value::from_serialize`] and
/// [`Value::deserialize`] to move between values and Rust types, or
/// [`Value::to_ciborium`] for a generic tree.
///
/// Cloning is cheap: the bytes are reference counted and usually share the
/// buffer of the message they were decoded from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Value(Bytes);

/// An error converting between a [`Value`] and a Rust type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The Rust value could not be represented in CBOR.
    #[error("cannot encode the value as CBOR: {0}")]
    Encode(String),
    /// The CBOR value does not have the shape of the requested Rust type.
    #[error("the CBOR value does not match the requested type: {0}")]
    Decode(String),
    /// The bytes are not exactly one well-formed CBOR item.
    #[error("not a single well-formed CBOR item: {0}")]
    Malformed(#[from] DecodeError),
}

impl Value {
    /// CBOR `null`.
    pub fn null() -> Value {
        Value(Bytes::from_static(&[cbor::NULL]))
    }

    /// Takes encoded CBOR, checking that it is exactly one well-formed item
    /// within the default nesting limit.
    pub fn from_cbor(bytes: impl Into<Bytes>) -> Result<Value, DecodeError> {
        Self::from_cbor_with(bytes.into(), &Limits::default())
    }

    /// As [`from_cbor`](Self::from_cbor) with explicit limits.
    pub fn from_cbor_with(bytes: Bytes, limits: &Limits) -> Result<Value, DecodeError> {
        let mut r = Reader::new(&bytes, limits.max_depth);
        r.skip(1)?;
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                offset: r.pos(),
                extra: r.remaining(),
            });
        }
        Ok(Value(bytes))
    }

    /// Wraps bytes known to be one well-formed item. Crate-internal: callers
    /// have already validated the span with the reader.
    pub(crate) fn from_validated(bytes: Bytes) -> Value {
        Value(bytes)
    }

    /// Encodes a Rust value (anything `serde::Serialize`) as CBOR.
    pub fn from_serialize<T: Serialize + ?Sized>(v: &T) -> Result<Value, ValueError> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).map_err(|e| ValueError::Encode(e.to_string()))?;
        Ok(Value::from_cbor(out)?)
    }

    /// Decodes this value into a Rust type.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ValueError> {
        ciborium::from_reader(&self.0[..]).map_err(|e| ValueError::Decode(e.to_string()))
    }

    /// Converts to a `ciborium` value tree.
    pub fn to_ciborium(&self) -> Result<ciborium::Value, ValueError> {
        self.deserialize()
    }

    /// Converts from a `ciborium` value tree.
    pub fn from_ciborium(v: &ciborium::Value) -> Result<Value, ValueError> {
        Self::from_serialize(v)
    }

    /// Wraps raw CBOR in tag 24 (RFC 8991 §2.3.2.4: an ASA may hand GRASP a
    /// raw CBOR item as the value; it travels as an embedded CBOR data item).
    /// This is what graspy sends for a `bytes` value that parses as CBOR.
    pub fn embed(cbor: &[u8]) -> Value {
        let mut out = Vec::with_capacity(cbor.len() + 11);
        cbor::write_head(&mut out, cbor::MAJOR_TAG, TAG_ENCODED_CBOR);
        cbor::write_bytes(&mut out, cbor);
        Value(out.into())
    }

    /// If this value is tag 24 around a byte string, the embedded bytes.
    pub fn embedded(&self) -> Option<&[u8]> {
        let mut r = Reader::new(&self.0, 2);
        match r.head() {
            Ok(Head::Tag(TAG_ENCODED_CBOR)) => {}
            _ => return None,
        }
        match r.head() {
            Ok(Head::Bytes(Some(n))) => r.take(n).ok(),
            _ => None,
        }
    }

    /// The encoded bytes.
    pub fn as_cbor(&self) -> &[u8] {
        &self.0
    }

    /// The encoded bytes, shared.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Whether this is CBOR `null`.
    pub fn is_null(&self) -> bool {
        self.0[..] == [cbor::NULL]
    }

    /// The value as an unsigned integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match Reader::new(&self.0, 1).head() {
            Ok(Head::Uint(n)) => Some(n),
            _ => None,
        }
    }

    /// The value as text, if it is a definite-length text string.
    pub fn as_str(&self) -> Option<&str> {
        let mut r = Reader::new(&self.0, 1);
        match r.head() {
            Ok(Head::Text(Some(n))) => r.take(n).ok().and_then(|s| std::str::from_utf8(s).ok()),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// CBOR diagnostic notation, e.g. `["NZD", 150]` or `24(h'8201')`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        cbor::write_diag(&mut Reader::new(&self.0, usize::MAX), f)
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({self})")
    }
}

macro_rules! from_prim {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                // Serializing a primitive cannot fail.
                let mut out = Vec::with_capacity(9);
                match ciborium::into_writer(&v, &mut out) {
                    Ok(()) => Value(out.into()),
                    Err(_) => Value::null(),
                }
            }
        }
    )*};
}
from_prim!(u8, u16, u32, u64, i8, i16, i32, i64, bool, &str, String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_round_trip() {
        let inner = [0x82, 0x63, b'N', b'Z', b'D', 0x18, 0x64];
        let v = Value::embed(&inner);
        assert_eq!(
            v.as_cbor(),
            hex::decode("d81847826 34e5a441864".replace(' ', "")).unwrap()
        );
        assert_eq!(v.embedded(), Some(&inner[..]));
        assert_eq!(v.to_string(), "24(h'82634e5a441864')");
        assert_eq!(Value::from(5u8).embedded(), None);
    }

    #[test]
    fn serde_round_trip() {
        let v = Value::from_serialize(&("NZD", 150u32)).unwrap();
        assert_eq!(v.to_string(), "[\"NZD\", 150]");
        let back: (String, u32) = v.deserialize().unwrap();
        assert_eq!(back, ("NZD".to_string(), 150));
        assert!(Value::null().is_null());
        assert_eq!(Value::from("x").as_str(), Some("x"));
        assert_eq!(Value::from(7u64).as_u64(), Some(7));
    }

    #[test]
    fn rejects_trailing_and_malformed() {
        assert!(matches!(
            Value::from_cbor(vec![0x01, 0x02]),
            Err(DecodeError::TrailingBytes { .. })
        ));
        assert!(Value::from_cbor(vec![0x82, 0x01]).is_err());
        assert!(Value::from_cbor(Vec::new()).is_err());
    }
}
