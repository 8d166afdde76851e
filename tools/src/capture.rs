//! Captures written: a pcap file (raw IP) of UDP datagrams and TCP
//! segments, each TCP direction numbered on from where it left off and
//! acknowledging the other. `grasp decode --write-pcap` writes the
//! plaintext of a QUADS or TLS-multicast capture with it, and the tests
//! build captures of the vectors with it. Packets are built with
//! etherparse (checksums included) and written with pcap-file.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

/// Why a packet cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The two ends are not of one address family.
    #[error("{src} and {dst} are not of one address family")]
    Families {
        /// The source.
        src: SocketAddr,
        /// The destination.
        dst: SocketAddr,
    },
    /// The payload does not fit one IP packet.
    #[error("a {0}-byte payload does not fit one IP packet")]
    TooLong(usize),
    /// Building or writing the packet failed.
    #[error("cannot write the packet: {0}")]
    Write(String),
}

/// The first sequence number of each TCP direction.
const FIRST_SEQ: u32 = 1000;

/// A capture being written (in memory; [`Writer::finish`] gives its bytes).
#[derive(Debug)]
pub struct Writer {
    w: PcapWriter<Vec<u8>>,
    /// Next sequence number per TCP direction (source, destination).
    seq: HashMap<(SocketAddr, SocketAddr), u32>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

impl Writer {
    /// An empty capture of raw IP packets.
    pub fn new() -> Writer {
        let header = PcapHeader {
            datalink: DataLink::RAW,
            ..Default::default()
        };
        Writer {
            // Writing a header into a Vec cannot fail.
            w: PcapWriter::with_header(Vec::new(), header).expect("a pcap header into memory"),
            seq: HashMap::new(),
        }
    }

    /// A UDP datagram at time `t` (since the capture's epoch).
    pub fn udp(
        &mut self,
        t: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> Result<(), CaptureError> {
        let mut out = Vec::new();
        ip(src, dst)?
            .udp(src.port(), dst.port())
            .write(&mut out, payload)
            .map_err(|e| CaptureError::Write(e.to_string()))?;
        self.packet(t, &out)
    }

    /// A TCP segment (PSH, ACK) carrying `payload`, next in its direction.
    pub fn tcp(
        &mut self,
        t: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> Result<(), CaptureError> {
        let len = u32::try_from(payload.len()).map_err(|_| CaptureError::TooLong(payload.len()))?;
        let ack = *self.seq.get(&(dst, src)).unwrap_or(&FIRST_SEQ);
        let seq = *self.seq.get(&(src, dst)).unwrap_or(&FIRST_SEQ);
        let mut out = Vec::new();
        ip(src, dst)?
            .tcp(src.port(), dst.port(), seq, 65535)
            .ack(ack)
            .psh()
            .write(&mut out, payload)
            .map_err(|e| CaptureError::Write(e.to_string()))?;
        self.seq.insert((src, dst), seq.wrapping_add(len));
        self.packet(t, &out)
    }

    fn packet(&mut self, t: Duration, data: &[u8]) -> Result<(), CaptureError> {
        let len = u32::try_from(data.len()).map_err(|_| CaptureError::TooLong(data.len()))?;
        self.w
            .write_packet(&PcapPacket::new(t, len, data))
            .map(|_| ())
            .map_err(|e| CaptureError::Write(e.to_string()))
    }

    /// The capture's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.w.into_writer()
    }
}

/// The IP layer from `src` to `dst`: hop limit 1 to a multicast group (as
/// GRASP sends them), else 64.
fn ip(
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<etherparse::PacketBuilderStep<etherparse::IpHeaders>, CaptureError> {
    let hops = if dst.ip().is_multicast() { 1 } else { 64 };
    match (src.ip(), dst.ip()) {
        (IpAddr::V6(s), IpAddr::V6(d)) => Ok(PacketBuilder::ipv6(s.octets(), d.octets(), hops)),
        (IpAddr::V4(s), IpAddr::V4(d)) => Ok(PacketBuilder::ipv4(s.octets(), d.octets(), hops)),
        _ => Err(CaptureError::Families { src, dst }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_number_on_per_direction_and_read_back() {
        let a: SocketAddr = "[fd00:1::1]:4000".parse().unwrap();
        let b: SocketAddr = "[fd00:1::2]:7017".parse().unwrap();
        let mut w = Writer::new();
        w.tcp(Duration::ZERO, a, b, b"abc").unwrap();
        w.tcp(Duration::ZERO, b, a, b"xy").unwrap();
        w.tcp(Duration::ZERO, a, b, b"d").unwrap();
        w.udp(Duration::ZERO, a, "[ff02::13]:7017".parse().unwrap(), b"m")
            .unwrap();
        assert!(matches!(
            w.udp(Duration::ZERO, a, "10.0.0.1:1".parse().unwrap(), b""),
            Err(CaptureError::Families { .. })
        ));
        let bytes = w.finish();
        let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
        let mut seqs = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            let s = etherparse::SlicedPacket::from_ip(&p.data).unwrap();
            match s.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => {
                    seqs.push((t.sequence_number(), t.acknowledgment_number()))
                }
                Some(etherparse::TransportSlice::Udp(u)) => assert_eq!(u.payload(), b"m"),
                _ => panic!("a TCP segment or a UDP datagram"),
            }
        }
        assert_eq!(seqs, vec![(1000, 1000), (1000, 1003), (1003, 1002)]);
    }
}
