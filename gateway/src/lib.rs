//! # vaka-gateway
//!
//! The MQTT edge of vaka: it turns what home devices publish into validated,
//! typed messages, hands them to a [`Sink`] that commits them durably, and
//! acknowledges each QoS 1 message to the broker only after that commit.
//!
//! ## Layout
//!
//! - [`topics`]: `{root}/d/{device}/{channel}` and the [`DeviceId`].
//! - [`senml`]: RFC 8428 records, their resolution, and a pack builder.
//! - [`model`]: the protocol's vocabulary: metrics, events, status, units
//!   and ranges; [`UnixMillis`].
//! - [`validate`]: pure `bytes → Accepted | Rejection`.
//! - [`error`]: [`RejectCode`] and [`Rejection`] (input), [`Error`] (ours).
//! - `mqtt`: the rumqttc poll loop, which only polls and forwards.
//! - `batch`: group commit: collect for a few milliseconds, commit once
//!   through the [`Sink`], then answer rejections and acknowledge in order.

pub mod error;
pub mod model;
pub mod senml;
pub mod topics;
pub mod validate;

pub use error::{Error, RejectCode, Rejection};
pub use model::UnixMillis;
pub use topics::{Channel, DeviceId, TopicRoot};
