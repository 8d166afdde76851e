//! GRASP messages: types, strict decoding and graspy-identical encoding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use super::cbor::{self, Head, Reader};
use super::{
    DecodeError, Limits, Locator, MessageType, Objective, ObjectiveFlags, OptionType, Protocol,
    SessionId, Value,
};

/// `[M_DISCOVERY, session-id, initiator, objective]` (RFC 8990 §2.8.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// Session id.
    pub session_id: SessionId,
    /// Initiator address; disambiguates the session id, never a destination.
    pub initiator: IpAddr,
    /// The objective sought.
    pub objective: Objective,
    /// Elements after the ones the CDDL defines (options from extensions),
    /// in their order. Relays forward the received bytes themselves
    /// ([`with_loop_count`]).
    pub extensions: Vec<Value>,
}

/// Where an M_RESPONSE points: the responder's own locators, or an O_DIVERT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseTarget {
    /// One or more locator options of the responder itself.
    Locators(Vec<Locator>),
    /// `[O_DIVERT, +locator-option]`: the objective is elsewhere.
    Divert(Vec<Locator>),
}

/// `[M_RESPONSE, session-id, initiator, ttl, (+locator-option // divert-option), ?objective]`
/// (RFC 8990 §2.8.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Session id of the discovery answered.
    pub session_id: SessionId,
    /// Initiator of the discovery answered.
    pub initiator: IpAddr,
    /// Validity of the answer in milliseconds.
    pub ttl_ms: u32,
    /// Locators or divert.
    pub target: ResponseTarget,
    /// Optional objective (graspy's rapid synchronization puts the value here).
    pub objective: Option<Objective>,
    /// Unknown trailing options, kept in order (re-encoded last).
    pub extensions: Vec<Value>,
}

/// A message made of a session id and one objective: M_REQ_NEG, M_REQ_SYN,
/// M_NEGOTIATE and M_SYNCH (RFC 8990 §2.8.6, §2.8.7, §2.8.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionObjective {
    /// Session id.
    pub session_id: SessionId,
    /// The objective.
    pub objective: Objective,
    /// Unknown trailing elements.
    pub extensions: Vec<Value>,
}

impl SessionObjective {
    /// Session id and objective, no extensions.
    pub fn new(session_id: SessionId, objective: Objective) -> Self {
        SessionObjective {
            session_id,
            objective,
            extensions: Vec::new(),
        }
    }
}

/// The option of an M_END.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndOption {
    /// `[O_ACCEPT]`
    Accept,
    /// `[O_DECLINE, ?reason]`
    Decline {
        /// Reason text, if any.
        reason: Option<String>,
    },
    /// Some other option, kept verbatim.
    Unknown(Value),
}

/// `[M_END, session-id, accept-option / decline-option]` (RFC 8990 §2.8.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    /// Session id.
    pub session_id: SessionId,
    /// Accept or decline.
    pub option: EndOption,
    /// Unknown trailing elements.
    pub extensions: Vec<Value>,
}

/// `[M_WAIT, session-id, waiting-time]` (RFC 8990 §2.8.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Session id.
    pub session_id: SessionId,
    /// Milliseconds the receiver should wait.
    pub waiting_time_ms: u32,
    /// Unknown trailing elements.
    pub extensions: Vec<Value>,
}

/// One `[objective, (locator-option / [])]` of an M_FLOOD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedObjective {
    /// The flooded objective.
    pub objective: Objective,
    /// Its locator tag; `None` is the empty array (null tag).
    pub locator: Option<Locator>,
}

/// `[M_FLOOD, session-id, initiator, ttl, +[objective, (locator-option / [])]]`
/// (RFC 8990 §2.8.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flood {
    /// Session id.
    pub session_id: SessionId,
    /// Initiator address.
    pub initiator: IpAddr,
    /// Validity in milliseconds; 0 means indefinite.
    pub ttl_ms: u32,
    /// At least one tagged objective.
    pub tagged: Vec<TaggedObjective>,
    /// Unknown trailing elements.
    pub extensions: Vec<Value>,
}

/// `[M_INVALID, session-id, ?any]` (RFC 8990 §2.8.12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Session id copied from the offending message.
    pub session_id: SessionId,
    /// Diagnostic content.
    pub content: Option<Value>,
    /// Further elements (graspy keeps everything after the session id).
    pub extensions: Vec<Value>,
}

impl Invalid {
    /// An M_INVALID for session `session_id` saying `why` (as text), no
    /// extensions.
    pub fn new(session_id: SessionId, why: &str) -> Self {
        Invalid {
            session_id,
            content: Some(Value::from(why)),
            extensions: Vec::new(),
        }
    }
}

/// A message whose type this implementation does not know (RFC 8990 §2.8.2:
/// unicast ones may be answered with M_INVALID, multicast ones are dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownMessage {
    /// The message type code.
    pub msg_type: u8,
    /// Every element after the type, verbatim.
    pub elements: Vec<Value>,
}

/// One GRASP message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `[M_NOOP]`; anything after the type is ignored on receipt.
    Noop,
    /// M_DISCOVERY
    Discovery(Discovery),
    /// M_RESPONSE
    Response(Response),
    /// M_REQ_NEG
    ReqNeg(SessionObjective),
    /// M_REQ_SYN
    ReqSyn(SessionObjective),
    /// M_NEGOTIATE
    Negotiate(SessionObjective),
    /// M_END
    End(End),
    /// M_WAIT
    Wait(Wait),
    /// M_SYNCH
    Synch(SessionObjective),
    /// M_FLOOD
    Flood(Flood),
    /// M_INVALID
    Invalid(Invalid),
    /// A type this implementation does not know.
    Unknown(UnknownMessage),
}

