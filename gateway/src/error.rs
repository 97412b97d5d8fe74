//! Why a message was refused, as data.
//!
//! A [`Rejection`] is not an error of the gateway: it is the normal answer to
//! bad input. It carries a machine-readable [`RejectCode`] (sent to the device
//! on `…/err` and counted in `/metrics`) and a human-readable detail.

use std::fmt;

/// The rejection codes of the MQTT contract (ARCHITECTURE §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectCode {
    BadJson,
    BadSenml,
    UnknownName,
    BadUnit,
    OutOfRange,
    FutureTime,
    TooOld,
    TopicMismatch,
    TooLarge,
    RateLimited,
    UnknownDevice,
    UnboundDevice,
    /// The device's credentials were revoked: quarantined, like an
    /// unknown device's messages.
    RevokedDevice,
}

impl RejectCode {
    pub const ALL: [RejectCode; 13] = [
        RejectCode::BadJson,
        RejectCode::BadSenml,
        RejectCode::UnknownName,
        RejectCode::BadUnit,
        RejectCode::OutOfRange,
        RejectCode::FutureTime,
        RejectCode::TooOld,
        RejectCode::TopicMismatch,
        RejectCode::TooLarge,
        RejectCode::RateLimited,
        RejectCode::UnknownDevice,
        RejectCode::UnboundDevice,
        RejectCode::RevokedDevice,
    ];

    /// The wire form, e.g. `"out_of_range"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::BadJson => "bad_json",
            RejectCode::BadSenml => "bad_senml",
            RejectCode::UnknownName => "unknown_name",
            RejectCode::BadUnit => "bad_unit",
            RejectCode::OutOfRange => "out_of_range",
            RejectCode::FutureTime => "future_time",
            RejectCode::TooOld => "too_old",
            RejectCode::TopicMismatch => "topic_mismatch",
            RejectCode::TooLarge => "too_large",
            RejectCode::RateLimited => "rate_limited",
            RejectCode::UnknownDevice => "unknown_device",
            RejectCode::UnboundDevice => "unbound_device",
            RejectCode::RevokedDevice => "revoked_device",
        }
    }

    pub fn parse(s: &str) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused message: what was wrong, in a code and in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: RejectCode,
    pub detail: String,
}

impl Rejection {
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        Rejection {
            code,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// Errors of the gateway itself (configuration and connection), not of input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid MQTT URL {url:?}: {reason}")]
    MqttUrl { url: String, reason: String },
    #[error("invalid topic root {0:?}: it must be one or more topic levels without wildcards")]
    TopicRoot(String),
    #[error("TLS: {0}")]
    Tls(String),
}
