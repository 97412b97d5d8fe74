//! What the end-to-end tests need: fresh databases, a real `vaka serve`
//! process, plain MQTT clients, HTTP and websocket clients. Nothing here is
//! a mock: the services are the local PostgreSQL and Mosquitto (or a
//! Mosquitto of the test's own, where a test needs other broker limits).

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use vaka_hub::store::Store;

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn pg_admin_url() -> String {
    std::env::var("VAKA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn mqtt_url() -> String {
    std::env::var("VAKA_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ database

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database of the test's own, dropped at the end.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Result<TestDb> {
        match backend {
            Backend::Postgres => {
                let admin = pg_admin_url();
                let name = unique("vaka_e2e_");
                let pool = sqlx::PgPool::connect(&admin)
                    .await
                    .context("connect to the test PostgreSQL")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await?;
                pool.close().await;
                let (base, _) = admin
                    .rsplit_once('/')
                    .ok_or_else(|| anyhow!("database URL without a path"))?;
                Ok(TestDb {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    dir: None,
                })
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique("vaka-e2e-"));
                std::fs::create_dir_all(&dir)?;
                Ok(TestDb {
                    url: format!("sqlite://{}", dir.join("vaka.db").display()),
                    pg_name: None,
                    dir: Some(dir),
                })
            }
        }
    }

    pub async fn store(&self) -> Result<Store> {
        Ok(Store::connect(&self.url).await?)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop on a thread of its own: we may be inside a runtime.
            let admin = pg_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                        }
                    });
                }
            })
            .join();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs one scalar `SELECT count(*) …` on either backend.
pub async fn count(store: &Store, sql: &'static str) -> Result<i64> {
    Ok(match store {
        Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
        Store::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
    })
}

// ------------------------------------------------------------- vaka process

/// The `vaka` binary next to this test binary (`target/<profile>/vaka`),
/// built first if it is not there.
pub fn vaka_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow!("unexpected test binary location {exe:?}"))?;
    let bin = dir.join("vaka");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "vaka-hub", "--bin", "vaka"])
            .status()?;
        if !status.success() {
            bail!("building vaka failed");
        }
    }
    Ok(bin)
}

pub struct HubConfig {
    pub database_url: String,
    pub mqtt_url: String,
    pub topic_root: String,
    pub client_id: String,
    pub extra: Vec<String>,
}

impl HubConfig {
    pub fn new(db: &TestDb, mqtt_url: &str) -> HubConfig {
        HubConfig {
            database_url: db.url.clone(),
            mqtt_url: mqtt_url.to_owned(),
            topic_root: format!("test/{}", unique("")),
            client_id: unique("vaka-e2e-"),
            extra: Vec::new(),
        }
    }
}

/// A running `vaka serve`.
pub struct Hub {
    child: Option<Child>,
    pub config: HubConfig,
    pub base: String,
    pub token: String,
    pub log: PathBuf,
}

impl Hub {
    pub async fn start(config: HubConfig) -> Result<Hub> {
        let mut hub = Hub {
            child: None,
            config,
            base: String::new(),
            token: unique("token-for-tests-"),
            log: std::env::temp_dir().join(format!("{}.log", unique("vaka-e2e-"))),
        };
        hub.spawn().await?;
        Ok(hub)
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let c = &self.config;
        let mut child = Command::new(vaka_binary()?)
            .arg("serve")
            .args(["--database-url", &c.database_url])
            .args(["--mqtt-url", &c.mqtt_url])
            .args(["--mqtt-client-id", &c.client_id])
            .args(["--topic-root", &c.topic_root])
            .args(["--http", "127.0.0.1:0"])
            .args(["--api-token", &self.token])
            .args(&c.extra)
            .env("VAKA_LOG", "info,vaka_gateway=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("start vaka")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        self.child = Some(child);
        let mut lines = BufReader::new(tokio::process::ChildStdout::from_std(stdout)?).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("vaka: listening on ") {
                    return Ok::<_, anyhow::Error>(addr.to_owned());
                }
            }
            bail!("vaka exited before listening; log: {}", self.log.display())
        })
        .await
        .map_err(|_| anyhow!("vaka did not start listening; log: {}", self.log.display()))??;
        self.base = addr;
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.base);
        eventually("/readyz", Duration::from_secs(30), || async {
            let r = client.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await
        .with_context(|| format!("vaka not ready; log: {}", self.log.display()))?;
        Ok(())
    }

    /// SIGKILL: no shutdown, no last batch, no goodbye.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().ok()?.code()
    }

    pub async fn restart(&mut self) -> Result<()> {
        self.kill_hard();
        self.spawn().await
    }

    pub fn api(&self) -> Api {
        Api {
            base: self.base.clone(),
            token: self.token.clone(),
            client: reqwest::Client::new(),
        }
    }

    pub fn topic(&self, device: &str, channel: &str) -> String {
        format!("{}/d/{device}/{channel}", self.config.topic_root)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

// --------------------------------------------------------------------- HTTP

pub struct Api {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Api {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, value))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let (status, v) = self.call(reqwest::Method::GET, path, None).await?;
        if status != 200 {
            bail!("GET {path}: {status} {v}");
        }
        Ok(v)
    }

    /// Creates a patient and registers and binds its devices.
    pub async fn enroll(&self, patient: &str, devices: &[(&str, &str)]) -> Result<()> {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/patients",
                Some(json!({"id": patient, "name": "Testa Testsson"})),
            )
            .await?;
        if s != 201 {
            bail!("create patient: {s} {v}");
        }
        for (id, kind) in devices {
            let (s, v) = self
                .call(
                    reqwest::Method::POST,
                    "/api/v1/devices",
                    Some(json!({"id": id, "kind": kind})),
                )
                .await?;
            if s != 201 {
                bail!("register device: {s} {v}");
            }
            let (s, v) = self
                .call(
                    reqwest::Method::PUT,
                    &format!("/api/v1/devices/{id}/binding"),
                    Some(json!({"patient_id": patient})),
                )
                .await?;
            if s != 200 {
                bail!("bind device: {s} {v}");
            }
        }
        Ok(())
    }

    pub async fn metric(&self, name: &str) -> Result<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(k, _)| *k == name)
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum())
    }
}