impl Message {
    /// The message type.
    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Noop => MessageType::Noop,
            Message::Discovery(_) => MessageType::Discovery,
            Message::Response(_) => MessageType::Response,
            Message::ReqNeg(_) => MessageType::ReqNeg,
            Message::ReqSyn(_) => MessageType::ReqSyn,
            Message::Negotiate(_) => MessageType::Negotiate,
            Message::End(_) => MessageType::End,
            Message::Wait(_) => MessageType::Wait,
            Message::Synch(_) => MessageType::Synch,
            Message::Flood(_) => MessageType::Flood,
            Message::Invalid(_) => MessageType::Invalid,
            Message::Unknown(u) => MessageType::from(u.msg_type),
        }
    }

    /// The session id, for every message that has one.
    pub fn session_id(&self) -> Option<SessionId> {
        Some(match self {
            Message::Noop => return None,
            Message::Discovery(m) => m.session_id,
            Message::Response(m) => m.session_id,
            Message::ReqNeg(m) | Message::ReqSyn(m) | Message::Negotiate(m) | Message::Synch(m) => {
                m.session_id
            }
            Message::End(m) => m.session_id,
            Message::Wait(m) => m.session_id,
            Message::Flood(m) => m.session_id,
            Message::Invalid(m) => m.session_id,
            Message::Unknown(u) => {
                let first = u.elements.first()?.as_u64()?;
                SessionId(u32::try_from(first).ok()?)
            }
        })
    }

    /// Decodes one message with the default [`Limits`]. Values in the result
    /// share `buf`'s storage.
    pub fn decode(buf: &Bytes) -> Result<Message, DecodeError> {
        Self::decode_with(buf, &Limits::default())
    }

    /// Decodes one message from a slice (the values are copied once).
    pub fn decode_slice(buf: &[u8]) -> Result<Message, DecodeError> {
        Self::decode(&Bytes::copy_from_slice(buf))
    }

    /// Decodes exactly one message, enforcing `limits`.
    pub fn decode_with(buf: &Bytes, limits: &Limits) -> Result<Message, DecodeError> {
        parse_alone(buf, limits, |p| p.message())
    }

    /// Encodes the message.
    pub fn encode(&self) -> Bytes {
        encoded(|out| self.encode_into(out))
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        use cbor::{write_array, write_uint};
        let ty = u64::from(u8::from(self.msg_type()));
        match self {
            Message::Noop => {
                write_array(out, 1);
                write_uint(out, ty);
            }
            Message::Discovery(m) => {
                write_array(out, 4 + m.extensions.len());
                write_uint(out, ty);
                write_uint(out, u64::from(m.session_id.0));
                write_addr(out, &m.initiator);
                write_objective(out, &m.objective);
                write_values(out, &m.extensions);
            }
            Message::Response(m) => {
                let n_target = match &m.target {
                    ResponseTarget::Locators(l) => l.len(),
                    ResponseTarget::Divert(_) => 1,
                };
                write_array(
                    out,
                    4 + n_target + usize::from(m.objective.is_some()) + m.extensions.len(),
                );
                write_uint(out, ty);
                write_uint(out, u64::from(m.session_id.0));
                write_addr(out, &m.initiator);
                write_uint(out, u64::from(m.ttl_ms));
                match &m.target {
                    ResponseTarget::Locators(locs) => {
                        locs.iter().for_each(|l| write_locator(out, l))
                    }
                    ResponseTarget::Divert(locs) => {
                        write_array(out, 1 + locs.len());
                        write_uint(out, u64::from(u8::from(OptionType::Divert)));
                        locs.iter().for_each(|l| write_locator(out, l));
                    }
                }
                if let Some(o) = &m.objective {
                    write_objective(out, o);
                }
                write_values(out, &m.extensions);
            }
            Message::ReqNeg(m) | Message::ReqSyn(m) | Message::Negotiate(m) | Message::Synch(m) => {
                write_array(out, 3 + m.extensions.len());
                write_uint(out, ty);
                write_uint(out, u64::from(m.session_id.0));
                write_objective(out, &m.objective);
                write_values(out, &m.extensions);
            }
            Message::End(m) => {
                write_array(out, 3 + m.extensions.len());
                write_uint(out, ty);
                write_uint(out, u64::from(m.session_id.0));
                match &m.option {
                    EndOption::Accept => {
                        write_array(out, 1);
                        write_uint(out, u64::from(u8::from(OptionType::Accept)));
                    }
                    EndOption::Decline { reason } => {
                        write_array(out, 1 + usize::from(reason.is_some()));
                        write_uint(out, u64::from(u8::from(OptionType::Decline)));
                        if let Some(r) = reason {
                            cbor::write_text(out, r);
                        }
                    }
                    EndOption::Unknown(v) => out.extend_from_slice(v.as_cbor()),
                }
                write_values(out, &m.extensions);
            }
            Message::Wait(m) => {
                write_array(out, 3 + m.extensions.len());
                write_uint(out, ty);
                write_uint(out, u64::from(m.session_id.0));
                write_uint(out, u64::from(m.waiting_time_ms));
                write_values(out, &m.extensions);
            }
            Message::Flood(m) => {
                write_array(out, 4 + m.tagged.len() + m.extensions.len());
                write_uint(out, ty);
                write_uint(out, u64::from(m.session_id.0));
                write_addr(out, &m.initiator);
                write_uint(out, u64::from(m.ttl_ms));
                for t in &m.tagged {
                    write_array(out, 2);
                    write_objective(out, &t.objective);
                    match &t.locator {
                        Some(l) => write_locator(out, l),
                        None => write_array(out, 0),
                    }
                }
                write_values(out, &m.extensions);
            }
            Message::Invalid(m) => {
                write_array(
                    out,
                    2 + usize::from(m.content.is_some()) + m.extensions.len(),
                );
                write_uint(out, ty);
                write_uint(out, u64::from(m.session_id.0));
                if let Some(c) = &m.content {
                    out.extend_from_slice(c.as_cbor());
                }
                write_values(out, &m.extensions);
            }
            Message::Unknown(m) => {
                write_array(out, 1 + m.elements.len());
                write_uint(out, ty);
                write_values(out, &m.elements);
            }
        }
    }
}

