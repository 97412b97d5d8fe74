//! The demo broker's access control: an authorising front for rumqttd.
//!
//! rumqttd 0.20 can authenticate a client (a static user/password map, or
//! an `external_auth` callback given client id, username and password),
//! but it has no per-topic authorisation: any client it lets in may
//! publish and subscribe anywhere. So `vaka demo` puts this front on the
//! devices' port, and rumqttd's own device listener sits on loopback
//! behind it. Per connection the guard:
//!
//! 1. reads the CONNECT, checks the username (= device id) and password
//!    against the device's stored credentials (a revoked or unknown device
//!    gets CONNACK "not authorised"), and a last will must be on the
//!    device's own `…/status`;
//! 2. then forwards packets both ways, looking into two kinds: a PUBLISH
//!    must be on `{root}/d/{user}/{obs,evt,status}`, else it is dropped
//!    (and, at QoS 1, acknowledged, as Mosquitto does for MQTT 3.1.1, so the
//!    device does not resend it for ever); a SUBSCRIBE may name only the
//!    device's own `…/err` and `…/cmd`, else the connection is closed.
//!
//! That is the rule `vaka mosquitto-config` gives Mosquitto. The guard
//! understands MQTT 3.1.1 and 5 framing (the fixed header, and the
//! variable headers of CONNECT, PUBLISH and SUBSCRIBE); everything else
//! passes through byte for byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Largest packet the guard reads (the broker's own limit is 1 MiB).
const MAX_PACKET: usize = 2 * 1024 * 1024;

/// The answer of an [`Authenticate`]: true lets the device in.
pub type Verdict = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Checks a device's username and password.
pub type Authenticate = Arc<dyn Fn(String, String) -> Verdict + Send + Sync>;

/// One MQTT control packet: its first byte and its body (after the
/// remaining length), and the raw bytes to forward.
struct Packet {
    kind: u8,
    flags: u8,
    body: Vec<u8>,
    raw: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
enum GuardError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("refused: {0}")]
    Refused(String),
}

/// Reads one packet, or `None` at a clean end of stream.
async fn read_packet(r: &mut (impl AsyncReadExt + Unpin)) -> Result<Option<Packet>, GuardError> {
    let first = match r.read_u8().await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut raw = vec![first];
    // Remaining length: 1–4 bytes, 7 bits each, low first.
    let mut len = 0usize;
    for i in 0..4 {
        let b = r.read_u8().await?;
        raw.push(b);
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err(GuardError::Malformed("remaining length over 4 bytes"));
        }
    }
    if len > MAX_PACKET {
        return Err(GuardError::Malformed("packet too large"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    raw.extend_from_slice(&body);
    Ok(Some(Packet {
        kind: first >> 4,
        flags: first & 0x0f,
        body,
        raw,
    }))
}

/// A cursor over a packet body.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, at: 0 }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], GuardError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(GuardError::Malformed("truncated"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, GuardError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, GuardError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A 2-byte-length-prefixed field.
    fn binary(&mut self) -> Result<&'a [u8], GuardError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    fn string(&mut self) -> Result<&'a str, GuardError> {
        std::str::from_utf8(self.binary()?).map_err(|_| GuardError::Malformed("not UTF-8"))
    }

    /// MQTT 5 properties: skipped (a variable byte length, then that many).
    fn skip_properties(&mut self) -> Result<(), GuardError> {
        let mut len = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        self.bytes(len).map(|_| ())
    }
}

/// What a CONNECT says about who is connecting.
struct Connect {
    v5: bool,
    username: Option<String>,
    password: Option<String>,
    will_topic: Option<String>,
}

fn parse_connect(body: &[u8]) -> Result<Connect, GuardError> {
    let mut c = Cursor::new(body);
    let _protocol = c.string()?;
    let level = c.u8()?;
    let v5 = level == 5;
    let flags = c.u8()?;
    let _keep_alive = c.u16()?;
    if v5 {
        c.skip_properties()?;
    }
    let _client_id = c.string()?;
    let mut will_topic = None;
    if flags & 0x04 != 0 {
        if v5 {
            c.skip_properties()?;
        }
        will_topic = Some(c.string()?.to_owned());
        let _payload = c.binary()?;
    }
    let username = if flags & 0x80 != 0 {
        Some(c.string()?.to_owned())
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(String::from_utf8_lossy(c.binary()?).into_owned())
    } else {
        None
    };
    Ok(Connect {
        v5,
        username,
        password,
        will_topic,
    })
}

/// The rule: what `user` may publish and subscribe to under `root`.
#[derive(Clone)]
struct Rule {
    root: String,
}

impl Rule {
    fn own(&self, user: &str, channel: &str) -> String {
        format!("{}/d/{user}/{channel}", self.root)
    }

    fn may_publish(&self, user: &str, topic: &str) -> bool {
        ["obs", "evt", "status"]
            .iter()
            .any(|c| topic == self.own(user, c))
    }

    fn may_subscribe(&self, user: &str, filter: &str) -> bool {
        filter == self.own(user, "err") || filter == self.own(user, "cmd")
    }
}

/// Serves the guard on `listener`, forwarding to rumqttd at `upstream`.
pub async fn serve(
    listener: TcpListener,
    upstream: std::net::SocketAddr,
    topic_root: String,
    authenticate: Authenticate,
    shutdown: CancellationToken,
) {
    let rule = Rule { root: topic_root };
    loop {
        let (device, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (rule, authenticate, stop) = (rule.clone(), authenticate.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = connection(device, upstream, rule, authenticate) => {
                    if let Err(e) = r {
                        info!(%peer, error = %e, "device connection closed by the guard");
                    }
                }
            }
        });
    }
}

