//! Storage: PostgreSQL (TimescaleDB when present) or SQLite, from one API.
//!
//! Most queries are written once: [`on_pool!`] expands a block once per
//! backend, so the same SQL text (both accept `$1` placeholders) is checked
//! against each driver's types. Where the backends really differ (batched
//! ingest, array parameters, partition upkeep), `pg.rs` and `sqlite.rs`
//! hold their own code. Every query runs in the tests on both backends.

mod alerts;
mod board;
mod consistency;
mod credentials;
mod pg;
mod plans;
mod sqlite;
mod staff;
mod time;

pub use alerts::{AlertHistoryRow, AlertQuery, AlertRow};
pub use credentials::{DeviceCredential, Revoked};
pub use plans::{CtgSessionRow, PlanVersion};
pub use staff::{
    AuditFilter, Call, Credentials, NewCall, NewStaff, SessionRow, StaffChange, StaffMember,
};
pub use time::DbTime;

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::FromRow;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use vaka_gateway::model::{Content, DeviceKind, EventKind, Metric};
use vaka_gateway::{Message, RejectCode, Turn, UnixMillis};

/// Runs `$body` with `$pool` bound to the backend's pool, once per backend.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Postgres($pool) => $body,
            $crate::store::Store::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use postgres://… or sqlite://…")]
    Url(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Turn(#[from] vaka_gateway::TurnError),
}

impl StoreError {
    /// Maps a unique violation to [`StoreError::Conflict`].
    fn conflict_on_unique(e: sqlx::Error, what: &'static str) -> StoreError {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Db(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Begins a transaction that will write. On SQLite it takes the write lock
/// at once (`BEGIN IMMEDIATE`): a deferred transaction that reads first and
/// writes later fails at once with "database is locked" when another writer
/// committed in between (the busy timeout does not cover that upgrade),
/// whereas an immediate one waits its turn. PostgreSQL needs nothing of the
/// kind: its row locks wait.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send;
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send
    {
        self.begin()
    }
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send
    {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

/// A connection pool to one of the two backends.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` (a file, created if missing).
    pub async fn connect(url: &str) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            Ok(Store::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            // Full sync: a commit is on disk before the broker gets its ack.
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let pool = SqlitePoolOptions::new()
                // An in-memory database exists once per connection.
                .max_connections(if in_memory { 1 } else { 4 })
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?;
            Ok(Store::Sqlite(pool))
        } else {
            Err(StoreError::Url(url.to_owned()))
        }
    }

    /// How many ingest batches should commit at once. PostgreSQL overlaps
    /// one batch's statements with the previous one's WAL flush, and the
    /// reading of the registry with both. SQLite has one writer, so only the
    /// registry and the preparation of the next batch overlap a commit:
    /// two are enough there (measured in BENCHMARKS.md).
    pub fn default_commit_pipeline(&self) -> usize {
        match self {
            Store::Postgres(_) => 4,
            Store::Sqlite(_) => 2,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgresql",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending migrations; safe to run again and again.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Postgres(pool) => {
                sqlx::migrate!("migrations/pg").run(pool).await?;
                pg::ensure_partitions(pool).await?;
            }
            Store::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    /// Keeps monthly partitions ahead of time (plain PostgreSQL); run daily.
    pub async fn maintain(&self) -> Result<()> {
        if let Store::Postgres(pool) = self {
            pg::ensure_partitions(pool).await?;
        }
        Ok(())
    }

    /// TimescaleDB jobs whose last run failed (`None`: no TimescaleDB).
    pub async fn failed_timescale_jobs(&self) -> Result<Option<i64>> {
        match self {
            Store::Postgres(pool) => pg::failed_timescale_jobs(pool).await,
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// How observations are laid out: "hypertable", "partitioned" or "table".
    pub async fn observations_layout(&self) -> Result<&'static str> {
        match self {
            Store::Postgres(pool) => pg::observations_layout(pool).await,
            Store::Sqlite(_) => Ok("table"),
        }
    }

    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    // ---------------------------------------------------------------- patients

    pub async fn create_patient(&self, p: &NewPatient, now: UnixMillis) -> Result<Patient> {
        let patient = Patient {
            patient_id: p.patient_id.clone(),
            display_name: p.display_name.clone(),
            timezone: p.timezone.clone(),
            program: p.program.clone(),
            created_at: now.into(),
        };
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO patients (patient_id, display_name, timezone, program, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&patient.patient_id)
        .bind(&patient.display_name)
        .bind(&patient.timezone)
        .bind(&patient.program)
        .bind(patient.created_at)
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(|e| StoreError::conflict_on_unique(e, "patient"))?;
        // Every patient starts with the template of the program.
        let plan = crate::plans::Plan::template(patient.program.as_deref());
        self.save_plan(
            &patient.patient_id,
            &plan,
            None,
            "system",
            "programmets mall",
            now,
        )
        .await?;
        Ok(patient)
    }

    pub async fn patient(&self, patient_id: &str) -> Result<Option<Patient>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT patient_id, display_name, timezone, program, created_at
             FROM patients WHERE patient_id = $1",
        )
        .bind(patient_id)
        .fetch_optional(pool)
        .await)?)
    }

    pub async fn patients(&self) -> Result<Vec<Patient>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT patient_id, display_name, timezone, program, created_at
             FROM patients ORDER BY patient_id",
        )
        .fetch_all(pool)
        .await)?)
    }

    // ----------------------------------------------------------------- devices

    pub async fn register_device(
        &self,
        device_id: &str,
        kind: DeviceKind,
        now: UnixMillis,
    ) -> Result<Device> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO devices (device_id, kind, registered_at) VALUES ($1, $2, $3)",
        )
        .bind(device_id)
        .bind(kind.as_str())
        .bind(DbTime(now))
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(|e| StoreError::conflict_on_unique(e, "device"))?;
        self.device(device_id)
            .await?
            .ok_or(StoreError::NotFound("device"))
    }

    pub async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        Ok(on_pool!(self, pool => sqlx::query_as(DEVICE_SELECT_ONE)
            .bind(device_id)
            .fetch_optional(pool)
            .await)?)
    }

    pub async fn devices(&self) -> Result<Vec<Device>> {
        Ok(on_pool!(self, pool => sqlx::query_as(DEVICE_SELECT_ALL).fetch_all(pool).await)?)
    }

    /// Binds a device to a patient from `from` on, closing its open binding.
    /// A device's first binding, without `from`, covers all its past: there
    /// is nobody else its stored readings could belong to.
    pub async fn bind_device(
        &self,
        device_id: &str,
        patient_id: &str,
        from: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<Binding> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let known: Option<(String,)> = sqlx::query_as("SELECT device_id FROM devices WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_none() {
                return Err(StoreError::NotFound("device"));
            }
            let patient: Option<(String,)> = sqlx::query_as("SELECT patient_id FROM patients WHERE patient_id = $1")
                .bind(patient_id)
                .fetch_optional(&mut *tx)
                .await?;
            if patient.is_none() {
                return Err(StoreError::NotFound("patient"));
            }
            let bound_before: (i64,) = sqlx::query_as("SELECT count(*) FROM device_bindings WHERE device_id = $1")
                .bind(device_id)
                .fetch_one(&mut *tx)
                .await?;
            let from = from.unwrap_or(if bound_before.0 == 0 { UnixMillis(0) } else { now });
            // A new binding must start after the open one (whose end it
            // becomes): the table's CHECK says so, and it is the caller's
            // mistake, not ours.
            sqlx::query("UPDATE device_bindings SET valid_to = $2 WHERE device_id = $1 AND valid_to IS NULL")
                .bind(device_id)
                .bind(DbTime(from))
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_check_violation() => {
                        StoreError::Conflict("binding starting after the current one")
                    }
                    _ => StoreError::Db(e),
                })?;
            let binding: Binding = sqlx::query_as(
                "INSERT INTO device_bindings (device_id, patient_id, valid_from) VALUES ($1, $2, $3)
                 RETURNING binding_id, device_id, patient_id, valid_from, valid_to",
            )
            .bind(device_id)
            .bind(patient_id)
            .bind(DbTime(from))
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(binding)
        })
    }

    /// Ends the device's open binding at `at`. Returns whether there was one.
    pub async fn unbind_device(&self, device_id: &str, at: UnixMillis) -> Result<bool> {
        let done = on_pool!(self, pool => sqlx::query(
            "UPDATE device_bindings SET valid_to = $2
             WHERE device_id = $1 AND valid_to IS NULL AND valid_from < $2",
        )
        .bind(device_id)
        .bind(DbTime(at))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// The bindings (all of them, past and present) of the given devices,
    /// and which of the devices exist at all.
    pub async fn registry(&self, device_ids: &[&str]) -> Result<Vec<RegistryRow>> {
        match self {
            Store::Postgres(pool) => pg::registry(pool, device_ids).await,
            Store::Sqlite(pool) => sqlite::registry(pool, device_ids).await,
        }
    }

    // ---------------------------------------------------------------- ingest

    /// Stores a batch of messages, quarantine included, in one
    /// transaction, taking its [`Turn`] in the gateway's commit pipeline;
    /// tells, per record, whether it was new.
    pub async fn ingest(&self, batch: &IngestBatch<'_>, turn: &mut Turn) -> Result<IngestOutcome> {
        match self {
            Store::Postgres(pool) => pg::ingest(pool, batch, turn).await,
            Store::Sqlite(pool) => sqlite::ingest(pool, batch, turn).await,
        }
    }

    // ----------------------------------------------------------- observations

    pub async fn observations(&self, q: &ObservationQuery<'_>) -> Result<Vec<StoredObservation>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT time, device_id, metric, value, unit FROM observations
             WHERE patient_id = $1 AND ($2 IS NULL OR metric = $2)
               AND ($3 IS NULL OR time >= $3) AND ($4 IS NULL OR time < $4)
             ORDER BY time DESC, metric LIMIT $5",
        )
        .bind(q.patient_id)
        .bind(q.metric.map(|m| m.as_str()))
        .bind(q.from.map(DbTime))
        .bind(q.to.map(DbTime))
        .bind(q.limit)
        .fetch_all(pool)
        .await)?)
    }

    /// Observations in `[from, to)` (data time) for rebuilding windows,
    /// oldest first.
    pub async fn observations_between(
        &self,
        from: UnixMillis,
        to: UnixMillis,
        metrics: &[Metric],
    ) -> Result<Vec<PatientObservation>> {
        let names: Vec<&str> = metrics.iter().map(|m| m.as_str()).collect();
        let rows: Vec<PatientObservationRow> = match self {
            Store::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT time, patient_id, device_id, metric, value FROM observations
                 WHERE time >= $1 AND time < $2 AND metric = ANY($3) ORDER BY time, device_id, metric",
                )
                .bind(DbTime(from))
                .bind(DbTime(to))
                .bind(&names)
                .fetch_all(pool)
                .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT time, patient_id, device_id, metric, value FROM observations
                 WHERE time >= $1 AND time < $2 AND metric IN (SELECT value FROM json_each($3))
                 ORDER BY time, device_id, metric",
                )
                .bind(DbTime(from))
                .bind(DbTime(to))
                .bind(serde_json::to_string(&names).unwrap_or_default())
                .fetch_all(pool)
                .await?
            }
        };
        rows.into_iter().map(PatientObservation::try_from).collect()
    }

    /// Events in `[from, to)` (data time), oldest first.
    pub async fn events_between(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<PatientEvent>> {
        let rows: Vec<PatientEventRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT time, patient_id, device_id, kind, text FROM events
             WHERE time >= $1 AND time < $2 ORDER BY time, device_id, kind",
        )
        .bind(DbTime(from))
        .bind(DbTime(to))
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(PatientEvent::try_from).collect()
    }

    /// One patient's observations, events and status in `[from, to)` (data
    /// time), each oldest first: what `vaka replay` runs the rules over.
    pub async fn patient_history(
        &self,
        patient_id: &str,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<(
        Vec<PatientObservation>,
        Vec<PatientEvent>,
        Vec<PatientStatus>,
    )> {
        let (from, to) = (DbTime(from), DbTime(to));
        let obs: Vec<PatientObservationRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT time, patient_id, device_id, metric, value FROM observations
             WHERE patient_id = $1 AND time >= $2 AND time < $3 ORDER BY time, device_id, metric",
        )
        .bind(patient_id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await)?;
        let events: Vec<PatientEventRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT time, patient_id, device_id, kind, text FROM events
             WHERE patient_id = $1 AND time >= $2 AND time < $3 ORDER BY time, device_id, kind",
        )
        .bind(patient_id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await)?;
        let status: Vec<PatientStatusRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT time, patient_id, device_id, field, value_num, value_text FROM status_reports
             WHERE patient_id = $1 AND time >= $2 AND time < $3 ORDER BY time, device_id, field",
        )
        .bind(patient_id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await)?;
        Ok((
            obs.into_iter()
                .map(PatientObservation::try_from)
                .collect::<Result<_>>()?,
            events
                .into_iter()
                .map(PatientEvent::try_from)
                .collect::<Result<_>>()?,
            status
                .into_iter()
                .map(PatientStatus::try_from)
                .collect::<Result<_>>()?,
        ))
    }

    /// Status reports in `[from, to)` (data time) of bound devices, oldest
    /// first.
    pub async fn status_between(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<PatientStatus>> {
        let rows: Vec<PatientStatusRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT time, patient_id, device_id, field, value_num, value_text FROM status_reports
             WHERE time >= $1 AND time < $2 AND patient_id IS NOT NULL ORDER BY time, device_id, field",
        )
        .bind(DbTime(from))
        .bind(DbTime(to))
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(PatientStatus::try_from).collect()
    }

    pub async fn count_observations(&self, patient_id: &str) -> Result<i64> {
        let (n,): (i64,) = on_pool!(self, pool => sqlx::query_as(
            "SELECT count(*) FROM observations WHERE patient_id = $1",
        )
        .bind(patient_id)
        .fetch_one(pool)
        .await)?;
        Ok(n)
    }

    // ------------------------------------------------------------- quarantine

    pub async fn quarantine(&self, limit: i64) -> Result<Vec<QuarantineEntry>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT quarantine_id, received_at, device_id, topic, reason, reference, first_time, payload
             FROM quarantine WHERE resolution IS NULL ORDER BY received_at DESC, quarantine_id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    /// Marks a device's pending quarantined messages as dealt with.
    pub async fn resolve_quarantine(
        &self,
        device_id: &str,
        resolution: &str,
        by: &str,
        now: UnixMillis,
    ) -> Result<u64> {
        Ok(on_pool!(self, pool => sqlx::query(
            "UPDATE quarantine SET resolution = $2, resolved_by = $3, resolved_at = $4
             WHERE device_id = $1 AND resolution IS NULL",
        )
        .bind(device_id)
        .bind(resolution)
        .bind(by)
        .bind(DbTime(now))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?)
    }

    /// The devices bound to a patient now.
    pub async fn patient_devices(&self, patient_id: &str) -> Result<Vec<PatientDevice>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT d.device_id, d.kind, b.valid_from AS bound_since, d.last_seen_at, d.battery_pct,
                    d.connection, d.firmware
             FROM device_bindings b JOIN devices d ON d.device_id = b.device_id
             WHERE b.patient_id = $1 AND b.valid_to IS NULL ORDER BY d.kind, d.device_id",
        )
        .bind(patient_id)
        .fetch_all(pool)
        .await)?)
    }
}

