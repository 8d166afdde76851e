//! Hostile clients of graspd's ASA socket (over the fabric, connections
//! served in the test's process): arbitrary bytes, oversized and truncated
//! frames, a wrong type in every field of every method, another
//! connection's session, 10,000 outstanding requests, a client that never
//! reads. Each gets a clear error or is disconnected and counted; nothing
//! panics; another client is served meanwhile.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ciborium::Value;
use futures::{SinkExt, StreamExt};
use grasp_asa_api::request::Request;
use grasp_asa_api::Frame;
use grasp_engine::wire::{Locator, Objective, ObjectiveFlags, TaggedObjective};
use grasp_engine::{DiscoverOptions, FloodEntry, RegisterOptions};
use grasp_tools::api::connection;
use grasp_tools::api::policy::Grants;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

mod daemon;
use daemon::asa_client::{get, Client};
use daemon::fabric::{client, line};

const NEG: ObjectiveFlags = ObjectiveFlags::from_bits(3);
const SYNCH: ObjectiveFlags = ObjectiveFlags::from_bits(5);
const T: Duration = Duration::from_secs(5);

/// The answer another client gets while the hostile one does its worst:
/// in time, and right.
async fn still_served(c: &mut Client, asa: &Value) -> Duration {
    let t0 = Instant::now();
    let r = c
        .call(
            "get_flood",
            vec![("asa", asa.clone()), ("name", "EX.calm".into())],
        )
        .await;
    assert_eq!(r, Ok(Value::Array(vec![])));
    t0.elapsed()
}

/// The connection ends (EOF) within a few seconds, after at most a few
/// frames (a "closing" event, answers).
async fn ends(s: &mut UnixStream) {
    let mut buf = vec![0u8; 65536];
    let until = Instant::now() + T;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was not closed"),
        }
    }
}

