//! PostgreSQL-specific storage: batched ingest through `UNNEST` of arrays
//! (one statement per table per batch, whatever its size), the device
//! registry lookup with `= ANY`, and partition upkeep.

use std::collections::HashMap;

use sqlx::PgPool;

use vaka_gateway::Turn;

use super::{
    BeginWrite, DbTime, Flat, IngestBatch, IngestOutcome, ObsRow, RegistryRow, Result,
    quarantine_insert,
};

pub(super) async fn registry(pool: &PgPool, device_ids: &[&str]) -> Result<Vec<RegistryRow>> {
    Ok(sqlx::query_as(
        // A join with the ids, not `= ANY($1)`: the planner would scan the
        // devices and compare each with every id of the batch.
        "SELECT d.device_id, (c.revoked_at IS NOT NULL) AS revoked,
                b.patient_id, b.valid_from, b.valid_to
         FROM UNNEST($1::text[]) AS batch(device_id)
         JOIN devices d ON d.device_id = batch.device_id
         LEFT JOIN device_bindings b ON b.device_id = d.device_id
         LEFT JOIN device_credentials c ON c.device_id = d.device_id",
    )
    .bind(device_ids)
    .fetch_all(pool)
    .await?)
}

/// The insert of observation rows from seven arrays, then `$tail` (e.g.
/// `ON CONFLICT …`): a literal, for `sqlx::query` and `sqlx::query_as`.
macro_rules! insert_observations_sql {
    ($tail:literal) => {
        concat!(
            "INSERT INTO observations (time, patient_id, device_id, metric, value, unit, received_at)
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                                  $5::float8[], $6::text[], $7::timestamptz[])",
            $tail
        )
    };
}

/// Binds observation rows as the seven arrays of an `UNNEST` (column by
/// column, in the table's order), to an `INSERT` or an `INSERT … RETURNING`.
macro_rules! bind_observations {
    ($query:expr, $rows:expr) => {
        $query
            .bind($rows.iter().map(|r| r.time).collect::<Vec<_>>())
            .bind($rows.iter().map(|r| r.patient).collect::<Vec<_>>())
            .bind($rows.iter().map(|r| r.device).collect::<Vec<_>>())
            .bind($rows.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>())
            .bind($rows.iter().map(|r| r.value).collect::<Vec<_>>())
            .bind($rows.iter().map(|r| r.metric.unit()).collect::<Vec<_>>())
            .bind($rows.iter().map(|r| r.received).collect::<Vec<_>>())
    };
}

/// One transaction for the batch. The observations go first, by the fast
/// path: a plain `INSERT` of all of them, as a new batch almost always is
/// (`ON CONFLICT DO NOTHING … RETURNING` costs half as much again, an extra
/// index probe and a returned row per record). A redelivered record makes
/// it fail on the unique key; then the transaction starts over, and every
/// table takes the careful path that tells new from already stored.
pub(super) async fn ingest(
    pool: &PgPool,
    batch: &IngestBatch<'_>,
    turn: &mut Turn,
) -> Result<IngestOutcome> {
    let (flat, mut outcome) = Flat::new(batch);
    turn.may_write().await?;
    let mut tx = pool.begin_write().await?;
    let all_new = !flat.observations.is_empty()
        && match insert_observations(&mut tx, &flat.observations).await {
            Ok(()) => true,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                tx = pool.begin_write().await?;
                false
            }
            Err(e) => return Err(e.into()),
        };
    if all_new {
        flat.all_observations_new(&mut outcome);
    } else if !flat.observations.is_empty() {
        let rows = &flat.observations;
        let inserted: Vec<(String, String, DbTime)> = bind_observations!(
            sqlx::query_as(insert_observations_sql!(
                " ON CONFLICT DO NOTHING RETURNING device_id, metric, time"
            )),
            rows
        )
        .fetch_all(&mut *tx)
        .await?;
        let keys = rows
            .iter()
            .map(|r| ((r.device, r.metric.as_str(), r.time), (r.msg, r.rec)));
        let returned = inserted
            .iter()
            .map(|(d, m, t)| (d.as_str(), m.as_str(), *t));
        mark_new(keys, returned, &mut outcome);
    }

    if !flat.events.is_empty() {
        let rows = &flat.events;
        let inserted: Vec<(String, String, DbTime, Option<String>)> = sqlx::query_as(
            "INSERT INTO events (time, patient_id, device_id, kind, text, received_at)
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                                  $5::text[], $6::timestamptz[])
             ON CONFLICT DO NOTHING
             RETURNING device_id, kind, time, text",
        )
        .bind(rows.iter().map(|r| r.time).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.patient).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.device).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.text).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.received).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let keys = rows.iter().map(|r| {
            (
                (r.device, r.kind.as_str(), r.time, r.text.unwrap_or("")),
                (r.msg, r.rec),
            )
        });
        let returned = inserted
            .iter()
            .map(|(d, k, t, x)| (d.as_str(), k.as_str(), *t, x.as_deref().unwrap_or("")));
        mark_new(keys, returned, &mut outcome);
    }

    if !flat.status.is_empty() {
        let rows = &flat.status;
        let inserted: Vec<(String, String, DbTime)> = sqlx::query_as(
            "INSERT INTO status_reports (time, device_id, patient_id, field, value_num, value_text, received_at)
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                                  $5::float8[], $6::text[], $7::timestamptz[])
             ON CONFLICT DO NOTHING
             RETURNING device_id, field, time",
        )
        .bind(rows.iter().map(|r| r.time).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.device).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.patient).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.field).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.number).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.text).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.received).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let keys = rows
            .iter()
            .map(|r| ((r.device, r.field, r.time), (r.msg, r.rec)));
        let returned = inserted
            .iter()
            .map(|(d, f, t)| (d.as_str(), f.as_str(), *t));
        mark_new(keys, returned, &mut outcome);
    }

    if !flat.devices.is_empty() {
        let d = &flat.devices;
        sqlx::query(
            "UPDATE devices AS d SET
                 last_seen_at = GREATEST(d.last_seen_at, u.seen),
                 battery_pct = coalesce(u.batt, d.battery_pct),
                 connection = coalesce(u.conn, d.connection),
                 firmware = coalesce(u.fw, d.firmware),
                 heartbeat_s = coalesce(u.hb, d.heartbeat_s)
             FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::text[], $5::text[], $6::float8[])
                  AS u(device_id, seen, batt, conn, fw, hb)
             WHERE d.device_id = u.device_id",
        )
        .bind(d.iter().map(|t| t.device).collect::<Vec<_>>())
        .bind(d.iter().map(|t| t.seen).collect::<Vec<_>>())
        .bind(d.iter().map(|t| t.update.battery_pct).collect::<Vec<_>>())
        .bind(d.iter().map(|t| t.update.connection.as_deref()).collect::<Vec<_>>())
        .bind(d.iter().map(|t| t.update.firmware.as_deref()).collect::<Vec<_>>())
        .bind(d.iter().map(|t| t.update.heartbeat_s).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    for q in &batch.quarantined {
        quarantine_insert!(q).execute(&mut *tx).await?;
    }
    turn.written();
    turn.may_commit().await?;
    tx.commit().await?;
    Ok(outcome)
}

