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

    /// Fails if any active alert disagrees with the stored data (see
    /// `vaka_hub::consistency`): every end-to-end test that raises alerts
    /// ends with this.
    pub async fn assert_consistent(&self) -> Result<()> {
        let store = self.store().await?;
        let violations = vaka_hub::consistency::check(&store).await?;
        store.close().await;
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
            bail!("alerts that disagree with the data:\n{}", list.join("\n"));
        }
        Ok(())
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
        // Build it in the profile the tests were built in: `target/debug`
        // is the `dev` profile, every other directory is named after its
        // profile (`--release` builds into `target/release`).
        let profile = match dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev",
            Some(name) => name,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "vaka-hub",
                "--bin",
                "vaka",
                "--profile",
                profile,
            ])
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
        HubConfig::with_database(&db.url, mqtt_url)
    }

    /// For a database that is not a [`TestDb`] (e.g. an [`OwnPostgres`]).
    pub fn with_database(database_url: &str, mqtt_url: &str) -> HubConfig {
        HubConfig {
            database_url: database_url.to_owned(),
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

    /// SIGSTOP: the process is frozen (it neither reads nor acknowledges)
    /// until [`Hub::resume`]; its sockets stay open.
    pub fn pause(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`Hub::pause`].
    pub fn resume(&self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("vaka is not running"))?;
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {signal} failed");
        }
        Ok(())
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

    /// Publishes the broker has acknowledged so far (PUBACKs received; a
    /// publish resent after a reconnect is acknowledged again).
    pub fn acked(&self) -> u64 {
        *self.acks.borrow()
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
/// does not have (no limit on a session's queue, a wide in-flight window),
/// and for tests that restart the broker (never restart the shared one:
/// other tests run against it in parallel).
pub struct OwnBroker {
    child: Option<Child>,
    pub url: String,
    port: u16,
    conf: PathBuf,
    dir: PathBuf,
}

impl OwnBroker {
    /// Without persistence: a restart forgets every session.
    pub async fn start() -> Result<OwnBroker> {
        OwnBroker::start_with(false).await
    }

    /// With persistence: sessions and their queued QoS 1 messages are
    /// written to disk when Mosquitto stops and read back when it starts.
    pub async fn start_persistent() -> Result<OwnBroker> {
        OwnBroker::start_with(true).await
    }

    async fn start_with(persistent: bool) -> Result<OwnBroker> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(unique("vaka-mosquitto-"));
        std::fs::create_dir_all(&dir)?;
        // Mosquitto started as root drops to its own user; let it write here.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        let persistence = if persistent {
            format!(
                "persistence true\npersistence_location {}/\n",
                dir.display()
            )
        } else {
            "persistence false\n".to_owned()
        };
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}\
                 max_inflight_messages 1000\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\n"
            ),
        )?;
        let mut broker = OwnBroker {
            child: None,
            url: format!("mqtt://127.0.0.1:{port}"),
            port,
            conf,
            dir,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    async fn spawn(&mut self) -> Result<()> {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mosquitto (is it installed? scripts/test.sh installs it)")?;
        self.child = Some(child);
        let port = self.port;
        eventually("mosquitto to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await
    }

    /// SIGTERM, as `systemctl stop` does: Mosquitto writes its persistence
    /// file and exits. Connected clients see their connection drop.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts it again after [`OwnBroker::stop`], on the same port and with
    /// the same persistence file.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the broker is still running");
        }
        self.spawn().await
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// A PostgreSQL server of the test's own (initdb in a temporary directory,
/// a free port), for tests that stop and restart the database. Never do
/// that to the shared server: other tests run against it in parallel.
///
/// PostgreSQL refuses to run as root; as root, its programs run as the
/// `postgres` user (which the Debian package creates) in a directory that
/// user owns.
pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    as_postgres: bool,
}

/// Where Debian puts the server programs (not on PATH).
fn pg_bin(program: &str) -> PathBuf {
    let base = PathBuf::from("/usr/lib/postgresql");
    let newest = std::fs::read_dir(&base)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|v| v.parse::<u32>().ok()))
        .max();
    match newest {
        Some(v) => base.join(v.to_string()).join("bin").join(program),
        None => PathBuf::from(program),
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl OwnPostgres {
    pub async fn start() -> Result<OwnPostgres> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(unique("vaka-pg-"));
        std::fs::create_dir_all(&dir)?;
        let as_postgres = running_as_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()?;
            if !status.success() {
                bail!("chown postgres {dir:?} failed");
            }
        }
        let pg = OwnPostgres {
            port,
            dir,
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        pg.start_again().await?;
        Ok(pg)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when we are root).
    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let bin = pg_bin(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let out = command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn start_again(&self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=40 -c shared_buffers=16MB",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, with
    /// no checkpoint, as in a crash; the next start recovers from the WAL.
    pub fn stop_immediate(&self) -> Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- websocket

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn websocket(hub: &Hub) -> Result<(Ws, Value)> {
    websocket_with(hub, "").await
}

/// A websocket opened with query parameters of its own, e.g.
/// `readings=false&`.
pub async fn websocket_with(hub: &Hub, query: &str) -> Result<(Ws, Value)> {
    let url = format!(
        "{}/api/v1/ws?{query}access_token={}",
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
