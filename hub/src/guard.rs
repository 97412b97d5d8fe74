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

/// Checks a device's username and password; true lets it in.
pub type Authenticate =
    Arc<dyn Fn(String, String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

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