/// A device of a patient, as the patient view shows it.
#[derive(Debug, Clone, PartialEq, Serialize, FromRow)]
pub struct PatientDevice {
    #[serde(rename = "id")]
    pub device_id: String,
    pub kind: String,
    pub bound_since: DbTime,
    #[serde(rename = "last_contact_at")]
    pub last_seen_at: Option<DbTime>,
    #[serde(rename = "battery")]
    pub battery_pct: Option<f64>,
    pub connection: Option<String>,
    pub firmware: Option<String>,
}

const DEVICE_SELECT_ALL: &str =
    "SELECT d.device_id, d.kind, d.registered_at, d.last_seen_at, d.battery_pct,
        d.connection, d.firmware, d.heartbeat_s, b.patient_id
 FROM devices d LEFT JOIN device_bindings b ON b.device_id = d.device_id AND b.valid_to IS NULL
 ORDER BY d.device_id";

const DEVICE_SELECT_ONE: &str =
    "SELECT d.device_id, d.kind, d.registered_at, d.last_seen_at, d.battery_pct,
        d.connection, d.firmware, d.heartbeat_s, b.patient_id
 FROM devices d LEFT JOIN device_bindings b ON b.device_id = d.device_id AND b.valid_to IS NULL
 WHERE d.device_id = $1";

