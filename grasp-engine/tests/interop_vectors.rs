//! Plays one side of each graspy capture against the engine.
//!
//! For every two-node plaintext scenario in `tests/vectors/graspy/`, the
//! engine takes the place of one graspy node (gA or gB) and a scripted peer
//! replays the other node's messages from the capture. Each message our side
//! is expected to send is produced by the engine, either on its own
//! (discovery responses, M_SYNCH) or by the ASA call that graspy's ASA made
//! (derived from the expected message), and compared with graspy's:
//! same bytes once session ids are mapped, so the same types, flags, loop
//! counts and layout; and a discovery response must go to the M_DISCOVERY's
//! source address and port.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grasp_engine::proto::{
    AsaHandle, AsaLocator, ChannelId, CommandId, Config, DiscoverOptions, Engine, Event,
    NegotiationOutcome, RegisterOptions, SessionHandle, Transmit,
};
use grasp_engine::testing::{secured, Net};
use grasp_engine::transport::Datagram;
use grasp_engine::wire::{
    EndOption, Locator, Message, Objective, ObjectiveFlags, ResponseTarget, SessionId,
};
use grasp_engine::ApiError;
use serde_json::Value as Json;

struct V {
    from: String,
    transport: String,
    src: Ipv6Addr,
    src_port: u16,
    dst: Ipv6Addr,
    dst_port: u16,
    conn: Option<u64>,
    msg: Message,
}

fn load(name: &str) -> Vec<V> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors/graspy")
        .join(name);
    let doc: Json = serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
    doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let raw = Bytes::from(hex::decode(m["payload_hex"].as_str().unwrap()).unwrap());
            V {
                from: m["src_node"].as_str().unwrap().into(),
                transport: m["transport"].as_str().unwrap().into(),
                src: m["src"].as_str().unwrap().parse().unwrap(),
                src_port: m["src_port"].as_u64().unwrap() as u16,
                dst: m["dst"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap_or(Ipv6Addr::UNSPECIFIED),
                dst_port: m["dst_port"].as_u64().unwrap() as u16,
                conn: m["tcp_conn"].as_u64(),
                msg: Message::decode(&raw).unwrap(),
            }
        })
        .collect()
}

fn node_addrs(node: &str) -> (Ipv6Addr, Ipv6Addr) {
    match node {
        "gA" => ("fd00:1::1".parse().unwrap(), "fe80::1:1".parse().unwrap()),
        _ => ("fd00:1::2".parse().unwrap(), "fe80::1:2".parse().unwrap()),
    }
}

fn set_sid(m: &mut Message, sid: SessionId) {
    match m {
        Message::Discovery(x) => x.session_id = sid,
        Message::Response(x) => x.session_id = sid,
        Message::ReqNeg(x) | Message::ReqSyn(x) | Message::Negotiate(x) | Message::Synch(x) => {
            x.session_id = sid
        }
        Message::End(x) => x.session_id = sid,
        Message::Wait(x) => x.session_id = sid,
        Message::Flood(x) => x.session_id = sid,
        Message::Invalid(x) => x.session_id = sid,
        _ => {}
    }
}

struct Player {
    /// The one engine, its clock and command ids (the crate's harness;
    /// what it sends for the capture's peer comes out of `net.outside`).
    net: Net,
    we: String,
    asa: AsaHandle,
    /// graspy's session id -> ours.
    sids: HashMap<SessionId, SessionId>,
    /// capture's TCP connection -> our channel.
    conns: HashMap<u64, ChannelId>,
    out: VecDeque<Transmit>,
    session: Option<SessionHandle>,
    /// The objective the engine last handed our ASA (request or counter-
    /// offer), whose loop count our next step must carry.
    last: Option<Objective>,
    /// How each API call ended (at once, or in its event).
    results: Vec<Result<(), ApiError>>,
}

