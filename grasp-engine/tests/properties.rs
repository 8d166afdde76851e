//! Property tests of the codec: generated messages of every type round-trip,
//! and arbitrary bytes never panic the decoder or the stream splitter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};
use grasp_engine::wire::{
    Discovery, End, EndOption, Flood, Invalid, Limits, Locator, Message, Objective, ObjectiveFlags,
    Protocol, Response, ResponseTarget, SessionId, SessionObjective, StreamDecoder,
    TaggedObjective, UnknownMessage, Value, Wait,
};
use proptest::prelude::*;

fn cbor_tree() -> impl Strategy<Value = ciborium::Value> {
    use ciborium::Value as C;
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| C::Integer(i.into())),
        any::<u64>().prop_map(|i| C::Integer(i.into())),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(C::Bytes),
        ".{0,12}".prop_map(C::Text),
        any::<bool>().prop_map(C::Bool),
        Just(C::Null),
        any::<f64>()
            .prop_filter("NaN compares unequal", |f| !f.is_nan())
            .prop_map(C::Float),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(C::Array),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(C::Map),
            (0u64..100_000, inner).prop_map(|(t, v)| C::Tag(t, Box::new(v))),
        ]
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        cbor_tree().prop_map(|c| Value::from_ciborium(&c).unwrap()),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| {
            // Raw CBOR wrapped in tag 24, as graspy does for bytes values.
            Value::embed(
                Value::from_serialize(&serde_bytes_like(b))
                    .unwrap()
                    .as_cbor(),
            )
        }),
    ]
}

fn serde_bytes_like(b: Vec<u8>) -> ciborium::Value {
    ciborium::Value::Bytes(b)
}

fn objective() -> impl Strategy<Value = Objective> {
    (
        "[A-Za-z0-9.:_-]{1,16}",
        any::<u64>(),
        any::<u8>(),
        proptest::option::of(value()),
    )
        .prop_map(|(name, flags, loop_count, value)| Objective {
            name,
            flags: ObjectiveFlags::from_bits(flags),
            loop_count,
            value,
        })
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
    ]
}

fn locator() -> impl Strategy<Value = Locator> {
    prop_oneof![
        (any::<[u8; 16]>(), any::<u16>(), any::<u16>()).prop_map(|(a, p, port)| Locator::Ipv6 {
            addr: a.into(),
            protocol: Protocol(p),
            port
        }),
        (any::<[u8; 4]>(), any::<u16>(), any::<u16>()).prop_map(|(a, p, port)| Locator::Ipv4 {
            addr: a.into(),
            protocol: Protocol(p),
            port
        }),
        ("[a-z.]{1,20}", any::<u16>(), any::<u16>()).prop_map(|(name, p, port)| Locator::Fqdn {
            name,
            protocol: Protocol(p),
            port
        }),
        (
            "[a-z]{1,8}://[a-z./]{0,20}",
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u16>())
        )
            .prop_map(|(uri, p, port)| Locator::Uri {
                uri,
                protocol: p.map(Protocol),
                port
            }),
    ]
}

/// Extensions: unknown options (arrays starting with a code >= 107).
fn extensions() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(
        (107u64..=255, any::<u32>())
            .prop_map(|(code, x)| Value::from_serialize(&(code, x)).unwrap()),
        0..2,
    )
}

fn sid() -> impl Strategy<Value = SessionId> {
    any::<u32>().prop_map(SessionId)
}