// ------------------------------------------------------------------ records

#[derive(Debug, Clone)]
pub struct NewPatient {
    pub patient_id: String,
    pub display_name: String,
    pub timezone: String,
    pub program: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, FromRow)]
pub struct Patient {
    pub patient_id: String,
    pub display_name: String,
    pub timezone: String,
    pub program: Option<String>,
    pub created_at: DbTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, FromRow)]
pub struct Device {
    pub device_id: String,
    pub kind: String,
    pub registered_at: DbTime,
    pub last_seen_at: Option<DbTime>,
    pub battery_pct: Option<f64>,
    pub connection: Option<String>,
    pub firmware: Option<String>,
    pub heartbeat_s: Option<f64>,
    /// The patient of the open binding, if any.
    pub patient_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, FromRow)]
pub struct Binding {
    pub binding_id: i64,
    pub device_id: String,
    pub patient_id: String,
    pub valid_from: DbTime,
    pub valid_to: Option<DbTime>,
}

/// A device and one of its bindings (none if it was never bound).
#[derive(Debug, Clone, FromRow)]
pub struct RegistryRow {
    pub device_id: String,
    /// The device's credentials were revoked (`vaka device revoke`).
    pub revoked: bool,
    pub patient_id: Option<String>,
    pub valid_from: Option<DbTime>,
    pub valid_to: Option<DbTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, FromRow)]