/// How the call an event ends went, if it ends one.
fn outcome(ev: &Event) -> Option<Result<(), ApiError>> {
    fn done<T>(r: &Result<T, ApiError>) -> Option<Result<(), ApiError>> {
        Some(r.as_ref().map(|_| ()).map_err(Clone::clone))
    }
    match ev {
        Event::Discovered { result, .. } => done(result),
        Event::Synchronized { result, .. } => done(result),
        Event::Negotiated { result, .. } => done(result),
        Event::RawOpened { result, .. } => done(result),
        Event::RawReceived { result, .. } => done(result),
        _ => None,
    }
}

impl Player {
    fn new(we: &str, port: u16) -> Self {
        let (_, ll) = node_addrs(we);
        Self::with_interfaces(we, port, &[(1, ll)])
    }

    fn with_interfaces(we: &str, port: u16, ifaces: &[(u32, Ipv6Addr)]) -> Self {
        let (ula, _) = node_addrs(we);
        let mut config = Config::default();
        config.seed = Some(8990);
        let ifaces: Vec<(u32, Ipv6Addr)> = ifaces.to_vec();
        let mut net = Net::of(vec![(config, secured(&ifaces, Locator::tcp6(ula, port)))]);
        let asa = net.engines[0].register_asa("player".into()).unwrap();
        Player {
            net,
            we: we.into(),
            asa,
            sids: HashMap::new(),
            conns: HashMap::new(),
            out: VecDeque::new(),
            session: None,
            last: None,
            results: Vec::new(),
        }
    }

    /// A call that finishes at once.
    fn call<T>(&mut self, f: impl FnOnce(&mut Engine, Instant, AsaHandle) -> Result<T, ApiError>) {
        let now = self.net.now;
        let r = f(&mut self.net.engines[0], now, self.asa);
        self.results.push(r.map(|_| ()));
        self.drain();
    }

    /// A call that ends in an event (or fails at once).
    fn start(
        &mut self,
        f: impl FnOnce(&mut Engine, Instant, CommandId, AsaHandle) -> Result<(), ApiError>,
    ) {
        let id = self.net.command();
        let now = self.net.now;
        if let Err(e) = f(&mut self.net.engines[0], now, id, self.asa) {
            self.results.push(Err(e));
        }
        self.drain();
    }

    fn drain(&mut self) {
        self.net.run();
        self.out.extend(self.net.outside.drain(..).map(|(_, t)| t));
        for (_, ev) in std::mem::take(&mut self.net.events) {
            match ev {
                Event::NegotiationRequest {
                    session, objective, ..
                } => {
                    self.session = Some(session);
                    self.last = Some(objective);
                }
                Event::Negotiated {
                    result:
                        Ok(NegotiationOutcome::Step {
                            session, objective, ..
                        }),
                    ..
                } => {
                    self.session = Some(session);
                    self.last = Some(objective);
                    self.results.push(Ok(()));
                }
                ev => self.results.extend(outcome(&ev)),
            }
        }
    }

    /// Registers what our side serves in this capture.
    fn register_from(&mut self, vs: &[V]) {
        let mut served: HashMap<String, (Objective, RegisterOptions, bool)> = HashMap::new();
        let mut last_disc = None;
        for v in vs {
            if v.from != self.we {
                if let Message::Discovery(d) = &v.msg {
                    last_disc = Some(d.objective.clone());
                }
                continue;
            }
            match &v.msg {
                Message::Response(r) => {
                    let Some(d) = last_disc.clone() else { continue };
                    let entry = served.entry(d.name.clone()).or_insert((
                        Objective { value: None, ..d },
                        RegisterOptions::default(),
                        false,
                    ));
                    entry.1.discoverable = true;
                    // The ttl is not copied: our default must be graspy's.
                    let _ = r.ttl_ms;
                    if let Some(o) = &r.objective {
                        entry.0 = o.clone();
                        entry.1.rapid = true;
                        entry.2 = true;
                    }
                }
                Message::Synch(s) => {
                    let entry = served.entry(s.objective.name.clone()).or_insert((
                        s.objective.clone(),
                        RegisterOptions::default(),
                        true,
                    ));
                    entry.0 = s.objective.clone();
                    entry.2 = true;
                }
                Message::Flood(f) => {
                    for t in &f.tagged {
                        let o = Objective {
                            loop_count: 6,
                            ..t.objective.clone()
                        };
                        served.entry(o.name.clone()).or_insert((
                            o,
                            RegisterOptions::default(),
                            false,
                        ));
                    }
                }
                _ => {}
            }
        }
        // Negotiation objectives we answer.
        for v in vs {
            if v.from != self.we {
                if let Message::ReqNeg(r) = &v.msg {
                    let o = Objective {
                        value: None,
                        ..r.objective.clone()
                    };
                    served
                        .entry(o.name.clone())
                        .or_insert((o, RegisterOptions::default(), false));
                }
            }
        }
        for (name, (obj, opts, synch)) in served {
            let neg = obj.flags.contains(ObjectiveFlags::NEG);
            let o = obj.clone();
            self.call(|e, _, asa| e.register_objective(asa, o, opts));
            if synch {
                self.call(|e, _, asa| e.listen_synchronize(asa, obj));
            }
            if neg {
                self.call(|e, _, asa| e.listen_negotiate(asa, &name));
            }
        }
        for r in self.results.drain(..) {
            assert!(r.is_ok(), "registration: {r:?}");
        }
    }

