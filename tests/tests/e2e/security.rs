//! Device identity and broker access control, end to end: `vaka device
//! provision` and `vaka mosquitto-config` feed a real Mosquitto of the
//! test's own; a device's credentials cannot publish as another device or
//! read another's replies; a revoked device is refused at once; TLS to the
//! broker works, and a client without a valid certificate or password is
//! refused; the API serves HTTPS.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use vaka_gateway::TlsFiles;
use vaka_gateway::senml::PackBuilder;

use crate::support::*;

const T: Duration = Duration::from_secs(20);

/// Runs `vaka ARGS…` to completion; its stdout.
pub(crate) fn vaka(args: &[&str]) -> Result<String> {
    let out = Command::new(vaka_binary()?)
        .args(args)
        .env("VAKA_LOG", "warn")
        .output()
        .context("run vaka")?;
    if !out.status.success() {
        bail!(
            "vaka {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `vaka device provision`: the password it prints.
fn provision(db: &TestDb, device: &str, kind: &str) -> Result<String> {
    let out = vaka(&[
        "device",
        "provision",
        device,
        "--kind",
        kind,
        "--database-url",
        &db.url,
    ])?;
    out.lines()
        .find_map(|l| l.strip_prefix("password: "))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no password in {out:?}"))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A Mosquitto with vaka's password and ACL files, and optionally TLS.
struct SecureBroker {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SecureBroker {
    fn start(dir: &Path, port: u16, tls: Option<&Path>) -> Result<SecureBroker> {
        let _ = std::fs::remove_file(dir.join("mosquitto.pid"));
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous false\n\
             password_file {d}/passwd\nacl_file {d}/acl\npid_file {d}/mosquitto.pid\n\
             persistence false\nlog_dest stderr\nlog_type error\n\
             user root\n\
             listener {port} 127.0.0.1\n",
            d = dir.display()
        );
        if let Some(ca) = tls {
            conf.push_str(&format!(
                "cafile {c}/ca.pem\ncertfile {c}/server.pem\nkeyfile {c}/server.key\n\
                 require_certificate false\n",
                c = ca.display()
            ));
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mosquitto")?;
        Ok(SecureBroker {
            child,
            port,
            dir: dir.to_owned(),
        })
    }

    async fn ready(&self) -> Result<()> {
        let port = self.port;
        eventually("mosquitto to listen", T, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await?;
        let pid = self.dir.join("mosquitto.pid");
        eventually("mosquitto's pid file", T, || async {
            std::fs::metadata(&pid).ok().map(|_| ())
        })
        .await
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device's MQTT client with its own credentials (3.1.1, like devices).
pub(crate) struct Device {
    pub client: AsyncClient,
    pub inbox: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn options(
    port: u16,
    credentials: Option<(&str, &str)>,
    tls: Option<rustls::ClientConfig>,
) -> MqttOptions {
    let mut o = MqttOptions::new(unique("sec-"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    if let Some((u, p)) = credentials {
        o.set_credentials(u, p);
    }
    if let Some(c) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(c),
        )));
    }
    o
}

/// Connects and waits for the CONNACK: Ok, or why the broker refused.
pub(crate) async fn try_connect(
    options: MqttOptions,
    subscribe: &[String],
) -> Result<Device, String> {
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    match tokio::time::timeout(T, eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Incoming::ConnAck(a)))) if a.code == ConnectReturnCode::Success => {}
        Ok(Ok(e)) => return Err(format!("unexpected {e:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("timed out".into()),
    }
    for filter in subscribe {
        client
            .subscribe(filter.clone(), QoS::AtLeastOnce)
            .await
            .map_err(|e| e.to_string())?;
    }
    let (tx, inbox) = mpsc::unbounded_channel();
    let (sub_tx, mut sub_rx) = mpsc::channel(8);
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(Event::Incoming(Incoming::SubAck(a))) => {
                    let _ = sub_tx.try_send(a);
                }
                Ok(_) => {}
                // Reconnecting (rumqttc does, on the next poll) is what a
                // device would do; a refused reconnect keeps failing here.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    for _ in subscribe {
        tokio::time::timeout(T, sub_rx.recv())
            .await
            .map_err(|_| "no SUBACK".to_owned())?;
    }
    Ok(Device {
        client,
        inbox,
        task,
    })
}

pub(crate) async fn connect(
    port: u16,
    credentials: (&str, &str),
    tls: Option<rustls::ClientConfig>,
    subscribe: &[String],
) -> Result<Device> {
    try_connect(options(port, Some(credentials), tls), subscribe)
        .await
        .map_err(|e| anyhow!("connect as {}: {e}", credentials.0))
}

pub(crate) fn weight(device: &str, t: f64, kg: f64) -> String {
    PackBuilder::new(device, t)
        .value("weight", "kg", kg, t)
        .to_json()
}

async fn observations_of(db: &TestDb, device: &str) -> Result<i64> {
    let store = db.store().await?;
    let n = match &store {
        vaka_hub::store::Store::Postgres(p) => {
            sqlx::query_scalar("SELECT count(*) FROM observations WHERE device_id = $1")
                .bind(device)
                .fetch_one(p)
                .await?
        }
        vaka_hub::store::Store::Sqlite(p) => {
            sqlx::query_scalar("SELECT count(*) FROM observations WHERE device_id = $1")
                .bind(device)
                .fetch_one(p)
                .await?
        }
    };
    store.close().await;
    Ok(n)
}

/// Creates a patient and binds an already registered device to it.
async fn bind(api: &Api, patient: &str, device: &str) -> Result<()> {
    let (s, v) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/patients",
            Some(json!({"id": patient, "name": "Testa Testsson"})),
        )
        .await?;
    ensure!(s == 201, "create patient: {s} {v}");
    let (s, v) = api
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/devices/{device}/binding"),
            Some(json!({"patient_id": patient})),
        )
        .await?;
    ensure!(s == 200, "bind: {s} {v}");
    Ok(())
}

#[tokio::test]
async fn a_device_cannot_publish_or_read_as_another_and_revocation_is_immediate() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let dir = std::env::temp_dir().join(unique("vaka-acl-"));
    std::fs::create_dir_all(&dir)?;
    let pass_a = provision(&db, "scale-a", "scale")?;
    let pass_b = provision(&db, "scale-b", "scale")?;
    ensure!(pass_a != pass_b && pass_a.len() >= 32);

    // The broker's files come from the database; the broker gets a port
    // first, since the gateway's URL names it.
    let port = free_port()?;
    let root = format!("test/{}", unique(""));
    let gateway_password = unique("gw-");
    let gateway_url = format!("mqtt://vaka-gw:{gateway_password}@127.0.0.1:{port}");
    let dir_s = dir.display().to_string();
    let written = vaka(&[
        "mosquitto-config",
        "--database-url",
        &db.url,
        "--out",
        &dir_s,
        "--topic-root",
        &root,
        "--mqtt-url",
        &gateway_url,
    ])?;
    ensure!(written.contains("2 device accounts"), "{written}");
    let passwd = std::fs::read_to_string(dir.join("passwd"))?;
    ensure!(
        !passwd.contains(&pass_a),
        "a password in clear in the passwd file"
    );
    let broker = SecureBroker::start(&dir, port, None)?;
    broker.ready().await?;

    let mut config = HubConfig::new(&db, &gateway_url);
    config.topic_root = root.clone();
    let hub = Hub::start(config).await?;
    let api = hub.api();
    bind(&api, "p-a", "scale-a").await?;
    bind(&api, "p-b", "scale-b").await?;

    // Wrong password, no password, another device's password: refused.
    for (who, creds) in [
        ("a wrong password", Some(("scale-a", "not-the-password"))),
        ("b's password for a", Some(("scale-a", pass_b.as_str()))),
        ("no credentials", None),
    ] {
        let r = try_connect(options(port, creds, None), &[]).await;
        ensure!(r.is_err(), "{who} was let in");
    }

    let mut a = connect(
        port,
        ("scale-a", &pass_a),
        None,
        &[
            format!("{root}/d/scale-a/err"),
            // Not a's to read: the broker grants nothing of it.
            format!("{root}/d/scale-b/err"),
        ],
    )
    .await?;
    let mut b = connect(
        port,
        ("scale-b", &pass_b),
        None,
        &[format!("{root}/d/scale-b/err")],
    )
    .await?;
    let now = now_s();

    // a publishes as b: on b's topic with b's base name. The broker drops
    // it (a 3.1.1 client gets its PUBACK all the same, so it cannot tell).
    a.client
        .publish(
            format!("{root}/d/scale-b/obs"),
            QoS::AtLeastOnce,
            false,
            weight("scale-b", now - 60.0, 99.0),
        )
        .await?;
    // …then on its own topic. Mosquitto keeps a client's order, so once
    // this one is stored, the spoof would have been too.
    a.client
        .publish(
            format!("{root}/d/scale-a/obs"),
            QoS::AtLeastOnce,
            false,
            weight("scale-a", now - 50.0, 80.0),
        )
        .await?;
    eventually("a's own reading stored", T, || async {
        (observations_of(&db, "scale-a").await.ok()? == 1).then_some(())
    })
    .await?;
    assert_eq!(
        observations_of(&db, "scale-b").await?,
        0,
        "a published as b"
    );

    // b's error replies reach b, not a.
    b.client
        .publish(
            format!("{root}/d/scale-b/obs"),
            QoS::AtLeastOnce,
            false,
            "not json",
        )
        .await?;
    let (topic, payload) = tokio::time::timeout(T, b.inbox.recv())
        .await?
        .ok_or_else(|| anyhow!("b's client closed"))?;
    ensure!(topic.ends_with("/scale-b/err"), "{topic}");
    let reply: serde_json::Value = serde_json::from_slice(&payload)?;
    assert_eq!(reply["code"], "bad_json");
    // a's own error reply comes after b's would have (the gateway answers
    // in order); a must see only its own.
    a.client
        .publish(
            format!("{root}/d/scale-a/obs"),
            QoS::AtLeastOnce,
            false,
            "not json",
        )
        .await?;
    let (topic, _) = tokio::time::timeout(T, a.inbox.recv())
        .await?
        .ok_or_else(|| anyhow!("a's client closed"))?;
    ensure!(topic.ends_with("/scale-a/err"), "a read {topic}");

    // Revoke a in the database only: the broker still lets a in, and the
    // gateway's own check is the line of defence.
    let out = vaka(&["device", "revoke", "scale-a", "--database-url", &db.url])?;
    ensure!(out.contains("revoked"), "{out}");
    a.client
        .publish(
            format!("{root}/d/scale-a/obs"),
            QoS::AtLeastOnce,
            false,
            weight("scale-a", now - 45.0, 81.5),
        )
        .await?;
    let (topic, payload) = tokio::time::timeout(T, a.inbox.recv())
        .await?
        .ok_or_else(|| anyhow!("a's client closed"))?;
    ensure!(topic.ends_with("/scale-a/err"), "{topic}");
    let reply: serde_json::Value = serde_json::from_slice(&payload)?;
    assert_eq!(reply["code"], "revoked_device", "{reply}");
    assert_eq!(observations_of(&db, "scale-a").await?, 1);

    // Now the broker too: the files are rewritten and Mosquitto reloads
    // them (it drops a's connection, and refuses its next CONNECT).
    let pid_file = dir.join("mosquitto.pid").display().to_string();
    let out = vaka(&[
        "device",
        "revoke",
        "scale-a",
        "--database-url",
        &db.url,
        "--mosquitto-dir",
        &dir_s,
        "--mosquitto-pid-file",
        &pid_file,
        "--topic-root",
        &root,
        "--mqtt-url",
        &gateway_url,
    ])?;
    ensure!(
        out.contains("revoked already") && out.contains("reload"),
        "{out}"
    );
    ensure!(
        !std::fs::read_to_string(dir.join("passwd"))?.contains("scale-a:"),
        "a revoked device left in the passwd file"
    );
    // Whatever a's client still tries, nothing of it is stored.
    a.client
        .publish(
            format!("{root}/d/scale-a/obs"),
            QoS::AtLeastOnce,
            false,
            weight("scale-a", now - 40.0, 81.0),
        )
        .await?;
    // b, still provisioned, goes on as before, and is our marker: once its
    // reading is stored, a's would have been.
    b.client
        .publish(
            format!("{root}/d/scale-b/obs"),
            QoS::AtLeastOnce,
            false,
            weight("scale-b", now - 30.0, 70.0),
        )
        .await?;
    eventually("b's reading stored", T, || async {
        (observations_of(&db, "scale-b").await.ok()? == 1).then_some(())
    })
    .await?;
    assert_eq!(
        observations_of(&db, "scale-a").await?,
        1,
        "a revoked device's reading was stored"
    );
    // And a new connection with a's credentials is refused.
    let again = try_connect(options(port, Some(("scale-a", &pass_a)), None), &[]).await;
    ensure!(again.is_err(), "a revoked device could connect again");

    drop((a, b, hub, broker));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A fresh test CA from `deploy/tls/make-test-ca.sh`, in `dir`.
fn make_ca(dir: &Path) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tls/make-test-ca.sh");
    let out = Command::new("sh")
        .arg(&script)
        .arg(dir)
        .output()
        .context("run make-test-ca.sh")?;
    ensure!(
        out.status.success(),
        "make-test-ca.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn trusting(ca_dir: &Path) -> Result<rustls::ClientConfig> {
    Ok(vaka_gateway::tls::client_config(&TlsFiles {
        ca: Some(ca_dir.join("ca.pem")),
        client: None,
    })?)
}

#[tokio::test]
async fn mqtt_over_tls_works_and_refuses_without_a_valid_certificate_or_password() -> Result<()> {
    let db = TestDb::new(Backend::Sqlite).await?;
    let dir = std::env::temp_dir().join(unique("vaka-tls-"));
    let (ca, other_ca) = (dir.join("ca"), dir.join("other-ca"));
    make_ca(&ca)?;
    make_ca(&other_ca)?;
    let password = provision(&db, "scale-t", "scale")?;

    let port = free_port()?;
    let root = format!("test/{}", unique(""));
    let gateway_password = unique("gw-");
    // mqtts://: the gateway checks the broker's certificate against the CA.
    let gateway_url = format!("mqtts://vaka-gw:{gateway_password}@127.0.0.1:{port}");
    let dir_s = dir.display().to_string();
    vaka(&[
        "mosquitto-config",
        "--database-url",
        &db.url,
        "--out",
        &dir_s,
        "--topic-root",
        &root,
        "--mqtt-url",
        &gateway_url,
    ])?;
    let broker = SecureBroker::start(&dir, port, Some(&ca))?;
    broker.ready().await?;

    let mut config = HubConfig::new(&db, &gateway_url);
    config.topic_root = root.clone();
    let ca_pem = ca.join("ca.pem").display().to_string();
    config.extra = vec!["--mqtt-ca".into(), ca_pem];
    let hub = Hub::start(config).await?;
    bind(&hub.api(), "p-t", "scale-t").await?;

    // A device over TLS with its password: its reading is stored.
    let device = connect(port, ("scale-t", &password), Some(trusting(&ca)?), &[]).await?;
    let now = now_s();
    device
        .client
        .publish(
            format!("{root}/d/scale-t/obs"),
            QoS::AtLeastOnce,
            false,
            weight("scale-t", now, 75.0),
        )
        .await?;
    eventually("the TLS device's reading stored", T, || async {
        (observations_of(&db, "scale-t").await.ok()? == 1).then_some(())
    })
    .await?;

    // Refused: TLS without a password; a wrong password; a broker
    // certificate the client does not trust; plain MQTT on the TLS port.
    let refusals = [
        ("no password", options(port, None, Some(trusting(&ca)?))),
        (
            "a wrong password",
            options(port, Some(("scale-t", "wrong")), Some(trusting(&ca)?)),
        ),
        (
            "an untrusted broker certificate",
            options(
                port,
                Some(("scale-t", &password)),
                Some(trusting(&other_ca)?),
            ),
        ),
        (
            "plain MQTT on the TLS port",
            options(port, Some(("scale-t", &password)), None),
        ),
    ];
    for (what, o) in refusals {
        let r = try_connect(o, &[]).await;
        ensure!(r.is_err(), "{what}: connected");
    }
    // The gateway refuses a broker it does not trust, too: pointed at the
    // other CA, it never becomes ready.
    let mut wrong = HubConfig::new(&db, &gateway_url);
    wrong.topic_root = root.clone();
    wrong.extra = vec![
        "--mqtt-ca".into(),
        other_ca.join("ca.pem").display().to_string(),
    ];
    ensure!(
        tokio::time::timeout(Duration::from_secs(8), Hub::start(wrong))
            .await
            .map_or(true, |r| r.is_err()),
        "the gateway connected to a broker whose certificate it cannot verify"
    );

    drop((device, hub, broker));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn the_api_serves_https() -> Result<()> {
    let db = TestDb::new(Backend::Sqlite).await?;
    let dir = std::env::temp_dir().join(unique("vaka-https-"));
    let (ca, other_ca) = (dir.join("ca"), dir.join("other-ca"));
    make_ca(&ca)?;
    make_ca(&other_ca)?;
    let mut child = tokio::process::Command::new(vaka_binary()?)
        .arg("serve")
        .args(["--database-url", &db.url])
        .args(["--mqtt-url", &mqtt_url()])
        .args(["--mqtt-client-id", &unique("vaka-https-")])
        .args(["--topic-root", &format!("test/{}", unique(""))])
        .args(["--http", "127.0.0.1:0"])
        .args(["--api-token", &unique("token-for-tests-")])
        .arg("--tls-cert")
        .arg(ca.join("server.pem"))
        .arg("--tls-key")
        .arg(ca.join("server.key"))
        .env("VAKA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("vaka.log"))?)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(T, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(a) = line.strip_prefix("vaka: listening on https://") {
                return Ok::<_, anyhow::Error>(a.to_owned());
            }
        }
        bail!(
            "vaka exited before listening: {}",
            std::fs::read_to_string(dir.join("vaka.log")).unwrap_or_default()
        )
    })
    .await??;

    let get = |config: rustls::ClientConfig| {
        let addr = addr.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await?;
            // The server closes after the answer (`Connection: close`);
            // whether with a TLS close_notify or not, the answer is there.
            let mut response = Vec::new();
            let _ = tls.read_to_end(&mut response).await;
            anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
        }
    };
    let response = get(trusting(&ca)?).await?;
    ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
    ensure!(response.contains("\"ok\""), "{response}");
    // A client that does not trust the certificate gets no answer.
    ensure!(
        get(trusting(&other_ca)?).await.is_err(),
        "an untrusted certificate was accepted"
    );
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(12), tcp.read_to_end(&mut buf)).await;
    ensure!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plain HTTP was served on the HTTPS port"
    );

    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
