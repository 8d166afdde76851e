//! The GRASP wire format (RFC 8990 §2.8, §2.9, §2.10 and the CDDL of §4).
//!
//! [`Message::decode`] parses one message strictly and within [`Limits`];
//! [`Message::encode`] writes the bytes graspy writes for the same content
//! (definite lengths, shortest integer heads, elements in CDDL order).
//! [`StreamDecoder`] splits a TCP byte stream into messages.
//!
//! ```
//! use grasp_engine::wire::{Message, Objective, ObjectiveFlags, SessionId};
//!
//! let req = Message::ReqSyn(grasp_engine::wire::SessionObjective::new(
//!     SessionId(0x471ead5d),
//!     Objective::new("EX.sync", ObjectiveFlags::DISC | ObjectiveFlags::SYNCH)
//!         .with_value(grasp_engine::wire::Value::null()),
//! ));
//! let bytes = req.encode();
//! assert_eq!(bytes.len(), 19);
//! assert_eq!(Message::decode(&bytes).unwrap(), req);
//! ```

mod buf;
mod cbor;
pub mod envelope;
mod error;
mod framing;
mod message;
mod value;

pub use buf::share;
pub use error::DecodeError;
pub use framing::StreamDecoder;
pub use message::{
    with_loop_count, Discovery, End, EndOption, Flood, Invalid, Message, Response, ResponseTarget,
    SessionObjective, TaggedObjective, UnknownMessage, Wait,
};
pub use value::{Value, ValueError, TAG_ENCODED_CBOR};

/// The type number of an encoded GRASP message (its array's first item),
/// without decoding the rest; `None` if it does not start like one.
pub fn peek_type(msg: &[u8]) -> Option<u64> {
    // Nearly every message is a short array (one head byte, 0x80..=0x97)
    // whose type fits its head byte (< 24, all but M_INVALID): read those two
    // bytes directly; this runs for every message sent and received.
    if let [0x80..=0x97, t @ 0..=0x17, ..] = *msg {
        return Some(u64::from(t));
    }
    let mut r = cbor::Reader::new(msg, 1);
    match (r.head(), r.head()) {
        (Ok(cbor::Head::Array(_)), Ok(cbor::Head::Uint(t))) => Some(t),
        _ => None,
    }
}

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::{BitOr, BitOrAssign};

/// `ALL_GRASP_NEIGHBORS`, the IPv6 link-local multicast group (RFC 8990 §2.6).
pub const ALL_GRASP_NEIGHBORS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x13);
/// `ALL_GRASP_NEIGHBORS` for IPv4 (defined by RFC 8990; unused by graspy).
pub const ALL_GRASP_NEIGHBORS_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 119);
/// `GRASP_LISTEN_PORT` (RFC 8990 §2.6, IANA), UDP and TCP.
pub const GRASP_LISTEN_PORT: u16 = 7017;
/// `GRASP_DEF_TIMEOUT` in milliseconds.
pub const GRASP_DEF_TIMEOUT_MS: u32 = 60_000;
/// `GRASP_DEF_LOOPCT`, the default loop count.
pub const GRASP_DEF_LOOPCT: u8 = 6;
/// `GRASP_DEF_MAX_SIZE`, the default maximum message size in bytes.
pub const GRASP_DEF_MAX_SIZE: usize = 2048;
/// Default CBOR nesting limit of [`Limits`]. The message structure itself
/// uses four levels (flood, tagged pair, objective, value).
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// Bounds applied while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes (RFC 8990 §2.8.3). Default
    /// [`GRASP_DEF_MAX_SIZE`].
    pub max_message_size: usize,
    /// Deepest CBOR nesting accepted, counting the message array as 1; at
    /// most 64 (a larger value acts as 64).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: GRASP_DEF_MAX_SIZE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// A 32-bit GRASP session id (RFC 8990 §2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u32);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:expr, $text:expr;)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A code this implementation does not know.
            Unknown(u8),
        }
        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v { $($val => $name::$var,)* other => $name::Unknown(other) }
            }
        }
        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                match v { $($name::$var => $val,)* $name::Unknown(other) => other }
            }
        }
        impl $name {
            /// Every code this implementation knows, in the order above.
            pub const ALL: &'static [$name] = &[$($name::$var),*];

            /// Its registered name; `None` for an unknown code.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $($name::$var => Some($text),)*
                    $name::Unknown(_) => None,
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "unknown({})", u8::from(*self)),
                }
            }
        }
    };
}

