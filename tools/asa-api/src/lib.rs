//! The GRASP ASA protocol: how ASAs in other processes use graspd's GRASP
//! core (RFC 8991 §2.1). This crate holds its wire layer, shared by the
//! daemon and the clients: [`frames`] puts a connected socket ([`Socket`])
//! under [`codec`], which cuts the byte stream into frames (a
//! 4-byte big-endian length, then one CBOR item) and refuses oversized ones
//! from their length alone; [`Frame`] is the envelope, requests
//! `[0, id, method, params]`, responses `[1, id, err, result]`, events
//! `[2, subscription, kind, data]` and cancels `[3, id]`.
//!
//! The protocol itself (methods, parameters, results, lifecycle) is
//! `asa-protocol.cddl` beside this crate, version [`VERSION`]. [`request`]
//! is every method's params as one type, [`form`] how the engine's types
//! travel (both sides use them, so they cannot disagree; the golden
//! transcript in `tests/` holds them to the CDDL), and [`client`] is the
//! Rust client: it gives a
//! [`grasp_engine::Grasp`] backed by graspd, so an ASA written for the
//! engine in its own process runs against graspd's core unchanged.
#![warn(missing_docs)]

use bytes::Bytes;
use ciborium::Value;
use grasp_engine::{ApiError, ErrorCode};

pub mod client;
pub mod form;
pub mod request;
mod socket;

pub use socket::Socket;

/// The protocol version this crate speaks.
pub const VERSION: u64 = 1;

/// The largest frame either side accepts until `hello` agrees on another.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// How deep a frame's CBOR may nest (the envelope, params, and a few levels
/// of structure; objective values travel as byte strings and do not count).
pub const MAX_DEPTH: usize = 32;

/// A frame codec for a Unix stream: a 4-byte big-endian length, then that
/// many bytes; a frame whose length is over `max_frame` is an error from
/// its length alone, before its bytes are read (tokio-util's length codec
/// does exactly this framing, so it is not written here again).
pub fn codec(max_frame: usize) -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec()
}

/// A connected ASA socket (either end) as a stream and sink of frames of
/// at most `max_frame` bytes.
pub fn frames(
    stream: tokio::net::UnixStream,
    max_frame: usize,
) -> std::io::Result<tokio_util::codec::Framed<Socket, tokio_util::codec::LengthDelimitedCodec>> {
    Ok(tokio_util::codec::Framed::new(
        Socket::new(stream)?,
        codec(max_frame),
    ))
}

/// One frame of the protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Client to daemon: call `method`. `id` is the client's, unique among
    /// its outstanding requests.
    Request {
        /// The client's request id.
        id: u64,
        /// The method, e.g. `"hello"`, `"discover"`.
        method: String,
        /// The parameters, a map with text keys, in the order sent.
        params: Vec<(String, Value)>,
    },
    /// Daemon to client: the answer to request `id`.
    Response {
        /// The request answered.
        id: u64,
        /// The error, or `None` on success.
        err: Option<WireError>,
        /// The result (null on error).
        result: Value,
    },
    /// Daemon to client, unasked.
    Event {
        /// The request that created the subscription, or 0 for the
        /// connection as a whole.
        subscription: u64,
        /// What happened, e.g. `"negotiation"`, `"flood"`, `"closing"`.
        kind: String,
        /// Its data.
        data: Value,
    },
    /// Client to daemon: give up request `id`.
    Cancel {
        /// The request to cancel.
        id: u64,
    },
}

/// An error as it travels: RFC 8991's code (or one of the protocol's own,
/// [`ErrorCode::BadRequest`] and the others from 100), its name, and a
/// detail for people. An [`ApiError`] on either side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// The numeric code.
    pub code: u64,
    /// Its short name, e.g. `noListener` or `badRequest`.
    pub name: String,
    /// What happened, for people (never keys or exchanged values).
    pub detail: String,
}

impl WireError {
    /// Its CBOR form, `[code, name, detail]` (a response's `err`, a
    /// `closing` event's data).
    pub fn value(&self) -> Value {
        Value::Array(vec![
            form::uint(self.code),
            Value::Text(self.name.clone()),
            Value::Text(self.detail.clone()),
        ])
    }
}

impl From<&ApiError> for WireError {
    fn from(e: &ApiError) -> Self {
        WireError {
            code: u64::from(e.code.code()),
            name: e.code.name().to_string(),
            detail: e.detail.clone(),
        }
    }
}

impl From<WireError> for ApiError {
    /// A code this build does not know (a newer daemon's) becomes `unspec`,
    /// its name and number kept in the detail.
    fn from(e: WireError) -> Self {
        match u32::try_from(e.code).ok().and_then(ErrorCode::from_code) {
            Some(code) => ApiError::new(code, e.detail),
            None => ApiError::new(
                ErrorCode::Unspec,
                format!("{} ({}): {}", e.name, e.code, e.detail),
            ),
        }
    }
}

