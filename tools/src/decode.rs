//! `grasp decode`: GRASP messages from hex or from a capture (pcap or
//! pcapng: Ethernet, Linux cooked v1/v2 or raw IP), UDP multicasts and TCP
//! sessions, decrypting QUADS with the domain's key file (ours, or graspy's
//! `quadsk.py`). TLS sessions cannot be read; the TLS backend's multicasts
//! are signed, not encrypted: their messages are shown (signatures are not
//! checked here). `--write-pcap` writes the messages read, in the clear, as
//! a capture for Wireshark instead of printing them.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use grasp_engine::wire::{Limits, StreamDecoder, Value};
use serde_json::json;

use crate::config::NodeArgs;
use crate::pretty::{decode, pretty, summary};

/// How to read QUADS in the capture.
enum Key {
    None,
    #[cfg(feature = "quads")]
    Legacy(grasp_quads::legacy::LegacyKey),
    #[cfg(feature = "quads")]
    Quads(grasp_quads::Observer),
}

fn load_key(args: &NodeArgs) -> Result<Key> {
    use crate::config::QuadsKeySource;
    let src = match (&args.key_file, &args.password) {
        (Some(p), _) => QuadsKeySource::File(p.clone()),
        (None, Some(pw)) => QuadsKeySource::Password {
            password: zeroize::Zeroizing::new(pw.clone()),
            domain: args.domain.clone(),
        },
        (None, None) => return Ok(Key::None),
    };
    #[cfg(feature = "quads")]
    {
        use crate::node::QuadsKey;
        Ok(match crate::node::load_quads_key(&src)? {
            QuadsKey::Graspy(k) => Key::Legacy(k),
            QuadsKey::Ours { key, .. } => {
                Key::Quads(grasp_quads::Observer::new(grasp_quads::KeyRing::new(*key)))
            }
        })
    }
    #[cfg(not(feature = "quads"))]
    {
        let _ = src;
        bail!("this build has no QUADS support; rebuild with `--features quads` to decrypt")
    }
}

/// The GRASP message inside a TLS-backend multicast, as the TLS backend
/// reads it (its signature not checked: `grasp decode` shows traffic).
fn signed_payload(b: &[u8]) -> Option<Vec<u8>> {
    #[cfg(feature = "tls")]
    {
        grasp_tls::multicast::payload_unverified(b).map(<[u8]>::to_vec)
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = b;
        None
    }
}

impl Key {
    /// A multicast payload as a GRASP message.
    fn multicast(&self, b: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Key::None => Ok(decode(b)
                .ok()
                .map(|_| b.to_vec())
                .or_else(|| signed_payload(b))
                .unwrap_or_else(|| b.to_vec())),
            #[cfg(feature = "quads")]
            Key::Legacy(k) => k.decrypt(b).map_err(|e| e.to_string()),
            #[cfg(feature = "quads")]
            Key::Quads(o) => o.multicast(b).map_err(|e| e.to_string()),
        }
    }
}

/// One decoded message, printed (or, with `--write-pcap`, written).
struct Printer {
    json: bool,
    count: usize,
    /// The plaintext capture being written, if asked for.
    out: Option<crate::capture::Writer>,
    /// Messages that could not be read or written to it.
    skipped: usize,
}