fn session_objective() -> impl Strategy<Value = SessionObjective> {
    (sid(), objective(), extensions()).prop_map(|(session_id, objective, extensions)| {
        SessionObjective {
            session_id,
            objective,
            extensions,
        }
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::Noop),
        (sid(), addr(), objective(), extensions()).prop_map(
            |(session_id, initiator, objective, extensions)| {
                Message::Discovery(Discovery {
                    session_id,
                    initiator,
                    objective,
                    extensions,
                })
            }
        ),
        (
            sid(),
            addr(),
            any::<u32>(),
            prop_oneof![
                proptest::collection::vec(locator(), 1..4).prop_map(ResponseTarget::Locators),
                proptest::collection::vec(locator(), 1..4).prop_map(ResponseTarget::Divert),
            ],
            proptest::option::of(objective()),
            extensions()
        )
            .prop_map(
                |(session_id, initiator, ttl_ms, target, objective, extensions)| {
                    Message::Response(Response {
                        session_id,
                        initiator,
                        ttl_ms,
                        target,
                        objective,
                        extensions,
                    })
                }
            ),
        session_objective().prop_map(Message::ReqNeg),
        session_objective().prop_map(Message::ReqSyn),
        session_objective().prop_map(Message::Negotiate),
        session_objective().prop_map(Message::Synch),
        (
            sid(),
            prop_oneof![
                Just(EndOption::Accept),
                proptest::option::of(".{0,20}").prop_map(|reason| EndOption::Decline { reason }),
                (107u64..=255)
                    .prop_map(|c| EndOption::Unknown(Value::from_serialize(&[c]).unwrap())),
            ],
            extensions()
        )
            .prop_map(|(session_id, option, extensions)| Message::End(End {
                session_id,
                option,
                extensions
            })),
        (sid(), any::<u32>(), extensions()).prop_map(
            |(session_id, waiting_time_ms, extensions)| {
                Message::Wait(Wait {
                    session_id,
                    waiting_time_ms,
                    extensions,
                })
            }
        ),
        (
            sid(),
            addr(),
            any::<u32>(),
            proptest::collection::vec(
                (objective(), proptest::option::of(locator()))
                    .prop_map(|(objective, locator)| TaggedObjective { objective, locator }),
                1..4
            ),
            extensions()
        )
            .prop_map(|(session_id, initiator, ttl_ms, tagged, extensions)| {
                Message::Flood(Flood {
                    session_id,
                    initiator,
                    ttl_ms,
                    tagged,
                    extensions,
                })
            }),
        (
            sid(),
            proptest::option::of(value()),
            proptest::collection::vec(value(), 0..2)
        )
            .prop_map(|(session_id, content, extensions)| {
                // A trailing element only exists after a content element.
                let extensions = if content.is_some() {
                    extensions
                } else {
                    vec![]
                };
                Message::Invalid(Invalid {
                    session_id,
                    content,
                    extensions,
                })
            }),
        (
            prop_oneof![10u8..=98, 100u8..=255],
            proptest::collection::vec(value(), 0..4)
        )
            .prop_map(|(msg_type, elements)| Message::Unknown(UnknownMessage {
                msg_type,
                elements
            })),
    ]
}

fn big_limits() -> Limits {
    Limits {
        max_message_size: 1 << 20,
        ..Limits::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip(msg in message()) {
        let bytes = msg.encode();
        let back = Message::decode_with(&bytes, &big_limits()).unwrap();
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn stream_splits_concatenated_messages(msgs in proptest::collection::vec(message(), 1..6), cut in any::<prop::sample::Index>()) {
        let mut stream = Vec::new();
        for m in &msgs { m.encode_into(&mut stream); }
        let mut dec = StreamDecoder::new(big_limits());
        let split = cut.index(stream.len() + 1);
        let mut buf = BytesMut::from(&stream[..split]);
        let mut got = Vec::new();
        while let Some(m) = dec.decode(&mut buf).unwrap() { got.push(m); }
        buf.extend_from_slice(&stream[split..]);
        while let Some(m) = dec.decode(&mut buf).unwrap() { got.push(m); }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), msgs.len());
        for (raw, m) in got.iter().zip(&msgs) {
            prop_assert_eq!(&Message::decode_with(raw, &big_limits()).unwrap(), m);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let b = Bytes::from(data);
        let _ = Message::decode(&b);
        let _ = Value::from_cbor(b.clone());
        let mut dec = StreamDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&b[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }

    #[test]
    fn mutated_messages_never_panic(msg in message(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut raw = msg.encode().to_vec();
        let i = pos.index(raw.len());
        raw[i] = byte;
        let b = Bytes::from(raw);
        if let Ok(m) = Message::decode(&b) {
            // Whatever decodes re-encodes to something that decodes the same.
            let again = Message::decode_with(&m.encode(), &big_limits()).unwrap();
            prop_assert_eq!(again, m);
        }
    }
}