/// Why a frame's bytes are not a [`Frame`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not one well-formed CBOR item (or nested deeper than [`MAX_DEPTH`]).
    #[error("the frame is not one well-formed CBOR item: {0}")]
    NotCbor(String),
    /// Bytes after the item.
    #[error("the frame has {0} bytes after its CBOR item; a frame holds exactly one")]
    Trailing(usize),
    /// Well-formed CBOR, but not a frame of the protocol. `id` is the
    /// request id when it could be read, so the daemon can answer it
    /// (badRequest) instead of closing the connection.
    #[error("not a frame of the ASA protocol: {why}")]
    NotAFrame {
        /// The request's id, if it could be read.
        id: Option<u64>,
        /// What is wrong.
        why: String,
    },
}

impl Frame {
    /// The frame's CBOR item (without its length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        // Writing into a Vec cannot fail.
        let _ = ciborium::ser::into_writer(&Item(self), &mut out);
        out
    }

    /// Reads a frame's CBOR item (without its length prefix).
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let mut rest = bytes;
        let item: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)
            .map_err(|e| FrameError::NotCbor(e.to_string()))?;
        if !rest.is_empty() {
            return Err(FrameError::Trailing(rest.len()));
        }
        let Value::Array(items) = item else {
            return Err(not_a_frame(None, "a frame is an array"));
        };
        let kind = items.first().and_then(form::as_u64);
        let id = items.get(1).and_then(form::as_u64);
        let bad = |why: &str| Err(not_a_frame(id.filter(|_| kind == Some(0)), why));
        let mut it = items.into_iter();
        let (_, second) = (it.next(), it.next());
        let Some(second) = second.as_ref().and_then(form::as_u64) else {
            return bad("its second item is an id (an unsigned integer)");
        };
        match (kind, it.len()) {
            (Some(0), 2) => {
                let (Some(Value::Text(method)), Some(Value::Map(map))) = (it.next(), it.next())
                else {
                    return bad("a request is [0, id, method (text), params (map)]");
                };
                let mut params = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let Value::Text(k) = k else {
                        return bad("params have text keys");
                    };
                    params.push((k, v));
                }
                Ok(Frame::Request {
                    id: second,
                    method,
                    params,
                })
            }
            (Some(1), 2) => {
                let (err, result) = (it.next(), it.next());
                let err = match err {
                    Some(Value::Null) => None,
                    Some(Value::Array(e)) => match e.as_slice() {
                        [c, Value::Text(name), Value::Text(detail)] => match form::as_u64(c) {
                            Some(code) => Some(WireError {
                                code,
                                name: name.clone(),
                                detail: detail.clone(),
                            }),
                            None => return bad("an error's code is an unsigned integer"),
                        },
                        _ => return bad("an error is [code, name, detail]"),
                    },
                    _ => return bad("a response's error is null or [code, name, detail]"),
                };
                Ok(Frame::Response {
                    id: second,
                    err,
                    result: result.unwrap_or(Value::Null),
                })
            }
            (Some(2), 2) => {
                let (Some(Value::Text(kind)), Some(data)) = (it.next(), it.next()) else {
                    return bad("an event is [2, subscription, kind (text), data]");
                };
                Ok(Frame::Event {
                    subscription: second,
                    kind,
                    data,
                })
            }
            (Some(3), 0) => Ok(Frame::Cancel { id: second }),
            _ => bad("a frame is [0, ...] (request), [1, ...] (response), [2, ...] (event) or [3, id] (cancel), with 4, 4, 4 or 2 items"),
        }
    }
}

/// A frame as its CBOR item, serialized from the frame's own parts: no
/// `Value` of the whole is built and nothing is copied (a frame's bytes are
/// the same as those of the `Value` it reads back as).
struct Item<'a>(&'a Frame);

impl serde::Serialize for Item<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Frame::Request { id, method, params } => {
                (0u64, id, method, Params(params)).serialize(s)
            }
            Frame::Response { id, err, result } => (1u64, id, WireErr(err), result).serialize(s),
            Frame::Event {
                subscription,
                kind,
                data,
            } => (2u64, subscription, kind, data).serialize(s),
            Frame::Cancel { id } => (3u64, id).serialize(s),
        }
    }
}

/// A request's params: a map with text keys, in their order.
struct Params<'a>(&'a [(String, Value)]);

impl serde::Serialize for Params<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k.as_str(), v)?;
        }
        m.end()
    }
}

/// A response's error: null, or `[code, name, detail]`.
struct WireErr<'a>(&'a Option<WireError>);

impl serde::Serialize for WireErr<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_unit(),
            Some(e) => (e.code, e.name.as_str(), e.detail.as_str()).serialize(s),
        }
    }
}

/// The optional parts of the protocol this build has (`hello`'s
/// "features"; the answer lists those both sides have).
pub const FEATURES: [&str; 4] = [
    "streamed-discover",
    "flood-subscriptions",
    "raw-channel",
    "dump",
];