/// All of `rows`, none of which may be stored already (the fast path).
async fn insert_observations(tx: &mut sqlx::PgConnection, rows: &[ObsRow<'_>]) -> sqlx::Result<()> {
    bind_observations!(sqlx::query(insert_observations_sql!("")), rows)
        .execute(tx)
        .await?;
    Ok(())
}

/// Marks as new the first row of each key that the insert returned; later
/// rows with the same key (duplicates within the batch) stay not new.
fn mark_new<'a, K>(
    keys: impl Iterator<Item = (K, (usize, usize))>,
    returned: impl Iterator<Item = K>,
    outcome: &mut IngestOutcome,
) where
    K: std::hash::Hash + Eq + 'a,
{
    let mut first: HashMap<K, (usize, usize)> = HashMap::new();
    for (key, at) in keys {
        first.entry(key).or_insert(at);
    }
    for key in returned {
        if let Some((msg, rec)) = first.remove(&key) {
            outcome.new[msg][rec] = true;
        }
    }
}

pub(super) async fn ensure_partitions(pool: &PgPool) -> Result<()> {
    let (created,): (i32,) = sqlx::query_as("SELECT vaka_ensure_observation_partitions(13, 3)")
        .fetch_one(pool)
        .await?;
    if created > 0 {
        tracing::info!(created, "created monthly observation partitions");
    }
    Ok(())
}

pub(super) async fn observations_layout(pool: &PgPool) -> Result<&'static str> {
    let (timescale,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
            .fetch_one(pool)
            .await?;
    if timescale {
        // The view exists only with the extension, so ask in a second query.
        let (hyper,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                            WHERE hypertable_name = 'observations' AND hypertable_schema = current_schema())",
        )
        .fetch_one(pool)
        .await?;
        if hyper {
            return Ok("hypertable");
        }
    }
    let (partitioned,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
                        WHERE c.relname = 'observations' AND c.relnamespace = current_schema()::regnamespace)",
    )
    .fetch_one(pool)
    .await?;
    Ok(if partitioned { "partitioned" } else { "table" })
}

/// TimescaleDB background jobs whose last run failed; `None` without
/// TimescaleDB. Its scheduler has been seen failing on PostgreSQL 15.20
/// while the same job run by hand works, so vaka reports rather than
/// assumes that compression and retention ran.
pub(super) async fn failed_timescale_jobs(pool: &PgPool) -> Result<Option<i64>> {
    let (timescale,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
            .fetch_one(pool)
            .await?;
    if !timescale {
        return Ok(None);
    }
    let (failed,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM timescaledb_information.job_stats WHERE last_run_status = 'Failed'",
    )
    .fetch_one(pool)
    .await?;
    Ok(Some(failed))
}