pub struct StoredObservation {
    pub time: DbTime,
    pub device_id: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
}

pub struct ObservationQuery<'a> {
    pub patient_id: &'a str,
    pub metric: Option<Metric>,
    pub from: Option<UnixMillis>,
    pub to: Option<UnixMillis>,
    pub limit: i64,
}

#[derive(FromRow)]
struct PatientObservationRow {
    time: DbTime,
    patient_id: String,
    device_id: String,
    metric: String,
    value: f64,
}

/// An observation with its patient, as the engine rebuilds from it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientObservation {
    pub time: UnixMillis,
    pub patient_id: String,
    pub device_id: String,
    pub metric: Metric,
    pub value: f64,
}

impl TryFrom<PatientObservationRow> for PatientObservation {
    type Error = StoreError;
    fn try_from(r: PatientObservationRow) -> Result<Self> {
        let metric = Metric::parse(&r.metric).ok_or_else(|| {
            StoreError::Corrupt(format!("unknown metric {:?} in observations", r.metric))
        })?;
        Ok(PatientObservation {
            time: r.time.into(),
            patient_id: r.patient_id,
            device_id: r.device_id,
            metric,
            value: r.value,
        })
    }
}

#[derive(FromRow)]
struct PatientEventRow {
    time: DbTime,
    patient_id: String,
    device_id: String,
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatientEvent {
    pub time: UnixMillis,
    pub patient_id: String,
    pub device_id: String,
    pub kind: EventKind,
    pub text: Option<String>,
}

impl TryFrom<PatientEventRow> for PatientEvent {
    type Error = StoreError;
    fn try_from(r: PatientEventRow) -> Result<Self> {
        let kind = EventKind::parse(&r.kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event {:?} in events", r.kind)))?;
        Ok(PatientEvent {
            time: r.time.into(),
            patient_id: r.patient_id,
            device_id: r.device_id,
            kind,
            text: r.text,
        })
    }
}

#[derive(FromRow)]
struct PatientStatusRow {
    time: DbTime,
    patient_id: String,
    device_id: String,
    field: String,
    value_num: Option<f64>,
    value_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatientStatus {
    pub patient_id: String,
    pub device_id: String,
    pub report: vaka_gateway::model::StatusReport,
}

impl TryFrom<PatientStatusRow> for PatientStatus {
    type Error = StoreError;
    fn try_from(r: PatientStatusRow) -> Result<Self> {
        use vaka_gateway::model::{StatusField, StatusReport, StatusValue};
        let field = StatusField::parse(&r.field)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown status field {:?}", r.field)))?;
        let value = match (r.value_num, r.value_text) {
            (Some(v), _) => StatusValue::Number(v),
            (None, Some(t)) => StatusValue::Text(t),
            (None, None) => {
                return Err(StoreError::Corrupt(
                    "a status report without a value".into(),
                ));
            }
        };
        Ok(PatientStatus {
            patient_id: r.patient_id,
            device_id: r.device_id,
            report: StatusReport {
                time: r.time.into(),
                field,
                value,
            },
        })
    }
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct QuarantineEntry {
    pub quarantine_id: i64,
    pub received_at: DbTime,
    pub device_id: String,
    pub topic: String,
    pub reason: String,
    pub reference: String,
    pub first_time: Option<DbTime>,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// A message filed under a patient.
pub struct FiledMessage<'m> {
    pub message: &'m Message,
    pub patient_id: &'m str,
}

/// A message kept in quarantine.
pub struct QuarantinedMessage<'m> {
    pub message: &'m Message,
    pub topic: String,
    pub reason: RejectCode,
}

#[derive(Default)]
pub struct IngestBatch<'m> {
    pub filed: Vec<FiledMessage<'m>>,
    pub quarantined: Vec<QuarantinedMessage<'m>>,
    /// Devices whose "last contact" need not be written this time (it was,
    /// a moment ago); their status changes are written all the same.
    pub seen_recently: std::collections::HashSet<&'m str>,
}

/// Per filed message, per record (in the message's order): newly stored?
#[derive(Debug, Default, PartialEq)]
pub struct IngestOutcome {
    pub new: Vec<Vec<bool>>,
}

/// The device columns a status message updates.
#[derive(Debug, Default)]
struct DeviceUpdate {
    battery_pct: Option<f64>,
    connection: Option<String>,
    firmware: Option<String>,
    heartbeat_s: Option<f64>,
}

impl DeviceUpdate {
    fn from_content(content: &Content) -> DeviceUpdate {
        use vaka_gateway::model::{StatusField, StatusValue};
        let mut u = DeviceUpdate::default();
        if let Content::Status(reports) = content {
            for r in reports {
                match (&r.field, &r.value) {
                    (StatusField::Batt, StatusValue::Number(v)) => u.battery_pct = Some(*v),
                    (StatusField::Hb, StatusValue::Number(v)) => u.heartbeat_s = Some(*v),
                    (StatusField::Conn, StatusValue::Text(s)) => u.connection = Some(s.clone()),
                    (StatusField::Fw, StatusValue::Text(s)) => u.firmware = Some(s.clone()),
                    _ => {}
                }
            }
        }
        u
    }
}

impl Serialize for DbTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(
            &self
                .to_chrono()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

// ------------------------------------------------------- ingest, flattened

/// A batch laid out as rows, the same for both backends. `msg`/`rec` point
/// back into [`IngestOutcome::new`].
struct Flat<'m> {
    observations: Vec<ObsRow<'m>>,
    events: Vec<EventRow<'m>>,
    status: Vec<StatusRow<'m>>,
    /// One per device, sorted by id (a stable lock order).
    devices: Vec<DeviceTouch<'m>>,
}

struct ObsRow<'m> {
    time: DbTime,
    patient: &'m str,
    device: &'m str,
    metric: Metric,
    value: f64,
    received: DbTime,
    msg: usize,
    rec: usize,
}

struct EventRow<'m> {
    time: DbTime,
    patient: &'m str,
    device: &'m str,
    kind: EventKind,
    text: Option<&'m str>,
    received: DbTime,
    msg: usize,
    rec: usize,
}