// --------------------------------------------------------------------- MQTT

/// A plain MQTT client (a stand-in for a device or a listener), with its
/// event loop polled on a task; incoming publishes arrive on `inbox`.
pub struct Mqtt {
    pub client: AsyncClient,
    pub inbox: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    acks: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Mqtt {
    pub async fn connect(url: &str, subscribe: &[String]) -> Result<Mqtt> {
        let addr = vaka_gateway::BrokerAddress::parse(url)?;
        let mut options = MqttOptions::new(unique("e2e-client-"), addr.host, addr.port);
        options
            .set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(16 << 20, 16 << 20)
            .set_inflight(200);
        let (client, eventloop) = AsyncClient::new(options, 1024);
        let (tx, inbox) = mpsc::unbounded_channel();
        let (acks_tx, acks) = tokio::sync::watch::channel(0u64);
        let (sub_tx, mut sub_rx) = mpsc::channel(1);
        let task = tokio::spawn(poll(eventloop, tx, acks_tx, sub_tx));
        for filter in subscribe {
            client.subscribe(filter.clone(), QoS::AtLeastOnce).await?;
        }
        if !subscribe.is_empty() {
            tokio::time::timeout(Duration::from_secs(10), sub_rx.recv())
                .await
                .context("no SUBACK")?;
        }
        Ok(Mqtt {
            client,
            inbox,
            acks,
            task,
        })
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
        Ok(())
    }

    /// Waits until the broker has acknowledged `n` publishes in all.
    pub async fn wait_acked(&mut self, n: u64) -> Result<()> {
        tokio::time::timeout(Duration::from_secs(60), self.acks.wait_for(|a| *a >= n))
            .await
            .context("publishes not acknowledged by the broker")??;
        Ok(())
    }

    /// The next message on a topic ending in `suffix`.
    pub async fn next_on(&mut self, suffix: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (topic, payload) = tokio::time::timeout(left, self.inbox.recv())
                .await
                .with_context(|| format!("no message on …{suffix}"))?
                .ok_or_else(|| anyhow!("MQTT client closed"))?;
            if topic.ends_with(suffix) {
                return Ok(serde_json::from_slice(&payload)?);
            }
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn poll(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<(String, Vec<u8>)>,
    acks: tokio::sync::watch::Sender<u64>,
    subscribed: mpsc::Sender<()>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
            }
            Ok(Event::Incoming(Incoming::PubAck(_))) => {
                acks.send_modify(|a| *a += 1);
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                let _ = subscribed.try_send(());
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A Mosquitto of the test's own on a free port, for limits the shared one
/// does not have (a large persistent-session queue, a wide in-flight window).
pub struct OwnBroker {
    child: Child,
    pub url: String,
    dir: PathBuf,
}

impl OwnBroker {
    pub async fn start() -> Result<OwnBroker> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(unique("vaka-mosquitto-"));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 1000\nmax_queued_messages 100000\nlog_dest stderr\nlog_type error\n"
            ),
        )?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mosquitto (is it installed? scripts/test.sh installs it)")?;
        let broker = OwnBroker {
            child,
            url: format!("mqtt://127.0.0.1:{port}"),
            dir,
        };
        eventually("mosquitto to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await?;
        Ok(broker)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- websocket

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn websocket(hub: &Hub) -> Result<(Ws, Value)> {
    let url = format!(
        "{}/api/v1/ws?access_token={}",
        hub.base.replacen("http://", "ws://", 1),
        hub.token
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let first = next_frame(&mut ws, Duration::from_secs(10)).await?;
    if first["type"] != "snapshot" {
        bail!("expected a snapshot first, got {first}");
    }
    Ok((ws, first))
}

pub async fn next_frame(ws: &mut Ws, timeout: Duration) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(timeout, ws.next())
            .await
            .context("no websocket frame in time")?
            .ok_or_else(|| anyhow!("websocket closed"))??;
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            return Ok(serde_json::from_str(t.as_str())?);
        }
    }
}

/// Waits for an `alert` frame of `rule` (ignoring others).
pub async fn alert_of(ws: &mut Ws, rule: &str, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = next_frame(ws, left)
            .await
            .with_context(|| format!("no {rule} alert on the websocket"))?;
        if frame["type"] == "alert" && frame["alert"]["rule"] == rule {
            return Ok(frame["alert"].clone());
        }
    }
}

pub async fn close(mut ws: Ws) {
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
}

/// Now, as SenML seconds.
pub fn now_s() -> f64 {
    vaka_gateway::UnixMillis::now().as_secs_f64().floor()
}
