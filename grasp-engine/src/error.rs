//! RFC 8991 error codes (Appendix A) and the API's error type.

use std::fmt;

macro_rules! codes {
    ($($var:ident = $n:expr, $name:expr, $text:expr;)*) => {
        /// An RFC 8991 error code (Appendix A). `Ok` is 0; the numbers are the
        /// RFC's and graspy's. Codes from 100 are not RFC 8991's: a GRASP
        /// core in another process (graspd's ASA socket) gives them, and an
        /// ASA sees them the same whichever core it uses.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(#[doc = $text] $var,)*
        }

        impl ErrorCode {
            /// The numeric code.
            pub fn code(self) -> u32 {
                match self { $(ErrorCode::$var => $n,)* }
            }
            /// The RFC's short name, e.g. `noListener`.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$var => $name,)* }
            }
            /// The RFC's readable text.
            pub fn text(self) -> &'static str {
                match self { $(ErrorCode::$var => $text,)* }
            }
            /// The code with this number, if any.
            pub fn from_code(n: u32) -> Option<ErrorCode> {
                match n { $($n => Some(ErrorCode::$var),)* _ => None }
            }
        }
    };
}

codes! {
    Ok = 0, "ok", "OK";
    Declined = 1, "declined", "Declined";
    NoReply = 2, "noReply", "No reply";
    Unspec = 3, "unspec", "Unspecified error";
    AsaFull = 4, "ASAfull", "ASA registry full";
    DupAsa = 5, "dupASA", "Duplicate ASA name";
    NoAsa = 6, "noASA", "ASA not registered";
    NotYourAsa = 7, "notYourASA", "ASA registered but not by you";
    NotBoth = 8, "notBoth", "Objective cannot support both negotiation and synchronization";
    NotDry = 9, "notDry", "Dry-run allowed only with negotiation";
    NotOverlap = 10, "notOverlap", "Overlap not supported by this implementation";
    ObjFull = 11, "objFull", "Objective registry full";
    ObjReg = 12, "objReg", "Objective already registered";
    NotYourObj = 13, "notYourObj", "Objective not registered by this ASA";
    NotObj = 14, "notObj", "Objective not found";
    NotNeg = 15, "notNeg", "Objective not negotiable";
    NoSecurity = 16, "noSecurity", "No security";
    NoDiscReply = 17, "noDiscReply", "No reply to discovery";
    SockErrNegRq = 18, "sockErrNegRq", "Socket error sending negotiation request";
    NoSession = 19, "noSession", "No session";
    NoSocket = 20, "noSocket", "No socket";
    LoopExhausted = 21, "loopExhausted", "Loop count exhausted";
    SockErrNegStep = 22, "sockErrNegStep", "Socket error sending negotiation step";
    NoPeer = 23, "noPeer", "No negotiation peer";
    CborFail = 24, "CBORfail", "CBOR decode failure";
    InvalidNeg = 25, "invalidNeg", "Invalid Negotiate message";
    InvalidEnd = 26, "invalidEnd", "Invalid end message";
    NoNegReply = 27, "noNegReply", "No reply to negotiation step";
    NoValidStep = 28, "noValidStep", "No valid reply to negotiation step";
    SockErrWait = 29, "sockErrWait", "Socket error sending wait message";
    SockErrEnd = 30, "sockErrEnd", "Socket error sending end message";
    IdClash = 31, "IDclash", "Incoming request Session ID clash";
    NotSynch = 32, "notSynch", "Not a synchronization objective";
    NotFloodDisc = 33, "notFloodDisc", "Not flooded and no reply to discovery";
    SockErrSynRq = 34, "sockErrSynRq", "Socket error sending synch request";
    NoListener = 35, "noListener", "No synch listener";
    NoSynchReply = 36, "noSynchReply", "No reply to synchronization request";
    NoValidSynch = 37, "noValidSynch", "No valid reply to synchronization request";
    InvalidLoc = 38, "invalidLoc", "Invalid locator";
    BadRequest = 100, "badRequest", "Bad request: parameters missing, of the wrong type or out of range";
    Unsupported = 101, "unsupported", "Not supported by this GRASP core";
    NotAuthorized = 102, "notAuthorized", "Not authorized by the GRASP core's policy";
    Cancelled = 103, "cancelled", "Cancelled";
    TooMany = 104, "tooMany", "Too many (a limit of the GRASP core)";
    TooLarge = 105, "tooLarge", "Too large for the GRASP core's limits";
    NotHello = 106, "notHello", "Not greeted: hello comes first";
    NoCore = 107, "noCore", "No GRASP core: graspd's ASA socket is not answering";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code(), self.name(), self.text())
    }
}

/// An error from an RFC 8991 API call: the RFC's code plus what happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("GRASP error {code}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
pub struct ApiError {
    /// The RFC 8991 code.
    pub code: ErrorCode,
    /// Details for people (never keys or payloads).
    pub detail: String,
}

impl ApiError {
    /// An error with a code and details.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        ApiError {
            code,
            detail: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_texts() {
        for n in 0..=38 {
            let c = ErrorCode::from_code(n).unwrap();
            assert_eq!(c.code(), n);
        }
        assert_eq!(ErrorCode::from_code(39), None);
        assert_eq!(ErrorCode::from_code(104), Some(ErrorCode::TooMany));
        assert_eq!(ErrorCode::from_code(107), Some(ErrorCode::NoCore));
        assert_eq!(ErrorCode::from_code(108), None);
        assert_eq!(ErrorCode::NoListener.code(), 35);
        assert_eq!(ErrorCode::IdClash.name(), "IDclash");
        let e = ApiError::new(ErrorCode::NoListener, "closed at once by [fd00::2]:7017");
        assert_eq!(
            e.to_string(),
            "GRASP error 35 (noListener): No synch listener: closed at once by [fd00::2]:7017"
        );
    }
}