struct StatusRow<'m> {
    time: DbTime,
    patient: &'m str,
    device: &'m str,
    field: &'static str,
    number: Option<f64>,
    text: Option<&'m str>,
    received: DbTime,
    msg: usize,
    rec: usize,
}

struct DeviceTouch<'m> {
    device: &'m str,
    seen: DbTime,
    update: DeviceUpdate,
}

impl<'m> Flat<'m> {
    fn new(batch: &IngestBatch<'m>) -> (Flat<'m>, IngestOutcome) {
        use vaka_gateway::model::StatusValue;
        let mut flat = Flat {
            observations: Vec::new(),
            events: Vec::new(),
            status: Vec::new(),
            devices: Vec::new(),
        };
        let mut outcome = IngestOutcome::default();
        let mut touched: std::collections::BTreeMap<&'m str, DeviceTouch<'m>> = Default::default();
        for (msg, filed) in batch.filed.iter().enumerate() {
            let m = filed.message;
            let device = m.device.as_str();
            let patient = filed.patient_id;
            let received = DbTime(m.received_at);
            outcome.new.push(vec![false; m.content.len()]);
            match &m.content {
                Content::Observations(obs) => {
                    for (rec, o) in obs.iter().enumerate() {
                        flat.observations.push(ObsRow {
                            time: o.time.into(),
                            patient,
                            device,
                            metric: o.metric,
                            value: o.value,
                            received,
                            msg,
                            rec,
                        });
                    }
                }
                Content::Events(events) => {
                    for (rec, e) in events.iter().enumerate() {
                        flat.events.push(EventRow {
                            time: e.time.into(),
                            patient,
                            device,
                            kind: e.kind,
                            text: e.text.as_deref(),
                            received,
                            msg,
                            rec,
                        });
                    }
                }
                Content::Status(reports) => {
                    for (rec, s) in reports.iter().enumerate() {
                        let (number, text) = match &s.value {
                            StatusValue::Number(v) => (Some(*v), None),
                            StatusValue::Text(t) => (None, Some(t.as_str())),
                        };
                        flat.status.push(StatusRow {
                            time: s.time.into(),
                            patient,
                            device,
                            field: s.field.as_str(),
                            number,
                            text,
                            received,
                            msg,
                            rec,
                        });
                    }
                }
            }
            let update = DeviceUpdate::from_content(&m.content);
            let touch = touched.entry(device).or_insert_with(|| DeviceTouch {
                device,
                seen: received,
                update: DeviceUpdate::default(),
            });
            touch.seen = touch.seen.max(received);
            touch.update.merge(update);
        }
        flat.devices = touched
            .into_values()
            .filter(|t| !(t.update.is_empty() && batch.seen_recently.contains(t.device)))
            .collect();
        (flat, outcome)
    }
}