    /// Feeds a message from the peer.
    fn feed(&mut self, v: &V) {
        let mut m = v.msg.clone();
        if let Some(s) = m.session_id().and_then(|s| self.sids.get(&s)).copied() {
            set_sid(&mut m, s);
        }
        let raw = m.encode();
        let scope = |a: &Ipv6Addr| if a.segments()[0] == 0xfe80 { 1 } else { 0 };
        if v.transport == "udp-multicast" {
            self.net.engines[0].handle_datagram(
                self.net.now,
                Datagram {
                    ifindex: 1,
                    src: SocketAddrV6::new(v.src, v.src_port, 0, 1),
                    msg: raw,
                },
            );
        } else {
            let conn = v.conn.unwrap();
            let ch = match self.conns.get(&conn) {
                Some(c) => *c,
                None => {
                    let peer =
                        SocketAddr::V6(SocketAddrV6::new(v.src, v.src_port, 0, scope(&v.src)));
                    let c = self.net.engines[0]
                        .handle_inbound_channel(self.net.now, peer, None)
                        .unwrap();
                    self.conns.insert(conn, c);
                    c
                }
            };
            self.net.engines[0].handle_channel_message(self.net.now, ch, raw);
        }
        self.drain();
    }

    /// The ASA call graspy's ASA made to send `m`, if any.
    fn act_for(&mut self, v: &V) {
        let peer = || AsaLocator::new(Locator::tcp6(v.dst, v.dst_port));
        let t = Duration::from_secs(5);
        match &v.msg {
            Message::Discovery(d) => {
                let o = d.objective.clone();
                let opts = DiscoverOptions::all(Duration::from_secs(1));
                self.start(|e, now, cmd, asa| e.discover(now, cmd, asa, o, opts, false));
            }
            Message::ReqSyn(r) => {
                let o = r.objective.clone();
                self.start(|e, now, cmd, asa| e.synchronize(now, cmd, asa, o, Some(peer()), t));
            }
            Message::ReqNeg(r) => {
                let o = r.objective.clone();
                self.start(|e, now, cmd, asa| {
                    e.request_negotiate(now, cmd, asa, o, Some(peer()), t)
                });
            }
            Message::Negotiate(n) => {
                // As an ASA does: the objective it was handed, new value.
                let mut o = self.last.clone().expect("an objective from the peer");
                o.value = n.objective.value.clone();
                let session = self.session.expect("a session");
                self.start(|e, now, cmd, asa| e.negotiate_step(now, cmd, asa, session, o, t));
            }
            Message::Wait(w) => {
                let session = self.session.expect("a session");
                let wait = Duration::from_millis(u64::from(w.waiting_time_ms));
                self.call(|e, now, asa| e.negotiate_wait(now, asa, session, wait));
            }
            Message::End(end) => {
                let session = self.session.expect("a session");
                let accept = matches!(end.option, EndOption::Accept);
                let reason = match &end.option {
                    EndOption::Decline { reason } => reason.clone(),
                    _ => None,
                };
                self.call(|e, _, asa| e.end_negotiate(asa, session, accept, reason));
            }
            Message::Invalid(i) => {
                let session = self.session.expect("a session");
                let info = i.content.clone();
                self.call(|e, _, asa| e.send_invalid(asa, session, info));
            }
            Message::Flood(f) => {
                let (_, ll) = node_addrs(&self.we);
                let tagged = f
                    .tagged
                    .iter()
                    .map(|t| {
                        let mut t = t.clone();
                        // graspy was asked for `::`; it sent the interface's address.
                        if let Some(Locator::Ipv6 { addr, .. }) = &mut t.locator {
                            if *addr == ll {
                                *addr = Ipv6Addr::UNSPECIFIED;
                                t.objective.loop_count = 6;
                            }
                        }
                        t
                    })
                    .collect();
                let ttl = f.ttl_ms;
                self.call(|e, now, asa| e.flood(now, asa, ttl, tagged));
            }
            _ => {} // produced by the engine itself
        }
    }