code_enum! {
    /// GRASP message types (RFC 8990 §2.8, IANA "GRASP Messages and Options").
    MessageType {
        /// `M_NOOP`
        Noop = 0, "M_NOOP";
        /// `M_DISCOVERY`
        Discovery = 1, "M_DISCOVERY";
        /// `M_RESPONSE`
        Response = 2, "M_RESPONSE";
        /// `M_REQ_NEG`
        ReqNeg = 3, "M_REQ_NEG";
        /// `M_REQ_SYN`
        ReqSyn = 4, "M_REQ_SYN";
        /// `M_NEGOTIATE`
        Negotiate = 5, "M_NEGOTIATE";
        /// `M_END`
        End = 6, "M_END";
        /// `M_WAIT`
        Wait = 7, "M_WAIT";
        /// `M_SYNCH`
        Synch = 8, "M_SYNCH";
        /// `M_FLOOD`
        Flood = 9, "M_FLOOD";
        /// `M_INVALID`
        Invalid = 99, "M_INVALID";
    }
}

code_enum! {
    /// GRASP option codes (RFC 8990 §2.9).
    OptionType {
        /// `O_DIVERT`
        Divert = 100, "O_DIVERT";
        /// `O_ACCEPT`
        Accept = 101, "O_ACCEPT";
        /// `O_DECLINE`
        Decline = 102, "O_DECLINE";
        /// `O_IPv6_LOCATOR`
        Ipv6Locator = 103, "O_IPv6_LOCATOR";
        /// `O_IPv4_LOCATOR`
        Ipv4Locator = 104, "O_IPv4_LOCATOR";
        /// `O_FQDN_LOCATOR`
        FqdnLocator = 105, "O_FQDN_LOCATOR";
        /// `O_URI_LOCATOR`
        UriLocator = 106, "O_URI_LOCATOR";
    }
}

/// Objective flag bits (RFC 8990 §2.10.2). Unknown bits are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ObjectiveFlags(u64);

impl ObjectiveFlags {
    /// `F_DISC`: valid for discovery.
    pub const DISC: ObjectiveFlags = ObjectiveFlags(1 << 0);
    /// `F_NEG`: valid for negotiation.
    pub const NEG: ObjectiveFlags = ObjectiveFlags(1 << 1);
    /// `F_SYNCH`: valid for synchronization.
    pub const SYNCH: ObjectiveFlags = ObjectiveFlags(1 << 2);
    /// `F_NEG_DRY`: negotiation is a dry run.
    pub const NEG_DRY: ObjectiveFlags = ObjectiveFlags(1 << 3);

    /// No flags.
    pub const fn empty() -> Self {
        ObjectiveFlags(0)
    }
    /// From the wire integer.
    pub const fn from_bits(bits: u64) -> Self {
        ObjectiveFlags(bits)
    }
    /// The wire integer.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: ObjectiveFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Sets or clears the bits of `other`.
    pub fn set(&mut self, other: ObjectiveFlags, on: bool) {
        if on {
            self.0 |= other.0
        } else {
            self.0 &= !other.0
        }
    }
}

impl BitOr for ObjectiveFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        ObjectiveFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for ObjectiveFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0
    }
}

