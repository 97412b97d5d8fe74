//! Topic names of the MQTT protocol (ARCHITECTURE §2).
//!
//! Every topic is `{root}/d/{device}/{channel}`. The root keeps tenants and
//! test runs apart; the device id is the one thing a topic says about who is
//! speaking, so it is parsed into a [`DeviceId`] here and nowhere else.

use std::fmt;

use crate::error::Error;

/// A device id: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    pub const MAX_LEN: usize = 64;

    /// Accepts only ids of the contract's form.
    pub fn parse(s: &str) -> Option<DeviceId> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| DeviceId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The last level of a device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// device → hub: measurements
    Obs,
    /// device → hub: events
    Evt,
    /// device → hub: status (retained; the last will lands here)
    Status,
    /// hub → device: rejections
    Err,
    /// hub → device: commands
    Cmd,
}

impl Channel {
    /// The channels the gateway subscribes to.
    pub const INBOUND: [Channel; 3] = [Channel::Obs, Channel::Evt, Channel::Status];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Obs => "obs",
            Channel::Evt => "evt",
            Channel::Status => "status",
            Channel::Err => "err",
            Channel::Cmd => "cmd",
        }
    }

    fn parse(s: &str) -> Option<Channel> {
        Some(match s {
            "obs" => Channel::Obs,
            "evt" => Channel::Evt,
            "status" => Channel::Status,
            "err" => Channel::Err,
            "cmd" => Channel::Cmd,
            _ => return None,
        })
    }
}

/// The topic root, e.g. `vaka/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoot(String);

/// What a topic under the root names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedTopic {
    /// A well-formed device topic.
    Device(DeviceId, Channel),
    /// `{root}/d/{raw}/{channel}` where `raw` is not a valid device id.
    BadDeviceId(String, Channel),
    /// Anything else (not ours).
    Other,
}

impl TopicRoot {
    pub fn new(root: &str) -> Result<TopicRoot, Error> {
        let root = root.trim_end_matches('/');
        let ok = !root.is_empty()
            && !root.starts_with('$')
            && root
                .split('/')
                .all(|level| !level.is_empty() && !level.contains(['+', '#', '\0']));
        if ok {
            Ok(TopicRoot(root.to_owned()))
        } else {
            Err(Error::TopicRoot(root.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full topic for a device and channel.
    pub fn topic(&self, device: &DeviceId, channel: Channel) -> String {
        format!("{}/d/{}/{}", self.0, device, channel.as_str())
    }

    /// The subscription filter of one inbound channel for all devices.
    pub fn filter(&self, channel: Channel) -> String {
        format!("{}/d/+/{}", self.0, channel.as_str())
    }

    /// Splits a topic into device and channel.
    pub fn parse(&self, topic: &str) -> ParsedTopic {
        let Some(rest) = topic
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix("/d/"))
        else {
            return ParsedTopic::Other;
        };
        let Some((device, channel)) = rest.split_once('/') else {
            return ParsedTopic::Other;
        };
        let Some(channel) = Channel::parse(channel) else {
            return ParsedTopic::Other;
        };
        match DeviceId::parse(device) {
            Some(id) => ParsedTopic::Device(id, channel),
            None => ParsedTopic::BadDeviceId(device.to_owned(), channel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_follow_the_contract() {
        assert!(DeviceId::parse("scale-0001_A").is_some());
        assert!(DeviceId::parse(&"x".repeat(64)).is_some());
        assert!(DeviceId::parse(&"x".repeat(65)).is_none());
        assert!(DeviceId::parse("").is_none());
        assert!(DeviceId::parse("a/b").is_none());
        assert!(DeviceId::parse("å").is_none());
        assert!(DeviceId::parse("a b").is_none());
    }

    #[test]
    fn topics_round_trip() {
        let root = TopicRoot::new("vaka/v1/").unwrap();
        let dev = DeviceId::parse("bp-7").unwrap();
        let t = root.topic(&dev, Channel::Obs);
        assert_eq!(t, "vaka/v1/d/bp-7/obs");
        assert_eq!(root.parse(&t), ParsedTopic::Device(dev, Channel::Obs));
        assert_eq!(root.filter(Channel::Evt), "vaka/v1/d/+/evt");
    }

    #[test]
    fn foreign_and_malformed_topics() {
        let root = TopicRoot::new("vaka/v1").unwrap();
        assert_eq!(root.parse("other/d/x/obs"), ParsedTopic::Other);
        assert_eq!(root.parse("vaka/v1/d/x/nope"), ParsedTopic::Other);
        assert_eq!(root.parse("vaka/v1/d/x/obs/extra"), ParsedTopic::Other);
        assert_eq!(
            root.parse("vaka/v1/d/bad!id/obs"),
            ParsedTopic::BadDeviceId("bad!id".into(), Channel::Obs)
        );
        assert!(TopicRoot::new("a/+/b").is_err());
        assert!(TopicRoot::new("").is_err());
        assert!(TopicRoot::new("$SYS").is_err());
    }
}
