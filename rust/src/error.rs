//! Error types, one per module. Every error says what was wrong and where
//! (byte offset for SIP, line number for SDP).

use std::fmt;

/// A malformed SIP message or SIP header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipError {
    /// The message is larger than [`crate::sip::MAX_MESSAGE_SIZE`].
    TooLarge { size: usize, max: usize },
    /// Syntax error in the message at a byte offset.
    Syntax { offset: usize, msg: String },
    /// Content-Length is not a number, or larger than the available bytes.
    ContentLength { offset: usize, msg: String },
    /// A header value (URI, name-addr, Via) could not be parsed.
    Value {
        what: &'static str,
        value: String,
        msg: String,
    },
}

impl SipError {
    /// Byte offset in the message, when the error has one.
    pub fn offset(&self) -> Option<usize> {
        match self {
            SipError::Syntax { offset, .. } | SipError::ContentLength { offset, .. } => {
                Some(*offset)
            }
            SipError::TooLarge { max, .. } => Some(*max),
            SipError::Value { .. } => None,
        }
    }

    pub(crate) fn syntax(offset: usize, msg: impl Into<String>) -> Self {
        SipError::Syntax {
            offset,
            msg: msg.into(),
        }
    }

    pub(crate) fn value(what: &'static str, value: &str, msg: impl Into<String>) -> Self {
        SipError::Value {
            what,
            value: value.to_string(),
            msg: msg.into(),
        }
    }
}

impl fmt::Display for SipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SipError::TooLarge { size, max } => {
                write!(
                    f,
                    "SIP message of {size} bytes exceeds the maximum of {max} bytes"
                )
            }
            SipError::Syntax { offset, msg } => write!(f, "{msg} at byte offset {offset}"),
            SipError::ContentLength { offset, msg } => {
                write!(f, "bad Content-Length at byte offset {offset}: {msg}")
            }
            SipError::Value { what, value, msg } => write!(f, "bad {what} {value:?}: {msg}"),
        }
    }
}

impl std::error::Error for SipError {}

/// A malformed SDP session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// Syntax error on a line (1-based).
    Syntax { line: usize, msg: String },
    /// A required line is missing.
    Missing { what: &'static str },
}

impl SdpError {
    pub(crate) fn syntax(line: usize, msg: impl Into<String>) -> Self {
        SdpError::Syntax {
            line,
            msg: msg.into(),
        }
    }

    /// 1-based line number, when the error has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            SdpError::Syntax { line, .. } => Some(*line),
            SdpError::Missing { .. } => None,
        }
    }
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::Syntax { line, msg } => write!(f, "SDP line {line}: {msg}"),
            SdpError::Missing { what } => write!(f, "SDP has no {what} line"),
        }
    }
}

impl std::error::Error for SdpError {}

/// A malformed RTP or RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtpError {
    /// Fewer bytes than the header (or a length field) requires.
    TooShort {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// Version field is not 2.
    BadVersion { offset: usize, version: u8 },
    /// Padding count larger than the payload.
    BadPadding { padding: usize, available: usize },
    /// Empty input.
    Empty,
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtpError::TooShort { what, need, have } => {
                write!(f, "{what}: need {need} bytes, have {have}")
            }
            RtpError::BadVersion { offset, version } => {
                write!(f, "version {version} (expected 2) at byte offset {offset}")
            }
            RtpError::BadPadding { padding, available } => write!(
                f,
                "padding of {padding} bytes exceeds the {available} bytes after the header"
            ),
            RtpError::Empty => write!(f, "empty packet"),
        }
    }
}

impl std::error::Error for RtpError {}

/// A digest challenge that cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The header value is not a Digest challenge.
    NotDigest { scheme: String },
    /// Syntax error in the challenge parameters.
    Syntax { offset: usize, msg: String },
    /// A required parameter (realm, nonce) is missing.
    Missing { param: &'static str },
    /// Algorithm not supported.
    UnsupportedAlgorithm { algorithm: String },
    /// Only qop values we cannot do were offered (e.g. auth-int alone).
    UnsupportedQop { qop: String },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::NotDigest { scheme } => {
                write!(f, "not a Digest challenge (scheme {scheme:?})")
            }
            AuthError::Syntax { offset, msg } => {
                write!(f, "bad challenge at character offset {offset}: {msg}")
            }
            AuthError::Missing { param } => write!(f, "challenge has no {param} parameter"),
            AuthError::UnsupportedAlgorithm { algorithm } => {
                write!(f, "unsupported digest algorithm {algorithm:?}")
            }
            AuthError::UnsupportedQop { qop } => write!(f, "unsupported qop {qop:?}"),
        }
    }
}

impl std::error::Error for AuthError {}