/// Writes what `rx` brings to `sink`, each item as the frame `encode`
/// makes of it (`None`: nothing to send), until either ends. Whatever is
/// queued goes out together with one flush (one write when the socket
/// takes it), so a busy connection costs fewer system calls per frame.
pub async fn write_frames<S, T>(
    mut sink: S,
    mut rx: tokio::sync::mpsc::Receiver<T>,
    mut encode: impl FnMut(T) -> Option<Bytes>,
) where
    S: futures::Sink<Bytes, Error = std::io::Error> + Unpin,
{
    use futures::SinkExt;
    // At most this many frames per flush, so one flush stays bounded.
    const BATCH: usize = 64;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(item) = next.take() {
            if let Some(b) = encode(item) {
                if sink.feed(b).await.is_err() {
                    return;
                }
            }
            n += 1;
            if n < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

fn not_a_frame(id: Option<u64>, why: &str) -> FrameError {
    FrameError::NotAFrame {
        id,
        why: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};

    fn hello() -> Frame {
        Frame::Request {
            id: 1,
            method: "hello".into(),
            params: vec![(
                "versions".into(),
                Value::Array(vec![Value::Integer(1.into())]),
            )],
        }
    }

    /// The spec's hello, byte for byte: [0, 1, "hello", {"versions": [1]}].
    #[test]
    fn a_hello_request_is_these_bytes() {
        let golden = "8400016568656c6c6fa16876657273696f6e738101";
        assert_eq!(hex::encode(hello().encode()), golden);
        assert_eq!(Frame::decode(&hex::decode(golden).unwrap()), Ok(hello()));
    }

    #[test]
    fn every_kind_of_frame_round_trips() {
        let frames = [
            hello(),
            Frame::Response {
                id: 7,
                err: Some(WireError::from(&ApiError::new(
                    ErrorCode::NotAuthorized,
                    "uid 1000 may not own EX.x",
                ))),
                result: Value::Null,
            },
            Frame::Response {
                id: 8,
                err: None,
                result: Value::Bytes(vec![0x84, 0x61, 0x78, 5, 6, 1]),
            },
            Frame::Event {
                subscription: 9,
                kind: "flood".into(),
                data: Value::Map(Vec::new()),
            },
            Frame::Cancel { id: 10 },
        ];
        for f in frames {
            assert_eq!(Frame::decode(&f.encode()), Ok(f.clone()), "{f:?}");
        }
        assert_eq!(hex::encode(Frame::Cancel { id: 10 }.encode()), "82030a");
    }

    #[test]
    fn what_is_not_a_frame_says_why_and_keeps_a_request_id() {
        let cases: [(&str, Option<u64>); 7] = [
            ("83000565", None),                // truncated CBOR
            ("01", None),                      // not an array
            ("8400056568656c6c6f01", Some(5)), // params not a map
            ("84000501a0", Some(5)),           // method not text
            ("8409056568656c6c6fa0", None),    // unknown kind
            ("830005a0", Some(5)),             // too few items
            ("82030a00", None),                // trailing byte
        ];
        for (hex_in, id) in cases {
            match Frame::decode(&hex::decode(hex_in).unwrap()) {
                Err(FrameError::NotAFrame { id: got, .. }) => assert_eq!(got, id, "{hex_in}"),
                Err(FrameError::NotCbor(_) | FrameError::Trailing(_)) => {
                    assert_eq!(id, None, "{hex_in}")
                }
                Ok(f) => panic!("{hex_in} decoded as {f:?}"),
            }
        }
        // Deeper than MAX_DEPTH: refused, not a stack overflow.
        let deep = vec![0x81u8; 10_000];
        assert!(matches!(Frame::decode(&deep), Err(FrameError::NotCbor(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(i as u32 * 7) & 0xff) as u8)
                .collect();
            let _ = Frame::decode(&bytes);
        }
    }

    /// Over a byte stream: length-prefixed frames, and an oversized length
    /// is an error before its bytes arrive.
    #[tokio::test]
    async fn frames_over_a_stream_and_an_oversized_one() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut tx = tokio_util::codec::Framed::new(a, codec(DEFAULT_MAX_FRAME));
        let mut rx = tokio_util::codec::Framed::new(b, codec(DEFAULT_MAX_FRAME));
        tx.send(bytes::Bytes::from(hello().encode())).await.unwrap();
        let got = rx.next().await.unwrap().unwrap();
        assert_eq!(&got[..], &hello().encode()[..]);
        assert_eq!(Frame::decode(&got), Ok(hello()));
        // A length of 64 KiB + 1 and no body: refused at once.
        use tokio::io::AsyncWriteExt;
        let mut raw = tx.into_inner();
        raw.write_all(&((DEFAULT_MAX_FRAME as u32 + 1).to_be_bytes()))
            .await
            .unwrap();
        assert!(rx.next().await.unwrap().is_err());
    }
}
