//! Decoding errors.

/// Why a message (or value) was rejected. Every variant names what was wrong
/// and, where it helps, where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message is longer than the configured maximum.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes (RFC 8990 §2.8.3); raise the limit only for objectives that allow larger messages")]
    TooLarge {
        /// Length of the message (or of the buffered bytes, when framing).
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The input ended inside a CBOR item.
    #[error("truncated CBOR: the input ends at byte {offset}, inside an item")]
    Truncated {
        /// Length of the input.
        offset: usize,
    },
    /// More bytes follow the single item expected.
    #[error("{extra} unexpected bytes after the item that ends at byte {offset}")]
    TrailingBytes {
        /// Where the item ended.
        offset: usize,
        /// How many bytes follow it.
        extra: usize,
    },
    /// The bytes are not well-formed CBOR.
    #[error("malformed CBOR at byte {offset}: {what}")]
    MalformedCbor {
        /// Offset of the offending head.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// Arrays, maps and tags nest deeper than allowed.
    #[error("CBOR nesting at byte {offset} exceeds the depth limit of {max}")]
    TooDeep {
        /// Offset of the item that is too deep.
        offset: usize,
        /// The limit in force.
        max: usize,
    },
    /// A text string is not valid UTF-8.
    #[error("text string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the string's head.
        offset: usize,
    },
    /// An element has the wrong CBOR type.
    #[error("{context}: expected {expected}, found {found} at byte {offset}")]
    UnexpectedType {
        /// Which element.
        context: &'static str,
        /// What the CDDL requires.
        expected: &'static str,
        /// What was there.
        found: &'static str,
        /// Offset of the element.
        offset: usize,
    },
    /// An integer is outside the range the CDDL allows.
    #[error("{context}: {value} is out of range (maximum {max})")]
    OutOfRange {
        /// Which element.
        context: &'static str,
        /// The value found.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// An address is not 4 (IPv4) or 16 (IPv6) bytes as its context requires.
    #[error("{context}: address of {len} bytes, expected {expected}")]
    BadAddress {
        /// Which element.
        context: &'static str,
        /// Its length.
        len: usize,
        /// The required length(s).
        expected: &'static str,
    },
    /// A required element is absent.
    #[error("{message} is missing its {field}")]
    Missing {
        /// Message or option being parsed.
        message: &'static str,
        /// The element that is absent.
        field: &'static str,
    },
    /// An option appears where it cannot be used.
    #[error("{context}: option {code} is not allowed here")]
    UnexpectedOption {
        /// Where.
        context: &'static str,
        /// The option code found.
        code: u64,
    },
    /// A message or option is structurally inconsistent.
    #[error("{context}: {what}")]
    Invalid {
        /// Where.
        context: &'static str,
        /// What is wrong.
        what: &'static str,
    },
}