impl fmt::Debug for ObjectiveFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectiveFlags({} = ", self.0)?;
        let mut first = true;
        for (bit, name) in [
            (Self::DISC, "F_DISC"),
            (Self::NEG, "F_NEG"),
            (Self::SYNCH, "F_SYNCH"),
            (Self::NEG_DRY, "F_NEG_DRY"),
        ] {
            if self.contains(bit) {
                if !first {
                    f.write_str("|")?;
                }
                first = false;
                f.write_str(name)?;
            }
        }
        if first {
            f.write_str("none")?;
        }
        f.write_str(")")
    }
}

/// A GRASP objective: `[name, flags, loop-count, ?value]` (RFC 8990 §2.10).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Objective {
    /// The name, compared byte by byte.
    pub name: String,
    /// Flag bits.
    pub flags: ObjectiveFlags,
    /// Loop count, 0..=255.
    pub loop_count: u8,
    /// The value. `None` means the element is absent (a discovery-only
    /// objective); `Some(Value::null())` is an explicit `null`, which is what
    /// graspy sends when it has no value.
    pub value: Option<Value>,
}

impl Objective {
    /// An objective with the default loop count and no value.
    pub fn new(name: impl Into<String>, flags: ObjectiveFlags) -> Self {
        Objective {
            name: name.into(),
            flags,
            loop_count: GRASP_DEF_LOOPCT,
            value: None,
        }
    }

    /// Sets the value.
    pub fn with_value(mut self, value: impl Into<Value>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sets the loop count.
    pub fn with_loop_count(mut self, loop_count: u8) -> Self {
        self.loop_count = loop_count;
        self
    }
}

/// An IP protocol number from the IANA registry, as in locator options
/// (6 = TCP, 17 = UDP; larger values are proposed by later drafts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u16);

impl Protocol {
    /// `IPPROTO_TCP`
    pub const TCP: Protocol = Protocol(6);
    /// `IPPROTO_UDP`
    pub const UDP: Protocol = Protocol(17);
}

/// A locator option (RFC 8990 §2.9.5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Locator {
    /// `O_IPv6_LOCATOR`
    Ipv6 {
        /// Address.
        addr: Ipv6Addr,
        /// Transport protocol.
        protocol: Protocol,
        /// Port.
        port: u16,
    },
    /// `O_IPv4_LOCATOR`
    Ipv4 {
        /// Address.
        addr: Ipv4Addr,
        /// Transport protocol.
        protocol: Protocol,
        /// Port.
        port: u16,
    },
    /// `O_FQDN_LOCATOR`
    Fqdn {
        /// Domain name.
        name: String,
        /// Transport protocol.
        protocol: Protocol,
        /// Port.
        port: u16,
    },
    /// `O_URI_LOCATOR`; protocol and port may be null when the URI implies them.
    Uri {
        /// The URI.
        uri: String,
        /// Transport protocol, if given.
        protocol: Option<Protocol>,
        /// Port, if given.
        port: Option<u16>,
    },
}

impl Locator {
    /// An IPv6 TCP locator, the kind GRASP uses for its own sessions.
    pub fn tcp6(addr: Ipv6Addr, port: u16) -> Self {
        Locator::Ipv6 {
            addr,
            protocol: Protocol::TCP,
            port,
        }
    }

    /// The option code of this locator.
    pub fn option_type(&self) -> OptionType {
        match self {
            Locator::Ipv6 { .. } => OptionType::Ipv6Locator,
            Locator::Ipv4 { .. } => OptionType::Ipv4Locator,
            Locator::Fqdn { .. } => OptionType::FqdnLocator,
            Locator::Uri { .. } => OptionType::UriLocator,
        }
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Locator::Ipv6 {
                addr,
                protocol,
                port,
            } => write!(f, "[{addr}]:{port}/{}", protocol.0),
            Locator::Ipv4 {
                addr,
                protocol,
                port,
            } => write!(f, "{addr}:{port}/{}", protocol.0),
            Locator::Fqdn {
                name,
                protocol,
                port,
            } => write!(f, "{name}:{port}/{}", protocol.0),
            Locator::Uri { uri, .. } => f.write_str(uri),
        }
    }
}