fn write_values(out: &mut Vec<u8>, vs: &[Value]) {
    for v in vs {
        out.extend_from_slice(v.as_cbor());
    }
}

fn write_addr(out: &mut Vec<u8>, a: &IpAddr) {
    match a {
        IpAddr::V6(a) => cbor::write_bytes(out, &a.octets()),
        IpAddr::V4(a) => cbor::write_bytes(out, &a.octets()),
    }
}

/// What `write` appends, as a buffer of exactly its size. It is written into
/// a scratch buffer kept per thread and copied out once with
/// [`share`](super::share) (one allocation, where a `Vec` made into `Bytes`
/// and shared costs two). The scratch keeps at most 4 KiB.
fn encoded(write: impl Fn(&mut Vec<u8>)) -> Bytes {
    const KEEP: usize = 4096;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let scratch = SCRATCH.try_with(|s| {
        let mut out = s.try_borrow_mut().ok()?;
        out.clear();
        write(&mut out);
        let b = super::share(&out);
        if out.capacity() > KEEP {
            *out = Vec::new();
        }
        Some(b)
    });
    // Without the scratch (a thread's destructors run, or it is in use):
    // a buffer of its own.
    scratch.ok().flatten().unwrap_or_else(|| {
        let mut out = Vec::new();
        write(&mut out);
        super::share(&out)
    })
}

impl Objective {
    /// The objective's RFC 8990 encoding on its own, `[name, flags,
    /// loop-count, ?value]`: what the ASA protocol carries (values
    /// byte-exact).
    pub fn encode(&self) -> Bytes {
        encoded(|out| write_objective(out, self))
    }

    /// Reads exactly one objective in its RFC 8990 encoding, enforcing
    /// `limits` (the value shares `buf`'s storage).
    pub fn decode_with(buf: &Bytes, limits: &Limits) -> Result<Objective, DecodeError> {
        parse_alone(buf, limits, |p| p.objective("objective", ARRAY_DEPTH_MSG))
    }
}

impl Locator {
    /// The locator option's RFC 8990 encoding on its own, e.g.
    /// `[103, address, protocol, port]`.
    pub fn encode(&self) -> Bytes {
        encoded(|out| write_locator(out, self))
    }

    /// Reads exactly one locator option in its RFC 8990 encoding.
    pub fn decode_with(buf: &Bytes, limits: &Limits) -> Result<Locator, DecodeError> {
        parse_alone(buf, limits, |p| p.locator("locator", ARRAY_DEPTH_MSG))
    }
}

/// Runs `f` over `buf` as one whole item under `limits`: refuses it over
/// the size limit first, and with bytes left over after.
fn parse_alone<T>(
    buf: &Bytes,
    limits: &Limits,
    f: impl FnOnce(&mut Parser<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    if buf.len() > limits.max_message_size {
        return Err(DecodeError::TooLarge {
            len: buf.len(),
            max: limits.max_message_size,
        });
    }
    let mut p = Parser {
        r: Reader::new(buf, limits.max_depth),
        src: buf,
    };
    let out = f(&mut p)?;
    if p.r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            offset: p.r.pos(),
            extra: p.r.remaining(),
        });
    }
    Ok(out)
}

fn write_objective(out: &mut Vec<u8>, o: &Objective) {
    cbor::write_array(out, 3 + usize::from(o.value.is_some()));
    cbor::write_text(out, &o.name);
    cbor::write_uint(out, o.flags.bits());
    cbor::write_uint(out, u64::from(o.loop_count));
    if let Some(v) = &o.value {
        out.extend_from_slice(v.as_cbor());
    }
}

fn write_locator(out: &mut Vec<u8>, l: &Locator) {
    cbor::write_array(out, 4);
    cbor::write_uint(out, u64::from(u8::from(l.option_type())));
    match l {
        Locator::Ipv6 {
            addr,
            protocol,
            port,
        } => {
            cbor::write_bytes(out, &addr.octets());
            cbor::write_uint(out, u64::from(protocol.0));
            cbor::write_uint(out, u64::from(*port));
        }
        Locator::Ipv4 {
            addr,
            protocol,
            port,
        } => {
            cbor::write_bytes(out, &addr.octets());
            cbor::write_uint(out, u64::from(protocol.0));
            cbor::write_uint(out, u64::from(*port));
        }
        Locator::Fqdn {
            name,
            protocol,
            port,
        } => {
            cbor::write_text(out, name);
            cbor::write_uint(out, u64::from(protocol.0));
            cbor::write_uint(out, u64::from(*port));
        }
        Locator::Uri {
            uri,
            protocol,
            port,
        } => {
            cbor::write_text(out, uri);
            match protocol {
                Some(p) => cbor::write_uint(out, u64::from(p.0)),
                None => out.push(cbor::NULL),
            }
            match port {
                Some(p) => cbor::write_uint(out, u64::from(*p)),
                None => out.push(cbor::NULL),
            }
        }
    }
}

/// Position in an array being parsed (definite or indefinite length).
struct Seq {
    left: Option<u64>,
    ended: bool,
}

/// What the next array element looks like, from a peek.
enum Shape {
    /// An array whose first element is an unsigned integer (an option).
    Option(u64),
    /// An array whose first element is text (an objective).
    Objective,
    /// An array whose first element is an array (a flood's tagged pair).
    Pair,
    /// Anything else.
    Other,
}