    /// Checks that the engine sends what graspy sent as `v`.
    fn expect(&mut self, v: &V, ctx: &str) {
        if !matches!(
            self.out.front(),
            Some(Transmit::Send { .. } | Transmit::Multicast { .. } | Transmit::Connect { .. })
        ) {
            self.act_for(v);
        }
        loop {
            let t = self.out.pop_front().unwrap_or_else(|| {
                panic!(
                    "{ctx}: the engine sent nothing; expected {:?}",
                    v.msg.msg_type()
                )
            });
            match t {
                Transmit::Connect { channel, peer } => {
                    if matches!(v.msg, Message::Response(_)) {
                        //= which port a discovery response goes to
                        let SocketAddr::V6(p) = peer else { panic!() };
                        assert_eq!(
                            (*p.ip(), p.port()),
                            (v.dst, v.dst_port),
                            "{ctx}: response address/port"
                        );
                    } else {
                        assert_eq!(peer.ip(), IpAddr::V6(v.dst), "{ctx}: connect address");
                        assert_eq!(peer.port(), v.dst_port, "{ctx}: connect port");
                    }
                    if let Some(c) = v.conn {
                        self.conns.insert(c, channel);
                    }
                }
                Transmit::Close { .. } => continue,
                Transmit::Send { msg, .. } | Transmit::Multicast { msg, .. } => {
                    let ours = Message::decode(&msg).unwrap();
                    let mut theirs = v.msg.clone();
                    if let (Some(s_theirs), Some(s_ours)) = (theirs.session_id(), ours.session_id())
                    {
                        let mapped = *self.sids.entry(s_theirs).or_insert(s_ours);
                        set_sid(&mut theirs, mapped);
                    }
                    assert_eq!(ours, theirs, "{ctx}: message differs");
                    assert_eq!(msg, theirs.encode(), "{ctx}: bytes differ");
                    return;
                }
            }
        }
    }
}