async fn connection(
    mut device: TcpStream,
    upstream: std::net::SocketAddr,
    rule: Rule,
    authenticate: Authenticate,
) -> Result<(), GuardError> {
    let _ = device.set_nodelay(true);
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), read_packet(&mut device))
        .await
        .map_err(|_| GuardError::Refused("no CONNECT within 10 s".into()))??;
    let Some(connect) = first.filter(|p| p.kind == 1) else {
        return Err(GuardError::Malformed("the first packet is not a CONNECT"));
    };
    let hello = parse_connect(&connect.body)?;
    let user = match (&hello.username, &hello.password) {
        (Some(u), Some(p)) if authenticate(u.clone(), p.clone()).await => u.clone(),
        _ => {
            refuse(&mut device, hello.v5).await;
            return Err(GuardError::Refused(format!(
                "bad credentials for {:?}",
                hello.username.as_deref().unwrap_or("")
            )));
        }
    };
    if let Some(will) = &hello.will_topic
        && *will != rule.own(&user, "status")
    {
        refuse(&mut device, hello.v5).await;
        return Err(GuardError::Refused(format!(
            "{user}: last will on another topic"
        )));
    }

    let mut broker = TcpStream::connect(upstream).await?;
    let _ = broker.set_nodelay(true);
    broker.write_all(&connect.raw).await?;
    let (mut from_device, mut to_device) = device.into_split();
    let (mut from_broker, mut to_broker) = broker.into_split();
    // Everything to the device goes through one writer, whole packets at a
    // time: the broker's packets and our own PUBACKs for dropped publishes.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
    let writer = async move {
        while let Some(bytes) = out_rx.recv().await {
            to_device.write_all(&bytes).await?;
        }
        Ok::<(), GuardError>(())
    };
    let ack_tx = out_tx.clone();
    let down = async move {
        while let Some(p) = read_packet(&mut from_broker).await? {
            if out_tx.send(p.raw).await.is_err() {
                break;
            }
        }
        Ok::<(), GuardError>(())
    };
    let up = async move {
        while let Some(p) = read_packet(&mut from_device).await? {
            match p.kind {
                3 => {
                    let mut c = Cursor::new(&p.body);
                    let topic = c.string()?;
                    if !rule.may_publish(&user, topic) {
                        warn!(device = %user, %topic, "publish outside the device's own topics dropped");
                        let qos = (p.flags >> 1) & 0x03;
                        if qos == 1 {
                            let id = c.u16()?.to_be_bytes();
                            let ack = if hello.v5 {
                                vec![0x40, 0x03, id[0], id[1], 0x87]
                            } else {
                                vec![0x40, 0x02, id[0], id[1]]
                            };
                            let _ = ack_tx.send(ack).await;
                        } else if qos == 2 {
                            return Err(GuardError::Refused(format!(
                                "{user}: QoS 2 publish outside its topics"
                            )));
                        }
                        continue;
                    }
                }
                8 => {
                    let mut c = Cursor::new(&p.body);
                    let _id = c.u16()?;
                    if hello.v5 {
                        c.skip_properties()?;
                    }
                    while c.at < p.body.len() {
                        let filter = c.string()?;
                        let _options = c.u8()?;
                        if !rule.may_subscribe(&user, filter) {
                            return Err(GuardError::Refused(format!(
                                "{user}: subscription to {filter} is not allowed"
                            )));
                        }
                    }
                }
                _ => {}
            }
            to_broker.write_all(&p.raw).await?;
        }
        Ok::<(), GuardError>(())
    };
    tokio::select! {
        r = up => r,
        r = down => r,
        r = writer => r,
    }
}