struct Parser<'a> {
    r: Reader<'a>,
    src: &'a Bytes,
}

const ARRAY_DEPTH_MSG: usize = 1;

impl Parser<'_> {
    fn found(&self, h: &Head) -> &'static str {
        h.kind()
    }

    /// Reads an array head (the caller's depth is checked).
    fn array(&mut self, context: &'static str, depth: usize) -> Result<Seq, DecodeError> {
        let at = self.r.pos();
        match self.r.head()? {
            Head::Array(left) => {
                self.r.check_depth(at, depth)?;
                Ok(Seq { left, ended: false })
            }
            h => Err(DecodeError::UnexpectedType {
                context,
                expected: "array",
                found: self.found(&h),
                offset: at,
            }),
        }
    }

    /// Whether `seq` has another element; consumes the break of an
    /// indefinite-length array.
    fn more(&mut self, seq: &mut Seq) -> Result<bool, DecodeError> {
        if seq.ended {
            return Ok(false);
        }
        match &mut seq.left {
            Some(0) => {
                seq.ended = true;
                Ok(false)
            }
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => {
                if self.r.peek_head()? == Head::Break {
                    self.r.head()?;
                    seq.ended = true;
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
        }
    }

    fn require(
        &mut self,
        seq: &mut Seq,
        message: &'static str,
        field: &'static str,
    ) -> Result<(), DecodeError> {
        if self.more(seq)? {
            Ok(())
        } else {
            Err(DecodeError::Missing { message, field })
        }
    }

    /// Collects every remaining element of `seq` verbatim.
    fn rest(&mut self, seq: &mut Seq, depth: usize) -> Result<Vec<Value>, DecodeError> {
        let mut out = Vec::new();
        while self.more(seq)? {
            out.push(self.value(depth)?);
        }
        Ok(out)
    }

    /// Fails if `seq` has elements left.
    fn end(&mut self, seq: &mut Seq, context: &'static str) -> Result<(), DecodeError> {
        if self.more(seq)? {
            Err(DecodeError::Invalid {
                context,
                what: "more elements than the CDDL allows",
            })
        } else {
            Ok(())
        }
    }

    fn uint(&mut self, context: &'static str, max: u64) -> Result<u64, DecodeError> {
        let at = self.r.pos();
        match self.r.head()? {
            Head::Uint(v) if v <= max => Ok(v),
            Head::Uint(value) => Err(DecodeError::OutOfRange {
                context,
                value,
                max,
            }),
            h => Err(DecodeError::UnexpectedType {
                context,
                expected: "unsigned integer",
                found: self.found(&h),
                offset: at,
            }),
        }
    }

    fn session_id(&mut self, context: &'static str) -> Result<SessionId, DecodeError> {
        Ok(SessionId(self.uint(context, u64::from(u32::MAX))? as u32))
    }

    fn u32(&mut self, context: &'static str) -> Result<u32, DecodeError> {
        Ok(self.uint(context, u64::from(u32::MAX))? as u32)
    }

    fn u16(&mut self, context: &'static str) -> Result<u16, DecodeError> {
        Ok(self.uint(context, u64::from(u16::MAX))? as u16)
    }

    /// A text string (indefinite-length ones are joined).
    fn text(&mut self, context: &'static str) -> Result<String, DecodeError> {
        let at = self.r.pos();
        match self.r.head()? {
            Head::Text(Some(n)) => {
                let s = self.r.take(n)?;
                std::str::from_utf8(s)
                    .map(str::to_owned)
                    .map_err(|_| DecodeError::InvalidUtf8 { offset: at })
            }
            h @ Head::Text(None) => {
                // Validate the whole item first, then join its chunks.
                let mut check = self.r.clone();
                check.skip_string(at, h)?;
                let mut s = String::new();
                loop {
                    match self.r.head()? {
                        Head::Text(Some(n)) => {
                            let chunk = self.r.take(n)?;
                            s.push_str(
                                std::str::from_utf8(chunk)
                                    .map_err(|_| DecodeError::InvalidUtf8 { offset: at })?,
                            );
                        }
                        _ => return Ok(s),
                    }
                }
            }
            h => Err(DecodeError::UnexpectedType {
                context,
                expected: "text string",
                found: self.found(&h),
                offset: at,
            }),
        }
    }

    fn address(&mut self, context: &'static str) -> Result<IpAddr, DecodeError> {
        let at = self.r.pos();
        match self.r.head()? {
            Head::Bytes(Some(n)) => {
                let s = self.r.take(n)?;
                if let Ok(a) = <[u8; 16]>::try_from(s) {
                    Ok(IpAddr::V6(Ipv6Addr::from(a)))
                } else if let Ok(a) = <[u8; 4]>::try_from(s) {
                    Ok(IpAddr::V4(Ipv4Addr::from(a)))
                } else {
                    Err(DecodeError::BadAddress {
                        context,
                        len: s.len(),
                        expected: "4 or 16",
                    })
                }
            }
            h => Err(DecodeError::UnexpectedType {
                context,
                expected: "definite-length byte string",
                found: self.found(&h),
                offset: at,
            }),
        }
    }

    /// One complete item, kept verbatim (validated, depth-checked).
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let span = self.r.item_span(depth)?;
        Ok(Value::from_validated(self.src.slice(span)))
    }

    fn shape(&self) -> Result<Shape, DecodeError> {
        let mut probe = self.r.clone();
        match probe.head()? {
            Head::Array(Some(0)) => return Ok(Shape::Other),
            Head::Array(_) => {}
            _ => return Ok(Shape::Other),
        }
        Ok(match probe.head()? {
            Head::Uint(code) => Shape::Option(code),
            Head::Text(_) => Shape::Objective,
            Head::Array(_) => Shape::Pair,
            _ => Shape::Other,
        })
    }

    fn objective(&mut self, context: &'static str, depth: usize) -> Result<Objective, DecodeError> {
        let mut seq = self.array(context, depth)?;
        self.require(&mut seq, "objective", "name")?;
        let name = self.text("objective name")?;
        self.require(&mut seq, "objective", "flags")?;
        let flags = ObjectiveFlags::from_bits(self.uint("objective flags", u64::MAX)?);
        self.require(&mut seq, "objective", "loop count")?;
        let loop_count = self.uint("objective loop count", 255)? as u8;
        let value = if self.more(&mut seq)? {
            Some(self.value(depth + 1)?)
        } else {
            None
        };
        self.end(&mut seq, "objective")?;
        Ok(Objective {
            name,
            flags,
            loop_count,
            value,
        })
    }

    /// A locator option whose array head and code have been read.
    fn locator_body(
        &mut self,
        seq: &mut Seq,
        code: u64,
        context: &'static str,
    ) -> Result<Locator, DecodeError> {
        let ty = u8::try_from(code).map(OptionType::from);
        let loc = match ty {
            Ok(OptionType::Ipv6Locator) => {
                self.require(seq, "O_IPv6_LOCATOR", "address")?;
                let addr = match self.address("O_IPv6_LOCATOR address")? {
                    IpAddr::V6(a) => a,
                    IpAddr::V4(_) => {
                        return Err(DecodeError::BadAddress {
                            context: "O_IPv6_LOCATOR address",
                            len: 4,
                            expected: "16",
                        });
                    }
                };
                self.require(seq, "O_IPv6_LOCATOR", "protocol")?;
                let protocol = Protocol(self.u16("O_IPv6_LOCATOR protocol")?);
                self.require(seq, "O_IPv6_LOCATOR", "port")?;
                let port = self.u16("O_IPv6_LOCATOR port")?;
                Locator::Ipv6 {
                    addr,
                    protocol,
                    port,
                }
            }
            Ok(OptionType::Ipv4Locator) => {
                self.require(seq, "O_IPv4_LOCATOR", "address")?;
                let addr = match self.address("O_IPv4_LOCATOR address")? {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => {
                        return Err(DecodeError::BadAddress {
                            context: "O_IPv4_LOCATOR address",
                            len: 16,
                            expected: "4",
                        })
                    }
                };
                self.require(seq, "O_IPv4_LOCATOR", "protocol")?;
                let protocol = Protocol(self.u16("O_IPv4_LOCATOR protocol")?);
                self.require(seq, "O_IPv4_LOCATOR", "port")?;
                let port = self.u16("O_IPv4_LOCATOR port")?;
                Locator::Ipv4 {
                    addr,
                    protocol,
                    port,
                }
            }
            Ok(OptionType::FqdnLocator) => {
                self.require(seq, "O_FQDN_LOCATOR", "name")?;
                let name = self.text("O_FQDN_LOCATOR name")?;
                self.require(seq, "O_FQDN_LOCATOR", "protocol")?;
                let protocol = Protocol(self.u16("O_FQDN_LOCATOR protocol")?);
                self.require(seq, "O_FQDN_LOCATOR", "port")?;
                let port = self.u16("O_FQDN_LOCATOR port")?;
                Locator::Fqdn {
                    name,
                    protocol,
                    port,
                }
            }
            Ok(OptionType::UriLocator) => {
                self.require(seq, "O_URI_LOCATOR", "URI")?;
                let uri = self.text("O_URI_LOCATOR URI")?;
                // graspy builds `[106, uri]` inside O_DIVERT: tolerate the
                // missing protocol and port as null.
                let protocol = self
                    .nullable_u16(seq, "O_URI_LOCATOR protocol")?
                    .map(Protocol);
                let port = self.nullable_u16(seq, "O_URI_LOCATOR port")?;
                Locator::Uri {
                    uri,
                    protocol,
                    port,
                }
            }
            _ => return Err(DecodeError::UnexpectedOption { context, code }),
        };
        self.end(seq, "locator option")?;
        Ok(loc)
    }

    fn nullable_u16(
        &mut self,
        seq: &mut Seq,
        context: &'static str,
    ) -> Result<Option<u16>, DecodeError> {
        if !self.more(seq)? {
            return Ok(None);
        }
        if self.r.peek_head()? == Head::Simple(22) {
            self.r.head()?;
            return Ok(None);
        }
        self.u16(context).map(Some)
    }

    /// A whole locator option (array head included).
    fn locator(&mut self, context: &'static str, depth: usize) -> Result<Locator, DecodeError> {
        let mut seq = self.array(context, depth)?;
        self.require(&mut seq, context, "option code")?;
        let code = self.uint(context, u64::MAX)?;
        self.locator_body(&mut seq, code, context)
    }

    fn message(&mut self) -> Result<Message, DecodeError> {
        if self.r.remaining() == 0 {
            return Err(DecodeError::Truncated { offset: 0 });
        }
        let d = ARRAY_DEPTH_MSG;
        let mut seq = self.array("message", d)?;
        self.require(&mut seq, "message", "type")?;
        let ty = self.uint("message type", 255)? as u8;
        let e = d + 1; // depth of the message's elements
        let msg = match MessageType::from(ty) {
            MessageType::Noop => {
                // MUST be silently ignored (§2.8.13); tolerate `[0, sid]`.
                self.rest(&mut seq, e)?;
                Message::Noop
            }
            MessageType::Discovery => {
                self.require(&mut seq, "M_DISCOVERY", "session id")?;
                let session_id = self.session_id("M_DISCOVERY session id")?;
                self.require(&mut seq, "M_DISCOVERY", "initiator")?;
                let initiator = self.address("M_DISCOVERY initiator")?;
                self.require(&mut seq, "M_DISCOVERY", "objective")?;
                let objective = self.objective("M_DISCOVERY objective", e)?;
                Message::Discovery(Discovery {
                    session_id,
                    initiator,
                    objective,
                    extensions: self.rest(&mut seq, e)?,
                })
            }
            MessageType::Response => self.response(&mut seq, e)?,
            MessageType::ReqNeg => {
                Message::ReqNeg(self.session_objective(&mut seq, "M_REQ_NEG", e)?)
            }
            MessageType::ReqSyn => {
                Message::ReqSyn(self.session_objective(&mut seq, "M_REQ_SYN", e)?)
            }
            MessageType::Negotiate => {
                Message::Negotiate(self.session_objective(&mut seq, "M_NEGOTIATE", e)?)
            }
            MessageType::Synch => Message::Synch(self.session_objective(&mut seq, "M_SYNCH", e)?),
            MessageType::End => {
                self.require(&mut seq, "M_END", "session id")?;
                let session_id = self.session_id("M_END session id")?;
                self.require(&mut seq, "M_END", "accept or decline option")?;
                let option = self.end_option(e)?;
                Message::End(End {
                    session_id,
                    option,
                    extensions: self.rest(&mut seq, e)?,
                })
            }
            MessageType::Wait => {
                self.require(&mut seq, "M_WAIT", "session id")?;
                let session_id = self.session_id("M_WAIT session id")?;
                self.require(&mut seq, "M_WAIT", "waiting time")?;
                let waiting_time_ms = self.u32("M_WAIT waiting time")?;
                Message::Wait(Wait {
                    session_id,
                    waiting_time_ms,
                    extensions: self.rest(&mut seq, e)?,
                })
            }
            MessageType::Flood => self.flood(&mut seq, e)?,
            MessageType::Invalid => {
                self.require(&mut seq, "M_INVALID", "session id")?;
                let session_id = self.session_id("M_INVALID session id")?;
                let content = if self.more(&mut seq)? {
                    Some(self.value(e)?)
                } else {
                    None
                };
                Message::Invalid(Invalid {
                    session_id,
                    content,
                    extensions: self.rest(&mut seq, e)?,
                })
            }
            MessageType::Unknown(msg_type) => Message::Unknown(UnknownMessage {
                msg_type,
                elements: self.rest(&mut seq, e)?,
            }),
        };
        Ok(msg)
    }

    fn session_objective(
        &mut self,
        seq: &mut Seq,
        name: &'static str,
        e: usize,
    ) -> Result<SessionObjective, DecodeError> {
        self.require(seq, name, "session id")?;
        let session_id = self.session_id(name)?;
        self.require(seq, name, "objective")?;
        let objective = self.objective(name, e)?;
        Ok(SessionObjective {
            session_id,
            objective,
            extensions: self.rest(seq, e)?,
        })
    }

    fn end_option(&mut self, e: usize) -> Result<EndOption, DecodeError> {
        let Shape::Option(code) = self.shape()? else {
            let at = self.r.pos();
            let h = self.r.peek_head()?;
            return Err(DecodeError::UnexpectedType {
                context: "M_END option",
                expected: "option array",
                found: self.found(&h),
                offset: at,
            });
        };
        match u8::try_from(code).map(OptionType::from) {
            Ok(OptionType::Accept) => {
                let mut seq = self.array("O_ACCEPT", e)?;
                self.more(&mut seq)?;
                self.uint("O_ACCEPT", u64::MAX)?;
                self.end(&mut seq, "O_ACCEPT")?;
                Ok(EndOption::Accept)
            }
            Ok(OptionType::Decline) => {
                let mut seq = self.array("O_DECLINE", e)?;
                self.more(&mut seq)?;
                self.uint("O_DECLINE", u64::MAX)?;
                let reason = if self.more(&mut seq)? {
                    Some(self.text("O_DECLINE reason")?)
                } else {
                    None
                };
                self.end(&mut seq, "O_DECLINE")?;
                Ok(EndOption::Decline { reason })
            }
            _ => Ok(EndOption::Unknown(self.value(e)?)),
        }
    }

    fn response(&mut self, seq: &mut Seq, e: usize) -> Result<Message, DecodeError> {
        const M: &str = "M_RESPONSE";
        self.require(seq, M, "session id")?;
        let session_id = self.session_id("M_RESPONSE session id")?;
        self.require(seq, M, "initiator")?;
        let initiator = self.address("M_RESPONSE initiator")?;
        self.require(seq, M, "ttl")?;
        let ttl_ms = self.u32("M_RESPONSE ttl")?;
        let mut locators = Vec::new();
        let mut divert: Option<Vec<Locator>> = None;
        let mut objective = None;
        let mut extensions = Vec::new();
        while self.more(seq)? {
            match self.shape()? {
                Shape::Option(100) => {
                    if divert.is_some() {
                        return Err(DecodeError::Invalid {
                            context: M,
                            what: "more than one O_DIVERT",
                        });
                    }
                    let mut dseq = self.array("O_DIVERT", e)?;
                    self.more(&mut dseq)?;
                    self.uint("O_DIVERT", u64::MAX)?;
                    let mut locs = Vec::new();
                    while self.more(&mut dseq)? {
                        locs.push(self.locator("O_DIVERT", e + 1)?);
                    }
                    if locs.is_empty() {
                        return Err(DecodeError::Missing {
                            message: "O_DIVERT",
                            field: "locator option",
                        });
                    }
                    divert = Some(locs);
                }
                Shape::Option(103..=106) => locators.push(self.locator(M, e)?),
                Shape::Objective if objective.is_none() => {
                    objective = Some(self.objective("M_RESPONSE objective", e)?)
                }
                _ => extensions.push(self.value(e)?),
            }
        }
        let target = match (locators.is_empty(), divert) {
            (false, None) => ResponseTarget::Locators(locators),
            (true, Some(d)) => ResponseTarget::Divert(d),
            (true, None) => {
                return Err(DecodeError::Missing {
                    message: M,
                    field: "locator option or O_DIVERT",
                })
            }
            (false, Some(_)) => {
                return Err(DecodeError::Invalid {
                    context: M,
                    what: "has both locator options and an O_DIVERT",
                })
            }
        };
        Ok(Message::Response(Response {
            session_id,
            initiator,
            ttl_ms,
            target,
            objective,
            extensions,
        }))
    }

    fn flood(&mut self, seq: &mut Seq, e: usize) -> Result<Message, DecodeError> {
        const M: &str = "M_FLOOD";
        self.require(seq, M, "session id")?;
        let session_id = self.session_id("M_FLOOD session id")?;
        self.require(seq, M, "initiator")?;
        let initiator = self.address("M_FLOOD initiator")?;
        self.require(seq, M, "ttl")?;
        let ttl_ms = self.u32("M_FLOOD ttl")?;
        let mut tagged = Vec::new();
        let mut extensions = Vec::new();
        // The CDDL: `+[objective, (locator-option / [])]` right after the
        // ttl, then only trailing options (§2.8.2; the signed-flood draft
        // appends its O_COSE_SIGN there). Anything else is refused rather
        // than reordered: a relay must forward what it got.
        while self.more(seq)? {
            if !matches!(self.shape()?, Shape::Pair) {
                if tagged.is_empty() {
                    return Err(DecodeError::Invalid {
                        context: M,
                        what: "the element after the ttl is not a tagged objective [objective, locator or []]",
                    });
                }
                extensions.push(self.value(e)?);
                continue;
            }
            if !extensions.is_empty() {
                return Err(DecodeError::Invalid {
                    context: M,
                    what: "a tagged objective follows an option; options come after every tagged objective",
                });
            }
            let mut pair = self.array("M_FLOOD tagged objective", e)?;
            self.more(&mut pair)?;
            let objective = self.objective("M_FLOOD objective", e + 1)?;
            self.require(&mut pair, "M_FLOOD tagged objective", "locator or []")?;
            let mut lseq = self.array("M_FLOOD locator", e + 1)?;
            let locator = if self.more(&mut lseq)? {
                let code = self.uint("M_FLOOD locator option code", u64::MAX)?;
                Some(self.locator_body(&mut lseq, code, "M_FLOOD locator")?)
            } else {
                None
            };
            self.end(&mut pair, "M_FLOOD tagged objective")?;
            tagged.push(TaggedObjective { objective, locator });
        }
        if tagged.is_empty() {
            return Err(DecodeError::Missing {
                message: M,
                field: "tagged objective",
            });
        }
        Ok(Message::Flood(Flood {
            session_id,
            initiator,
            ttl_ms,
            tagged,
            extensions,
        }))
    }
}