impl Flat<'_> {
    /// The fast path stored every observation: all of them are new.
    fn all_observations_new(&self, outcome: &mut IngestOutcome) {
        for r in &self.observations {
            outcome.new[r.msg][r.rec] = true;
        }
    }
}

impl DeviceUpdate {
    fn is_empty(&self) -> bool {
        self.battery_pct.is_none()
            && self.connection.is_none()
            && self.firmware.is_none()
            && self.heartbeat_s.is_none()
    }

    /// Later values win.
    fn merge(&mut self, later: DeviceUpdate) {
        if later.battery_pct.is_some() {
            self.battery_pct = later.battery_pct;
        }
        if later.connection.is_some() {
            self.connection = later.connection;
        }
        if later.firmware.is_some() {
            self.firmware = later.firmware;
        }
        if later.heartbeat_s.is_some() {
            self.heartbeat_s = later.heartbeat_s;
        }
    }
}

// ------------------------------------------------------------------- audit

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct AuditEntry {
    pub at: DbTime,
    pub actor: String,
    pub action: String,
    pub patient_id: Option<String>,
    pub detail: Option<String>,
    pub source: Option<String>,
}

/// The insert of one audit entry, bound; a macro because each backend's
/// query type differs (see [`on_pool!`]).
/// The insert of one quarantined message (idempotent), for either backend.
macro_rules! quarantine_insert {
    ($q:expr) => {
        sqlx::query(
            "INSERT INTO quarantine (received_at, device_id, topic, reason, reference, first_time, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(DbTime($q.message.received_at))
        .bind($q.message.device.as_str())
        .bind(&$q.topic)
        .bind($q.reason.as_str())
        .bind(&$q.message.reference)
        .bind($q.message.content.first_time().map(DbTime))
        .bind($q.message.payload.as_ref())
    };
}
pub(crate) use quarantine_insert;

macro_rules! audit_insert {
    ($e:expr) => {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, patient_id, detail, source)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($e.at)
        .bind(&$e.actor)
        .bind(&$e.action)
        .bind(&$e.patient_id)
        .bind(&$e.detail)
        .bind(&$e.source)
    };
}

impl Store {
    pub async fn audit(&self, e: &AuditEntry) -> Result<()> {
        on_pool!(self, pool => audit_insert!(e)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Writes several entries in one transaction (a board shows fifty
    /// patients: each of them gets its line).
    pub async fn audit_many(&self, entries: &[AuditEntry]) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for e in entries {
                audit_insert!(e)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn audit_log(&self, patient_id: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT at, actor, action, patient_id, detail, source FROM audit_log
             WHERE ($1 IS NULL OR patient_id = $1) ORDER BY at DESC, audit_id DESC LIMIT $2",
        )
        .bind(patient_id)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }
}