#[tokio::test]
async fn bytes_that_are_not_frames_close_only_their_connection() {
    let (core, _n3) = line().await;
    let mut calm = client(core.clone());
    calm.hello().await;
    let calm_asa = calm.register_asa("calm").await;
    let served = |s: UnixStream| tokio::spawn(connection(s, core.clone(), Grants::everything("t")));

    // A length far over the limit: refused from the length alone.
    let (mut a, b) = UnixStream::pair().unwrap();
    served(b);
    a.write_all(&0x7fff_ffffu32.to_be_bytes()).await.unwrap();
    let mut c = Client::new(a);
    match c.frame().await {
        Frame::Event { kind, data, .. } => {
            assert_eq!(kind, "closing");
            assert_eq!(
                data.as_array().and_then(|a| a.first()),
                Some(&Value::from(105))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(tokio::time::timeout(T, c.io.next())
        .await
        .unwrap()
        .is_none());

    // Truncated: a length of 100, ten bytes, then the client shuts up.
    let (mut a, b) = UnixStream::pair().unwrap();
    served(b);
    a.write_all(&100u32.to_be_bytes()).await.unwrap();
    a.write_all(&[0x84; 10]).await.unwrap();
    a.shutdown().await.unwrap();
    ends(&mut a).await;

    // Arbitrary bytes, two hundred connections of them.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..200 {
        let (mut a, b) = UnixStream::pair().unwrap();
        served(b);
        let mut junk = Vec::new();
        for _ in 0..(x % 300) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk.push(x as u8);
        }
        let _ = a.write_all(&junk).await;
        let _ = a.shutdown().await;
        ends(&mut a).await;
    }
    assert!(still_served(&mut calm, &calm_asa).await < Duration::from_secs(1));
    // Every one of those connections is gone (the calm one stays).
    let t0 = Instant::now();
    while core.stats.open.load(Relaxed) > 1 {
        assert!(t0.elapsed() < T, "{:?}", core.stats);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        core.stats.bad_requests.load(Relaxed) >= 2,
        "{:?}",
        core.stats
    );
}

/// Every method's params with every field (the golden shapes), for ASA
/// `asa`; sessions and subscriptions that do not exist.
fn every_method(asa: u64) -> Vec<Request> {
    let o = Objective::new("EX.t", SYNCH).with_value(1u32);
    let l = Locator::tcp6("fd00::1".parse().unwrap(), 7017);
    let mut peer = grasp_engine::AsaLocator::new(l.clone());
    peer.ifindex = 1;
    vec![
        Request::RegisterAsa { name: "x".into() },
        Request::DeregisterAsa { asa: 99 },
        Request::RegisterObjective {
            asa,
            objective: o.clone(),
            options: RegisterOptions {
                locators: vec![l.clone()],
                ..RegisterOptions::default()
            },
        },
        Request::DeregisterObjective {
            asa,
            name: "EX.t".into(),
        },
        Request::Discover {
            asa,
            objective: o.clone(),
            options: DiscoverOptions {
                timeout: Some(T),
                min_ttl: Some(T),
                flush: true,
                first_only: true,
            },
            stream: true,
        },
        Request::Synchronize {
            asa,
            objective: o.clone(),
            peer: Some(peer.clone()),
            timeout: T,
        },
        Request::ListenSynchronize {
            asa,
            objective: o.clone(),
        },
        Request::StopSynchronize {
            asa,
            name: "EX.t".into(),
        },
        Request::Flood {
            asa,
            ttl_ms: 1000,
            tagged: vec![TaggedObjective {
                objective: o.clone(),
                locator: Some(l.clone()),
            }],
        },
        Request::GetFlood {
            asa,
            name: "EX.t".into(),
        },
        Request::ExpireFlood {
            asa,
            entry: FloodEntry {
                objective: o.clone(),
                locator: Some(l.clone()),
                initiator: "fd00::1".parse().unwrap(),
                expires: None,
                ifindex: 1,
            },
        },
        Request::RequestNegotiate {
            asa,
            objective: o.clone(),
            peer: Some(peer),
            timeout: T,
            noloop: true,
        },
        Request::NegotiateStep {
            asa,
            session: 99,
            objective: o.clone(),
            timeout: T,
        },
        Request::NegotiateWait {
            asa,
            session: 99,
            wait: T,
        },
        Request::EndNegotiate {
            asa,
            session: 99,
            accept: false,
            reason: Some("no".into()),
        },
        Request::SendInvalid {
            asa,
            session: 99,
            info: None,
        },
        Request::ListenNegotiate {
            asa,
            name: "EX.t".into(),
        },
        Request::StopNegotiate {
            asa,
            name: "EX.t".into(),
        },
        Request::Subscribe {
            asa,
            kind: "negotiation".into(),
            name: "EX.t".into(),
        },
        Request::Unsubscribe { subscription: 99 },
        Request::AbortSession { session: 99 },
        Request::Gsend {
            asa,
            session: 99,
            data: grasp_engine::wire::Value::from("hi"),
        },
        Request::Grecv {
            asa,
            session: 99,
            timeout: T,
        },
        Request::Dump { asa },
    ]
}

/// A value of another type than `v`.
fn wrong(v: &Value) -> Value {
    match v {
        Value::Integer(_) => Value::Text("seven".into()),
        Value::Text(_) => Value::Integer(7.into()),
        Value::Bytes(_) => Value::Bool(true),
        Value::Bool(_) => Value::Bytes(vec![1]),
        Value::Array(_) => Value::Map(vec![]),
        Value::Map(_) => Value::Array(vec![]),
        _ => Value::Integer(7.into()),
    }
}

#[tokio::test]
async fn a_wrong_type_in_every_field_of_every_method_is_a_bad_request() {
    let (core, _n3) = line().await;
    let mut c = client(core.clone());
    c.hello().await;
    let asa = c.register_asa("typo").await;
    let h = asa
        .as_integer()
        .and_then(|i| u64::try_from(i).ok())
        .unwrap();
    let mut tried = 0;
    for req in every_method(h) {
        let params = req.params();
        for (i, (key, v)) in params.iter().enumerate() {
            let mut bad: Vec<(&str, Value)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            bad[i].1 = wrong(v);
            let r = c.call(req.method(), bad).await;
            assert_eq!(
                r,
                Err(100),
                "{} with {key:?} of the wrong type",
                req.method()
            );
            tried += 1;
        }
        // A nested map's field of the wrong type too.
        if let Some((key, Value::Map(m))) = params.iter().find(|(_, v)| matches!(v, Value::Map(_)))
        {
            let mut m = m.clone();
            m[0].1 = wrong(&m[0].1);
            let bad: Vec<(&str, Value)> = params
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str(),
                        if k == key {
                            Value::Map(m.clone())
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect();
            assert_eq!(
                c.call(req.method(), bad).await,
                Err(100),
                "{} {key}",
                req.method()
            );
            tried += 1;
        }
    }
    assert!(tried > 60, "{tried}");
    // Out of range: a ttl past 2^32 - 1, a frame limit of zero is raised.
    let r = c
        .call(
            "flood",
            vec![
                ("asa", asa.clone()),
                ("ttl_ms", Value::Integer((1u64 << 40).into())),
                ("tagged", Value::Array(vec![])),
            ],
        )
        .await;
    assert_eq!(r, Err(100));
    // Unknown methods, and the connection still serves.
    assert_eq!(c.call("teleport", vec![]).await, Err(101));
    assert_eq!(c.call("", vec![]).await, Err(101));
    assert!(still_served(&mut c, &asa).await < Duration::from_secs(1));
    assert_eq!(core.stats.bad_requests.load(Relaxed), tried as u64 + 1);
}

#[tokio::test]
async fn a_session_of_another_connection_is_no_session_there() {
    let (core, n3) = line().await;
    let mut a = client(core.clone());
    a.hello().await;
    let asa_a = a.register_asa("a").await;
    let o = Objective::new("EX.mine", NEG).with_value(1u32);
    let ob = Value::Bytes(o.encode().to_vec());
    a.call(
        "register_objective",
        vec![("asa", asa_a.clone()), ("objective", ob.clone())],
    )
    .await
    .unwrap();
    let listen = a
        .send(
            "listen_negotiate",
            vec![("asa", asa_a.clone()), ("name", "EX.mine".into())],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let peer = n3.register_asa("peer").await.unwrap();
    peer.register_objective(&o, RegisterOptions::default())
        .await
        .unwrap();
    let asking = tokio::spawn(async move { peer.request_negotiate(&o, None, T).await });
    let offer = match a.frame().await {
        Frame::Response {
            id,
            err: None,
            result,
        } if id == listen => result,
        other => panic!("{other:?}"),
    };
    let session = get(&offer, "session").unwrap().clone();

    // B, with an ASA of its own, names A's session: no such session here.
    let mut b = client(core.clone());
    b.hello().await;
    let asa_b = b.register_asa("b").await;
    for (m, extra) in [
        ("negotiate_wait", ("wait_ms", Value::from(10))),
        ("end_negotiate", ("accept", Value::Bool(true))),
        ("negotiate_step", ("objective", ob.clone())),
    ] {
        let mut params = vec![("asa", asa_b.clone()), ("session", session.clone()), extra];
        params.push(("timeout_ms", 100.into()));
        assert_eq!(b.call(m, params).await, Err(19), "{m}");
    }
    assert_eq!(
        b.call("abort_session", vec![("session", session.clone())])
            .await,
        Err(19)
    );
    // A's session is untouched: A accepts, the peer hears it.
    a.call(
        "end_negotiate",
        vec![
            ("asa", asa_a),
            ("session", session),
            ("accept", Value::Bool(true)),
        ],
    )
    .await
    .unwrap();
    assert!(matches!(
        asking.await.unwrap(),
        Ok(grasp_engine::Negotiation::Accepted)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_outstanding_requests_are_answered_not_queued() {
    let (core, _n3) = line().await;
    let mut calm = client(core.clone());
    calm.hello().await;
    let calm_asa = calm.register_asa("calm").await;
    let mut c = client(core.clone());
    c.hello().await;
    let asa = c.register_asa("greedy").await;
    let (mut tx, mut rx) = c.io.split();
    let n = 10_000u64;
    let sender = tokio::spawn(async move {
        let o = Objective::new("EX.nobody", SYNCH);
        for id in 1000..1000 + n {
            let f = Request::Discover {
                asa: asa
                    .as_integer()
                    .and_then(|i| u64::try_from(i).ok())
                    .unwrap(),
                objective: o.clone(),
                options: DiscoverOptions::all(Duration::from_millis(300)),
                stream: false,
            }
            .frame(id);
            tx.send(Bytes::from(f.encode())).await.unwrap();
        }
        tx
    });
    let (mut ok, mut too_many, mut other) = (0u64, 0u64, 0u64);
    let mut worst = Duration::ZERO;
    let t0 = Instant::now();
    while ok + too_many + other < n {
        let raw = tokio::time::timeout(Duration::from_secs(30), rx.next())
            .await
            .expect("answers keep coming")
            .expect("the connection stays")
            .unwrap();
        match Frame::decode(&raw).unwrap() {
            Frame::Response { err: None, .. } => ok += 1,
            Frame::Response { err: Some(e), .. } if e.code == 104 => too_many += 1,
            Frame::Response { .. } => other += 1,
            f => panic!("{f:?}"),
        }
        if (ok + too_many) % 2000 == 0 {
            worst = worst.max(still_served(&mut calm, &calm_asa).await);
        }
    }
    let _tx = sender.await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(
        too_many >= n - 1000,
        "ok {ok}, tooMany {too_many}, other {other}"
    );
    assert!(ok >= 1, "ok {ok}, tooMany {too_many}, other {other}");
    assert!(
        worst < Duration::from_secs(1),
        "the calm client waited {worst:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_loses_its_own_events_only() {
    let (mut core, n3) = line().await;
    core.limits.requests = 8; // a short queue to the writer
    let mut calm = client(core.clone());
    calm.hello().await;
    let calm_asa = calm.register_asa("calm").await;

    // The deaf client: a small socket buffer, a subscription, then silence.
    let (a, b) = UnixStream::pair().unwrap();
    nix::sys::socket::setsockopt(&b, nix::sys::socket::sockopt::SndBuf, &4096).unwrap();
    tokio::spawn(connection(b, core.clone(), Grants::everything("t")));
    let mut deaf = Client::new(a);
    deaf.hello().await;
    let asa = deaf.register_asa("deaf").await;
    let o = Objective::new("EX.loud", NEG).with_value(1u32);
    let ob = Value::Bytes(o.encode().to_vec());
    deaf.call(
        "register_objective",
        vec![("asa", asa.clone()), ("objective", ob)],
    )
    .await
    .unwrap();
    deaf.call(
        "subscribe",
        vec![
            ("asa", asa.clone()),
            ("kind", "negotiation".into()),
            ("name", "EX.loud".into()),
        ],
    )
    .await
    .unwrap();

    // N3 asks, 300 times, 50 at once; each ends (timeout or close), none
    // hangs.
    let peer = n3.register_asa("peer").await.unwrap();
    peer.register_objective(&o, RegisterOptions::default())
        .await
        .unwrap();
    let t0 = Instant::now();
    for _round in 0..6 {
        let asks: Vec<_> = (0..50)
            .map(|_| {
                let (p, o) = (peer.clone(), o.clone());
                tokio::spawn(async move {
                    p.request_negotiate(&o, None, Duration::from_millis(500))
                        .await
                })
            })
            .collect();
        for a in asks {
            let _ = tokio::time::timeout(T, a)
                .await
                .expect("a request ends")
                .unwrap();
        }
        assert!(still_served(&mut calm, &calm_asa).await < Duration::from_secs(1));
    }
    assert!(t0.elapsed() < Duration::from_secs(30));
    let dropped = core.stats.events_dropped.load(Relaxed);
    assert!(dropped > 0, "{:?}", core.stats);

    // Its objective is its own while it is connected...
    let ob = Value::Bytes(o.encode().to_vec());
    let claim = vec![("asa", calm_asa.clone()), ("objective", ob)];
    assert_eq!(
        calm.call("register_objective", claim.clone()).await,
        Err(12)
    );
    // ...and goes with it (a relay's cache may still answer for it until
    // its ttl: the node's own registration is what must go).
    drop(deaf);
    let t0 = Instant::now();
    while calm
        .call("register_objective", claim.clone())
        .await
        .is_err()
    {
        assert!(t0.elapsed() < T, "EX.loud outlived its client");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn objectives_per_connection_are_bounded() {
    let (mut core, _n3) = line().await;
    core.limits.objectives = 3;
    let mut c = client(core);
    c.hello().await;
    let asa = c.register_asa("hoarder").await;
    let reg = |n: u32| {
        let o = Objective::new(format!("EX.h{n}"), SYNCH).with_value(n);
        vec![
            ("asa", asa.clone()),
            ("objective", Value::Bytes(o.encode().to_vec())),
        ]
    };
    for n in 0..3 {
        c.call("register_objective", reg(n)).await.unwrap();
    }
    assert_eq!(c.call("register_objective", reg(3)).await, Err(104));
    // Registering one again is the engine's objReg, and takes no slot.
    assert_eq!(c.call("register_objective", reg(1)).await, Err(12));
    c.call(
        "deregister_objective",
        vec![("asa", asa.clone()), ("name", "EX.h0".into())],
    )
    .await
    .unwrap();
    c.call("register_objective", reg(3)).await.unwrap();
}

/// One user (not root) cannot take every connection: its connections past
/// `per_user` are refused and counted, another user's are not (root only:
/// the clients run as nobody).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_connections_are_bounded() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED one_users_connections_are_bounded: needs root (clients run as nobody)");
        return;
    }
    use grasp_tools::api::policy::{Names, Policy, Rule, Who};
    use std::os::unix::fs::PermissionsExt;
    let (mut core, _n3) = line().await;
    core.limits.per_user = 2;
    core.policy = std::sync::Arc::new(Policy {
        open: false,
        rules: vec![Rule {
            who: Who::User {
                uid: 65534,
                name: "nobody".into(),
            },
            asas: Names::all(),
            own: Names::all(),
            read: Names::all(),
        }],
    });
    let stats = core.stats.clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("api.sock");
    let _guard = grasp_tools::api::serve(&path, core).unwrap();
    let sock = path.clone();
    let as_nobody = move |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_grasp"));
        c.args(["--api", sock.to_str().unwrap()])
            .args(args)
            .env_remove("RUST_LOG")
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    let mut held = Vec::new();
    for i in 0..2 {
        let name = format!("EX.held{i}");
        held.push(daemon::Reap(
            as_nobody(&["serve-sync", &name, "1", "--seconds", "20"])
                .spawn()
                .unwrap(),
        ));
    }
    let t0 = Instant::now();
    while stats.open.load(Relaxed) < 2 {
        assert!(t0.elapsed() < T, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = as_nobody.clone();
    let o = tokio::task::spawn_blocking(move || {
        third(&["--timeout-ms", "300", "discover", "EX.held0"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stats.connections_refused.load(Relaxed) >= 1, "{stats:?}");
    // Root is not bounded by it.
    let mut root = Client::new(UnixStream::connect(&path).await.unwrap());
    root.hello().await;
}