async fn refuse(device: &mut TcpStream, v5: bool) {
    // CONNACK: 3.1.1 return code 5 / MQTT 5 reason 0x87, "not authorised".
    let ack: &[u8] = if v5 {
        &[0x20, 0x03, 0x00, 0x87, 0x00]
    } else {
        &[0x20, 0x02, 0x00, 0x05]
    };
    let _ = device.write_all(ack).await;
    let _ = device.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3.1.1 CONNECT with a last will, username and password.
    fn connect_packet(user: &str, password: &str, will: Option<&str>) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &[u8]) {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s);
        }
        let mut body = Vec::new();
        string(&mut body, b"MQTT");
        body.push(4);
        let mut flags = 0x80 | 0x40 | 0x02;
        if will.is_some() {
            flags |= 0x04 | 0x08;
        }
        body.push(flags);
        body.extend_from_slice(&30u16.to_be_bytes());
        string(&mut body, b"client-1");
        if let Some(w) = will {
            string(&mut body, w.as_bytes());
            string(&mut body, br#"[{"n":"conn","vs":"offline"}]"#);
        }
        string(&mut body, user.as_bytes());
        string(&mut body, password.as_bytes());
        body
    }

    #[test]
    fn reads_who_connects() {
        let c = parse_connect(&connect_packet(
            "scale-1",
            "pw",
            Some("vaka/v1/d/scale-1/status"),
        ))
        .unwrap();
        assert!(!c.v5);
        assert_eq!(c.username.as_deref(), Some("scale-1"));
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.will_topic.as_deref(), Some("vaka/v1/d/scale-1/status"));
        let c = parse_connect(&connect_packet("scale-1", "pw", None)).unwrap();
        assert_eq!(c.will_topic, None);
        // Truncated: an error, not a panic.
        let full = connect_packet("scale-1", "pw", None);
        for n in 0..full.len() {
            assert!(parse_connect(&full[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn a_device_speaks_only_for_itself() {
        let rule = Rule {
            root: "vaka/v1".into(),
        };
        for ch in ["obs", "evt", "status"] {
            assert!(rule.may_publish("scale-1", &format!("vaka/v1/d/scale-1/{ch}")));
            assert!(!rule.may_publish("scale-1", &format!("vaka/v1/d/scale-2/{ch}")));
        }
        for bad in [
            "vaka/v1/d/scale-1/err",
            "vaka/v1/d/scale-1/cmd",
            "vaka/v1/d/scale-1",
            "other",
        ] {
            assert!(!rule.may_publish("scale-1", bad), "{bad}");
        }
        assert!(rule.may_subscribe("scale-1", "vaka/v1/d/scale-1/err"));
        assert!(rule.may_subscribe("scale-1", "vaka/v1/d/scale-1/cmd"));
        for bad in [
            "vaka/v1/d/scale-2/err",
            "vaka/v1/d/+/err",
            "vaka/v1/d/scale-1/#",
            "#",
        ] {
            assert!(!rule.may_subscribe("scale-1", bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn frames_packets_and_refuses_oversized_ones() {
        // PINGREQ, then a PUBLISH of 200 bytes (2-byte remaining length).
        let mut bytes = vec![0xc0, 0x00, 0x30, 0xc8, 0x01];
        bytes.extend(std::iter::repeat_n(0u8, 200));
        let mut r = &bytes[..];
        let p = read_packet(&mut r).await.unwrap().unwrap();
        assert_eq!((p.kind, p.body.len(), p.raw.len()), (12, 0, 2));
        let p = read_packet(&mut r).await.unwrap().unwrap();
        assert_eq!((p.kind, p.body.len(), p.raw.len()), (3, 200, 203));
        assert!(read_packet(&mut r).await.unwrap().is_none());
        // A remaining length of 256 MiB - 1 is refused before reading it.
        let huge = [0x30u8, 0xff, 0xff, 0xff, 0x7f];
        let mut r = &huge[..];
        assert!(read_packet(&mut r).await.is_err());
    }
}