/// The encoded M_DISCOVERY or M_FLOOD `raw` with the loop count of its
/// (first) objective set to `loop_count`, every other byte as it was: what
/// a relay forwards (RFC 8990 §2.5.4.4, §2.5.6.2). Re-encoding the decoded
/// message instead could change encodings the decoder accepts (integer
/// widths, indefinite lengths) and whatever a signature covers.
///
/// `raw` must be a message [`Message::decode`] accepted.
pub fn with_loop_count(raw: &[u8], loop_count: u8) -> Result<Bytes, DecodeError> {
    let mut r = Reader::new(raw, crate::wire::DEFAULT_MAX_DEPTH);
    let not = |what| DecodeError::Invalid {
        context: "relaying",
        what,
    };
    if !matches!(r.head()?, Head::Array(_)) {
        return Err(not("not a message array"));
    }
    let flood = match r.head()? {
        Head::Uint(1) => false,
        Head::Uint(9) => true,
        _ => return Err(not("only M_DISCOVERY and M_FLOOD are relayed")),
    };
    r.skip(2)?; // session id
    r.skip(2)?; // initiator
    if flood {
        r.skip(2)?; // ttl
        if !matches!(r.head()?, Head::Array(_)) {
            return Err(not("M_FLOOD without a tagged objective"));
        }
    }
    if !matches!(r.head()?, Head::Array(_)) {
        return Err(not("no objective"));
    }
    r.skip(3)?; // name
    r.skip(3)?; // flags
    let start = r.pos();
    if !matches!(r.head()?, Head::Uint(_)) {
        return Err(not("the loop count is not an integer"));
    }
    let end = r.pos();
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..start]);
    cbor::write_uint(&mut out, u64::from(loop_count));
    out.extend_from_slice(&raw[end..]);
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(hex_str: &str) -> Message {
        let b = Bytes::from(hex::decode(hex_str).unwrap());
        let m = Message::decode(&b).unwrap();
        assert_eq!(m.encode(), b, "re-encode of {m:?}");
        m
    }

    /// peek_type's one-byte fast path and its general path agree.
    #[test]
    fn peek_type_reads_short_and_long_heads() {
        use crate::wire::peek_type;
        // [9, 1, ...]: M_REQ_SYN in a small array.
        assert_eq!(peek_type(&hex::decode("830901f6").unwrap()), Some(9));
        // [99, ...]: M_INVALID's type takes a second byte.
        assert_eq!(peek_type(&hex::decode("8318630102").unwrap()), Some(99));
        // An indefinite array and a 24-item array take the general path.
        assert_eq!(peek_type(&hex::decode("9f03ff").unwrap()), Some(3));
        assert_eq!(peek_type(&hex::decode("981802").unwrap()), Some(2));
        // Not a message: a map, a lone array head, nothing.
        assert_eq!(peek_type(&hex::decode("a10102").unwrap()), None);
        assert_eq!(peek_type(&hex::decode("83").unwrap()), None);
        assert_eq!(peek_type(&[]), None);
    }

    /// Objectives and locators alone (the ASA protocol's `bstr .cbor`
    /// forms): byte-exact round trips, values untouched, and whole items
    /// only.
    #[test]
    fn objectives_and_locators_alone() {
        let lim = Limits::default();
        // ["EX2", 5, 6, 24(h'01ff')], graspy's tag-24 byte value: kept as sent.
        let o = Bytes::from(hex::decode("84634558320506d8184201ff").unwrap());
        let obj = Objective::decode_with(&o, &lim).unwrap();
        assert_eq!(obj.name, "EX2");
        assert_eq!(obj.loop_count, 6);
        assert_eq!(obj.encode(), o, "byte-exact");
        let bare = Objective::new("EX.n", ObjectiveFlags::from_bits(3));
        assert_eq!(Objective::decode_with(&bare.encode(), &lim).unwrap(), bare);
        let l = Locator::tcp6("fd00:1::2".parse().unwrap(), 7017);
        assert_eq!(Locator::decode_with(&l.encode(), &lim).unwrap(), l);
        // Trailing bytes, truncation, the wrong shape, over the size limit.
        let mut extra = bare.encode().to_vec();
        extra.push(0);
        assert!(Objective::decode_with(&Bytes::from(extra), &lim).is_err());
        let enc = l.encode();
        assert!(Locator::decode_with(&enc.slice(..enc.len() - 1), &lim).is_err());
        assert!(Locator::decode_with(&bare.encode(), &lim).is_err());
        let small = Limits {
            max_message_size: 4,
            ..Limits::default()
        };
        assert!(matches!(
            Objective::decode_with(&bare.encode(), &small),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn rfc8990_appendix_a() {
        let m = rt("84011a00d4d7485020010db8f000baaa28ccdc4c970367818463455831050200");
        let Message::Discovery(d) = m else { panic!() };
        assert_eq!(d.session_id, SessionId(13948744));
        assert_eq!(d.objective.name, "EX1");
        assert_eq!(d.objective.value.unwrap().as_u64(), Some(0));
        rt("85021a00d4d7485020010db8f000baaa28ccdc4c9703678119ea608418675020010db8f000baaaf000baaaf000baaa0619c123");
        rt("85091a00357b4e5020010db8f000baaa28ccdc4c97036781192710828463455831050282704578616d706c6520312076616c75653d186480");
    }

    #[test]
    fn typed_errors() {
        type Check = fn(&DecodeError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, DecodeError::Truncated { .. })),
            ("00", |e| matches!(e, DecodeError::UnexpectedType { .. })),
            ("8101", |e| matches!(e, DecodeError::Missing { .. })),
            ("8319010000", |e| {
                matches!(e, DecodeError::OutOfRange { .. })
            }),
            ("83041b0000000100000000", |e| {
                matches!(e, DecodeError::OutOfRange { .. })
            }),
            ("8303018361610019010000", |e| {
                matches!(e, DecodeError::OutOfRange { .. })
            }),
            ("840101430102038361610000", |e| {
                matches!(e, DecodeError::BadAddress { .. })
            }),
            ("83060105", |e| {
                matches!(e, DecodeError::UnexpectedType { .. })
            }),
            ("840201440102030400", |e| {
                matches!(e, DecodeError::Missing { .. })
            }),
            ("8100ff", |e| matches!(e, DecodeError::TrailingBytes { .. })),
        ];
        for (h, ok) in cases {
            let e = Message::decode_slice(&hex::decode(h).unwrap()).unwrap_err();
            assert!(ok(&e), "{h}: {e}");
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn unknown_type_and_options_are_typed() {
        // [42, 7, "x"]
        let m = rt("83182a076178");
        assert_eq!(m.msg_type(), MessageType::Unknown(42));
        assert_eq!(m.session_id(), Some(SessionId(7)));
        // M_END with an unknown option [200, 1]
        let m = rt("8306078218c801");
        assert!(matches!(
            m,
            Message::End(End {
                option: EndOption::Unknown(_),
                ..
            })
        ));
        // M_RESPONSE with a trailing unknown option [107, h'00'] is kept.
        let m = rt("86020744010203041903e88418684400000000061901bb82186b4100");
        let Message::Response(r) = m else { panic!() };
        assert_eq!(r.extensions.len(), 1);
    }

    #[test]
    fn noop_variants() {
        assert_eq!(rt("8100"), Message::Noop);
        assert_eq!(
            Message::decode_slice(&[0x82, 0x00, 0x05]).unwrap(),
            Message::Noop
        );
        assert_eq!(
            Message::decode_slice(&[0x9f, 0x00, 0xff]).unwrap(),
            Message::Noop
        );
    }

    #[test]
    fn indefinite_lengths_are_accepted() {
        // [_ 4, 1, [_ "E", 5, 6, null]] with an indefinite text name.
        let b = hex::decode("9f0401 9f7f6145ff0506f6ff ff".replace(' ', "")).unwrap();
        let m = Message::decode_slice(&b).unwrap();
        let Message::ReqSyn(s) = m else { panic!() };
        assert_eq!(s.objective.name, "E");
        assert!(s.objective.value.unwrap().is_null());
    }

    #[test]
    fn too_large() {
        let limits = Limits {
            max_message_size: 4,
            ..Limits::default()
        };
        let b = Bytes::from_static(&[0x83, 0x07, 0x01, 0x02, 0x00]);
        assert!(matches!(
            Message::decode_with(&b, &limits),
            Err(DecodeError::TooLarge { len: 5, max: 4 })
        ));
    }
}