/// Plays `we` in `file`. Returns how many of our messages were compared.
fn play(file: &str, we: &str) -> usize {
    let vs = load(file);
    // Our port: where graspy's node took unicast (its locator port as
    // responder, its multicast source port as initiator).
    let port = vs
        .iter()
        .find_map(|v| match &v.msg {
            Message::Response(r) if v.from == we => match &r.target {
                ResponseTarget::Locators(l) => match &l[0] {
                    Locator::Ipv6 { port, .. } => Some(*port),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .or_else(|| {
            vs.iter()
                .find(|v| {
                    v.from == we
                        && v.transport == "udp-multicast"
                        && !matches!(v.msg, Message::Noop)
                })
                .map(|v| v.src_port)
        })
        .unwrap_or(7017);
    let mut p = Player::new(we, port);
    p.register_from(&vs);
    let mut compared = 0;
    for (i, v) in vs.iter().enumerate() {
        if matches!(v.msg, Message::Noop) {
            continue; // graspy's socket-priming M_NOOP: we need none
        }
        let ctx = format!("{file} #{i} as {we}");
        if v.from == we {
            p.expect(v, &ctx);
            compared += 1;
        } else {
            p.feed(v);
        }
        p.net.now += Duration::from_millis(1);
    }
    for r in &p.results {
        assert!(r.is_ok(), "{file} as {we}: an API call failed: {r:?}");
    }
    compared
}

macro_rules! scenario {
    ($name:ident, $file:expr, $we:expr, $min:expr) => {
        #[test]
        fn $name() {
            let n = play($file, $we);
            assert!(n >= $min, "only {n} messages compared");
        }
    };
}

scenario!(discovery_as_responder, "discovery.json", "gB", 1);
scenario!(discovery_as_initiator, "discovery.json", "gA", 2);
scenario!(sync_as_responder, "sync.json", "gB", 2);
scenario!(sync_as_requester, "sync.json", "gA", 2);
scenario!(sync_rapid_as_responder, "sync_rapid.json", "gB", 1);
scenario!(flood_as_flooder, "flood.json", "gB", 3);
scenario!(flood_linklocal_as_flooder, "flood_linklocal.json", "gB", 2);
scenario!(neg_accept_as_responder, "neg_accept.json", "gB", 5);
scenario!(neg_accept_as_requester, "neg_accept.json", "gA", 4);
scenario!(neg_decline_as_responder, "neg_decline.json", "gB", 5);
scenario!(neg_decline_as_requester, "neg_decline.json", "gA", 4);
scenario!(
    neg_requester_accept_as_responder,
    "neg_requester_accept.json",
    "gB",
    3
);
scenario!(
    neg_requester_accept_as_requester,
    "neg_requester_accept.json",
    "gA",
    3
);
scenario!(
    neg_requester_decline_as_responder,
    "neg_requester_decline.json",
    "gB",
    2
);
scenario!(
    neg_requester_decline_as_requester,
    "neg_requester_decline.json",
    "gA",
    3
);
scenario!(neg_invalid_as_responder, "neg_invalid.json", "gB", 2);
scenario!(neg_dry_tag24_as_responder, "neg_dry_tag24.json", "gB", 2);
scenario!(neg_dry_tag24_as_requester, "neg_dry_tag24.json", "gA", 2);

/// gB relaying in the three-node captures: what graspy does, and where the
/// engine does better (the relayed answer goes back on the first try).
#[test]
fn relay_discovery_as_the_relay() {
    let vs = load("relay_discovery_sync.json");
    let ll1: Ipv6Addr = "fe80::1:2".parse().unwrap();
    let ll2: Ipv6Addr = "fe80::2:1".parse().unwrap();
    let mut p = Player::with_interfaces("gB", 39166, &[(1, ll1), (2, ll2)]);
    let link = |v: &V| {
        if v.src.segments()[3] == 2 || v.dst.segments()[3] == 2 {
            2
        } else {
            1
        }
    };
    let feed_on = |p: &mut Player, v: &V, ifindex: u32| {
        p.net.engines[0].handle_datagram(
            p.net.now,
            Datagram {
                ifindex,
                src: SocketAddrV6::new(v.src, v.src_port, 0, ifindex),
                msg: v.msg.encode(),
            },
        );
        p.drain();
    };
    // #4: A's discovery on link 1 is relayed on link 2, same session and
    // initiator, loop count 6 -> 5: byte-identical to graspy's #5.
    feed_on(&mut p, &vs[4], 1);
    match p.out.pop_front() {
        Some(Transmit::Multicast { ifindex: 2, msg }) => assert_eq!(msg, vs[5].msg.encode()),
        other => panic!("expected the relayed discovery on link 2, got {other:?}"),
    }
    assert!(p.out.is_empty(), "nothing else: not relayed back on link 1");
    // The same discovery again (a loop) is not relayed twice.
    feed_on(&mut p, &vs[4], 2);
    assert!(p.out.is_empty());
    // #6: C answers the relay by TCP.
    let peer = SocketAddr::V6(SocketAddrV6::new(vs[6].src, vs[6].src_port, 0, 2));
    let ch = p.net.engines[0]
        .handle_inbound_channel(p.net.now, peer, None)
        .unwrap();
    p.net.engines[0].handle_channel_message(p.net.now, ch, vs[6].msg.encode());
    p.drain();
    // graspy sends nothing to A here; the engine answers A at once, at the
    // source port of A's multicast, with a divert to C.
    let mut sent = None;
    while let Some(t) = p.out.pop_front() {
        match t {
            Transmit::Connect { peer, .. } => {
                assert_eq!(
                    peer,
                    SocketAddr::V6(SocketAddrV6::new(vs[4].src, vs[4].src_port, 0, 1))
                )
            }
            Transmit::Send { msg, .. } => sent = Some(Message::decode(&msg).unwrap()),
            _ => {}
        }
    }
    let Some(Message::Response(r)) = sent else {
        panic!("no relayed answer")
    };
    let Message::Discovery(d) = &vs[4].msg else {
        panic!()
    };
    assert_eq!((r.session_id, r.initiator), (d.session_id, d.initiator));
    let c_loc = Locator::tcp6("fd00:2::2".parse().unwrap(), 41649);
    assert_eq!(r.target, ResponseTarget::Divert(vec![c_loc.clone()]));
    assert_eq!(r.ttl_ms, 600_000);
    // #7 -> #8 and #10 -> #11: later discoveries are answered from the cache
    // with the same divert layout as graspy's (ttl = remaining lifetime).
    for (q, a) in [(7, 8), (10, 11)] {
        p.net.now += Duration::from_millis(1800);
        feed_on(&mut p, &vs[q], link(&vs[q]));
        let mut got = None;
        while let Some(t) = p.out.pop_front() {
            match t {
                Transmit::Connect { peer, .. } => assert_eq!(
                    peer,
                    SocketAddr::V6(SocketAddrV6::new(vs[q].src, vs[q].src_port, 0, 1)),
                    "the answer goes to the multicast's source port"
                ),
                Transmit::Send { msg, .. } => got = Some(Message::decode(&msg).unwrap()),
                Transmit::Multicast { .. } => panic!("a cached objective is not relayed"),
                _ => {}
            }
        }
        let Some(Message::Response(mut ours)) = got else {
            panic!("no answer to #{q}")
        };
        let Message::Response(theirs) = &vs[a].msg else {
            panic!()
        };
        assert!(
            ours.ttl_ms < 600_000 && ours.ttl_ms > 590_000,
            "{}",
            ours.ttl_ms
        );
        ours.ttl_ms = theirs.ttl_ms;
        assert_eq!(Message::Response(ours).encode(), vs[a].msg.encode(), "#{a}");
    }
}

#[test]
fn relay_flood_as_the_relay() {
    let vs = load("relay_flood.json");
    let ll1: Ipv6Addr = "fe80::1:2".parse().unwrap();
    let ll2: Ipv6Addr = "fe80::2:1".parse().unwrap();
    let mut p = Player::with_interfaces("gB", 7017, &[(1, ll1), (2, ll2)]);
    for (q, a) in [(4, 5), (6, 7)] {
        p.net.engines[0].handle_datagram(
            p.net.now,
            Datagram {
                ifindex: 2,
                src: SocketAddrV6::new(vs[q].src, vs[q].src_port, 0, 2),
                msg: vs[q].msg.encode(),
            },
        );
        p.drain();
        // Relayed on link 1 only, byte-identical to graspy's (loop 3 -> 2).
        match p.out.pop_front() {
            Some(Transmit::Multicast { ifindex: 1, msg }) => assert_eq!(msg, vs[a].msg.encode()),
            other => panic!("expected the relayed flood on link 1, got {other:?}"),
        }
        assert!(p.out.is_empty());
        // A copy coming back is a duplicate: neither cached again nor relayed.
        p.net.engines[0].handle_datagram(
            p.net.now,
            Datagram {
                ifindex: 1,
                src: SocketAddrV6::new(ll1, 7017, 0, 1),
                msg: vs[a].msg.encode(),
            },
        );
        p.drain();
        assert!(p.out.is_empty());
        p.net.now += Duration::from_secs(1);
    }
    assert_eq!(p.net.engines[0].stats().floods_relayed, 2);
    assert_eq!(p.net.engines[0].stats().duplicates, 2);
}
