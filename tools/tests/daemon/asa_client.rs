//! A minimal client of graspd's ASA socket for the tests: frames out,
//! frames in, `call` for one answer.

use bytes::Bytes;
use ciborium::Value;
use futures::{SinkExt, StreamExt};
use grasp_asa_api::Frame;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

const T: Duration = Duration::from_secs(5);

pub(crate) struct Client {
    pub(crate) io: Framed<UnixStream, tokio_util::codec::LengthDelimitedCodec>,
    next: u64,
}

impl Client {
    pub(crate) fn new(s: UnixStream) -> Client {
        Client {
            io: Framed::new(s, grasp_asa_api::codec(grasp_asa_api::DEFAULT_MAX_FRAME)),
            next: 1,
        }
    }

    pub(crate) async fn send(&mut self, method: &str, params: Vec<(&str, Value)>) -> u64 {
        let id = self.next;
        self.next += 1;
        let f = Frame::Request {
            id,
            method: method.into(),
            params: params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        self.io.send(Bytes::from(f.encode())).await.unwrap();
        id
    }

    pub(crate) async fn frame(&mut self) -> Frame {
        let raw = tokio::time::timeout(T, self.io.next())
            .await
            .expect("an answer in time")
            .expect("the daemon closed the connection")
            .unwrap();
        Frame::decode(&raw).unwrap()
    }

    /// Calls `method`; Ok(result) or Err(error code).
    pub(crate) async fn call(
        &mut self,
        method: &str,
        params: Vec<(&str, Value)>,
    ) -> Result<Value, u64> {
        let id = self.send(method, params).await;
        match self.frame().await {
            Frame::Response {
                id: got,
                err,
                result,
            } => {
                assert_eq!(got, id);
                err.map_or(Ok(result), |e| Err(e.code))
            }
            other => panic!("{other:?}"),
        }
    }

    /// register_asa: the new ASA's handle.
    pub(crate) async fn register_asa(&mut self, name: &str) -> Value {
        let r = self
            .call("register_asa", vec![("name", name.into())])
            .await
            .unwrap();
        get(&r, "asa").unwrap().clone()
    }

    /// Floods one objective (RFC 8990 bytes) for a minute.
    pub(crate) async fn flood(&mut self, asa: &Value, objective: Value) -> Result<Value, u64> {
        self.call(
            "flood",
            vec![
                ("asa", asa.clone()),
                ("ttl_ms", 60_000.into()),
                (
                    "tagged",
                    Value::Array(vec![Value::Map(vec![("objective".into(), objective)])]),
                ),
            ],
        )
        .await
    }

    pub(crate) async fn hello(&mut self) {
        let r = self
            .call("hello", vec![("versions", Value::Array(vec![1.into()]))])
            .await
            .unwrap();
        assert_eq!(get(&r, "version"), Some(&Value::from(1)));
    }
}

/// The value under text key `key` of a CBOR map, if any.
pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    grasp_asa_api::form::Fields::of(v, "").ok()?.get(key)
}