impl Printer {
    fn show(
        &mut self,
        t: Option<f64>,
        ends: Option<(SocketAddr, SocketAddr)>,
        transport: &str,
        msg: Result<Vec<u8>, String>,
    ) {
        self.count += 1;
        if let Some(out) = self.out.as_mut() {
            let written = match (&msg, ends) {
                (Ok(m), Some((src, dst))) => {
                    let t = std::time::Duration::from_secs_f64(t.unwrap_or(0.0).max(0.0));
                    if transport == "tcp" {
                        out.tcp(t, src, dst, m).is_ok()
                    } else {
                        out.udp(t, src, dst, m).is_ok()
                    }
                }
                _ => false,
            };
            if !written {
                self.skipped += 1;
            }
            return;
        }
        let (src, dst) = match ends {
            Some((s, d)) => (s.to_string(), d.to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        let (src, dst) = (src.as_str(), dst.as_str());
        match msg {
            Ok(m) => {
                if self.json {
                    let kind = decode(&m)
                        .map(|x| crate::pretty::type_name(&x))
                        .unwrap_or_else(|e| format!("undecodable: {e}"));
                    crate::outln!(
                        "{}",
                        json!({"t": t, "src": src, "dst": dst, "transport": transport, "type": kind,
                               "summary": summary(&m),
                               "cbor_diag": Value::from_cbor(m.clone()).map(|v| v.to_string()).ok(),
                               "hex": hex::encode(&m)})
                    );
                } else {
                    let when = t.map_or(String::new(), |t| format!("{t:.6} "));
                    crate::outln!("{when}{src} ==> {dst} ({transport})");
                    for line in pretty(&m).lines() {
                        crate::outln!("    {line}");
                    }
                    crate::outln!();
                }
            }
            Err(e) => {
                if self.json {
                    crate::outln!(
                        "{}",
                        json!({"t": t, "src": src, "dst": dst, "transport": transport, "error": e})
                    );
                } else {
                    crate::outln!("{src} ==> {dst} ({transport}): cannot read: {e}\n");
                }
            }
        }
    }
}

/// Decodes `input` (hex, or a capture file); returns how many messages
/// were shown. With `write_pcap`, writes the messages of the capture
/// instead, decrypted (QUADS) or unwrapped (TLS multicasts), as a capture
/// for Wireshark (mode 0600: it holds what the keys protected).
pub fn run(
    input: &str,
    args: &NodeArgs,
    json_out: bool,
    write_pcap: Option<&Path>,
) -> Result<usize> {
    let key = load_key(args)?;
    let mut p = Printer {
        json: json_out,
        count: 0,
        out: write_pcap.map(|_| crate::capture::Writer::new()),
        skipped: 0,
    };
    let path = Path::new(input);
    if path.exists() {
        capture(path, &key, &mut p)?;
        if let (Some(dest), Some(out)) = (write_pcap, p.out.take()) {
            write_private(dest, &out.finish())
                .with_context(|| format!("writing {}", dest.display()))?;
            let written = p.count - p.skipped;
            eprintln!(
                "grasp: wrote {written} messages to {}{}",
                dest.display(),
                if p.skipped > 0 {
                    format!(" ({} could not be read and are left out)", p.skipped)
                } else {
                    String::new()
                }
            );
            return Ok(written);
        }
        return Ok(p.count);
    }
    if write_pcap.is_some() {
        bail!("--write-pcap needs a capture file to decode, not hex");
    }
    let digits: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let bytes = hex::decode(&digits).map_err(|_| crate::config::ConfigError::Invalid {
        setting: format!("decode {input:?}"),
        why: "neither an existing capture file nor the hex of a message (e.g. 8301...)".into(),
    })?;
    let msg = if decode(&bytes).is_ok() {
        Ok(bytes)
    } else {
        key.multicast(&bytes)
    };
    p.show(None, None, "hex", msg);
    Ok(p.count)
}

/// A TCP direction being put back together.
#[derive(Default)]
struct Flow {
    buf: BytesMut,
    next_seq: Option<u32>,
    broken: bool,
    /// Messages shown from this direction so far.
    shown: usize,
}

/// Both directions of one TCP connection.
struct Conn {
    /// The side that sent the SYN (or the first data).
    initiator: SocketAddr,
    #[cfg(feature = "quads")]
    observer: Option<grasp_quads::ChannelObserver>,
}

/// Largest capture read (it is read whole).
const MAX_CAPTURE: u64 = 512 << 20;
/// TCP directions followed at once; later ones are skipped (and said so).
const MAX_FLOWS: usize = 65_536;

fn capture(path: &Path, key: &Key, p: &mut Printer) -> Result<()> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_CAPTURE {
        bail!(
            "{} is {} MiB; split it first (editcap -c) — at most {} MiB are read",
            path.display(),
            len >> 20,
            MAX_CAPTURE >> 20
        );
    }
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .with_context(|| format!("reading {}", path.display()))?;
    let packets = read_packets(&raw)
        .with_context(|| format!("{} is not a pcap or pcapng capture", path.display()))?;
    let limits = Limits::default();
    let mut flows: HashMap<(SocketAddr, SocketAddr), Flow> = HashMap::new();
    let mut conns: HashMap<(SocketAddr, SocketAddr), Conn> = HashMap::new();
    let mut too_many = false;
    for (t, link, data) in packets {
        let Some((src_ip, dst_ip, l4)) = ip_layer(link, &data) else {
            continue;
        };
        match l4 {
            L4::Udp {
                sport,
                dport,
                payload,
            } => {
                if sport != grasp_engine::wire::GRASP_LISTEN_PORT
                    && dport != grasp_engine::wire::GRASP_LISTEN_PORT
                {
                    continue;
                }
                let ends = (
                    SocketAddr::new(src_ip, sport),
                    SocketAddr::new(dst_ip, dport),
                );
                p.show(Some(t), Some(ends), "udp", key.multicast(&payload));
            }
            L4::Tcp {
                sport,
                dport,
                seq,
                syn,
                payload,
            } => {
                let (src, dst) = (
                    SocketAddr::new(src_ip, sport),
                    SocketAddr::new(dst_ip, dport),
                );
                if flows.len() >= MAX_FLOWS && !flows.contains_key(&(src, dst)) {
                    if !too_many {
                        too_many = true;
                        eprintln!("grasp: more than {MAX_FLOWS} TCP flows; later ones are skipped");
                    }
                    continue;
                }
                let ckey = if src < dst { (src, dst) } else { (dst, src) };
                let conn = conns.entry(ckey).or_insert_with(|| Conn {
                    initiator: src,
                    #[cfg(feature = "quads")]
                    observer: match key {
                        Key::Quads(o) => Some(o.channel()),
                        _ => None,
                    },
                });
                if syn {
                    // The stream starts after the SYN (GRASP peers send no
                    // data on it).
                    flows.entry((src, dst)).or_default().next_seq = Some(seq.wrapping_add(1));
                    continue;
                }
                if payload.is_empty() {
                    continue;
                }
                let f = flows.entry((src, dst)).or_default();
                match f.next_seq {
                    Some(n) if seq != n => {
                        // A retransmission (already seen) or a gap.
                        if seq.wrapping_sub(n) > u32::MAX / 2 {
                            continue;
                        }
                        f.broken = true;
                    }
                    _ => {}
                }
                f.next_seq = Some(seq.wrapping_add(payload.len() as u32));
                if f.broken {
                    continue;
                }
                f.buf.extend_from_slice(&payload);
                if f.buf.len() > 1 << 20 {
                    f.broken = true;
                    continue;
                }
                #[cfg_attr(not(feature = "quads"), allow(unused_variables))]
                let from_initiator = src == conn.initiator;
                loop {
                    let item = match key {
                        #[cfg(feature = "quads")]
                        Key::Legacy(k) => match k.split(&f.buf, &limits) {
                            Ok(Some(n)) => Some(f.buf.split_to(n).to_vec()),
                            Ok(None) => None,
                            Err(_) => {
                                f.broken = true;
                                None
                            }
                        },
                        _ => {
                            let big = Limits {
                                max_message_size: limits.max_message_size + 512,
                                ..limits
                            };
                            match StreamDecoder::new(big).decode(&mut f.buf) {
                                Ok(Some(b)) => Some(b.to_vec()),
                                Ok(None) => None,
                                Err(_) => {
                                    f.broken = true;
                                    None
                                }
                            }
                        }
                    };
                    let Some(item) = item else { break };
                    let msg = match key {
                        Key::None => Ok(item),
                        #[cfg(feature = "quads")]
                        Key::Legacy(k) => k.decrypt(&item).map_err(|e| e.to_string()),
                        #[cfg(feature = "quads")]
                        Key::Quads(_) => match conn.observer.as_mut() {
                            Some(o) if from_initiator => {
                                o.from_initiator(&item).map_err(|e| e.to_string())
                            }
                            Some(o) => o.from_responder(&item).map_err(|e| e.to_string()),
                            None => Err("no key".into()),
                        },
                    };
                    // A flow whose first item is not GRASP is another
                    // protocol on TCP: skipped. With a key, one that does
                    // not open is shown once (a wrong key?), then skipped.
                    if f.shown == 0 && msg.as_ref().map_or(true, |m| decode(m).is_err()) {
                        f.broken = true;
                        if !matches!(key, Key::None) {
                            p.show(Some(t), Some((src, dst)), "tcp", msg);
                        }
                        break;
                    }
                    f.shown += 1;
                    p.show(Some(t), Some((src, dst)), "tcp", msg);
                }
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to `path`, readable by its owner only (replacing it).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Link types this reads.
#[derive(Clone, Copy, Debug)]
enum Link {
    Ethernet,
    Sll,
    Sll2,
    Raw,
}

fn link_of(dlt: u32) -> Option<Link> {
    match dlt {
        1 => Some(Link::Ethernet),
        113 => Some(Link::Sll),
        276 => Some(Link::Sll2),
        101 | 228 | 229 | 12 | 14 => Some(Link::Raw),
        _ => None,
    }
}

type Packet = (f64, Link, Vec<u8>);

fn read_packets(raw: &[u8]) -> Result<Vec<Packet>> {
    let mut out = Vec::new();
    if raw.len() >= 4 && raw[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = pcap_file::pcapng::PcapNgReader::new(raw)?;
        loop {
            let got = match r.next_block() {
                None => break,
                Some(block) => match block? {
                    pcap_file::pcapng::Block::EnhancedPacket(ep) => Some((
                        ep.interface_id,
                        ep.timestamp.as_secs_f64(),
                        ep.data.to_vec(),
                    )),
                    _ => None,
                },
            };
            let Some((id, t, data)) = got else { continue };
            let iface = r
                .interfaces()
                .get(id as usize)
                .map(|i| u32::from(i.linktype));
            let Some(link) = iface.and_then(link_of) else {
                continue;
            };
            out.push((t, link, data));
        }
        return Ok(out);
    }
    let mut r = pcap_file::pcap::PcapReader::new(raw)?;
    let Some(link) = link_of(u32::from(r.header().datalink)) else {
        bail!(
            "unsupported link type {:?} (Ethernet, Linux cooked or raw IP are read)",
            r.header().datalink
        );
    };
    while let Some(pkt) = r.next_packet() {
        let pkt = pkt?;
        out.push((pkt.timestamp.as_secs_f64(), link, pkt.data.to_vec()));
    }
    Ok(out)
}

enum L4 {
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    },
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        syn: bool,
        payload: Vec<u8>,
    },
}

fn ip_layer(link: Link, data: &[u8]) -> Option<(IpAddr, IpAddr, L4)> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let sliced = match link {
        Link::Ethernet => SlicedPacket::from_ethernet(data).ok()?,
        Link::Sll => SlicedPacket::from_linux_sll(data).ok()?,
        Link::Sll2 => SlicedPacket::from_ip(data.get(20..)?).ok()?,
        Link::Raw => SlicedPacket::from_ip(data).ok()?,
    };
    let (src, dst) = match sliced.net? {
        NetSlice::Ipv6(v6) => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
        ),
        NetSlice::Ipv4(v4) => (
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
        ),
        _ => return None,
    };
    let l4 = match sliced.transport? {
        TransportSlice::Udp(u) => L4::Udp {
            sport: u.source_port(),
            dport: u.destination_port(),
            payload: u.payload().to_vec(),
        },
        TransportSlice::Tcp(t) => L4::Tcp {
            sport: t.source_port(),
            dport: t.destination_port(),
            seq: t.sequence_number(),
            syn: t.syn(),
            payload: t.payload().to_vec(),
        },
        _ => return None,
    };
    Some((src, dst, l4))
}
