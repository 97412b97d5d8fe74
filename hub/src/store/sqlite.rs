//! SQLite-specific storage. SQLite runs in-process, so a prepared statement
//! per row inside one transaction costs microseconds, not round trips, and
//! `rows_affected` tells directly whether each row was new; the bulk of a
//! batch, its observations, go in multi-row statements when all are new.
//! The one commit (with `synchronous = FULL`) is what makes the batch
//! durable.

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use vaka_gateway::Turn;

use super::{
    BeginWrite, DbTime, Flat, IngestBatch, IngestOutcome, ObsRow, RegistryRow, Result,
    quarantine_insert,
};

pub(super) async fn registry(pool: &SqlitePool, device_ids: &[&str]) -> Result<Vec<RegistryRow>> {
    let ids = serde_json::to_string(device_ids).unwrap_or_else(|_| "[]".into());
    Ok(sqlx::query_as(
        "SELECT d.device_id, (c.revoked_at IS NOT NULL) AS revoked,
                b.patient_id, b.valid_from, b.valid_to
         FROM devices d LEFT JOIN device_bindings b ON b.device_id = d.device_id
         LEFT JOIN device_credentials c ON c.device_id = d.device_id
         WHERE d.device_id IN (SELECT value FROM json_each($1))",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn ingest(
    pool: &SqlitePool,
    batch: &IngestBatch<'_>,
    turn: &mut Turn,
) -> Result<IngestOutcome> {
    let (flat, mut outcome) = Flat::new(batch);
    turn.may_write().await?;
    let mut tx = pool.begin_write().await?;
    // The fast path (see pg.rs): a new batch's observations in a few
    // multi-row statements; a redelivered record makes the first fail on
    // the unique key, and the transaction starts over, row by row.
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
    } else {
        for r in &flat.observations {
            let done = sqlx::query(
                "INSERT INTO observations (time, patient_id, device_id, metric, value, unit, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(r.time)
            .bind(r.patient)
            .bind(r.device)
            .bind(r.metric.as_str())
            .bind(r.value)
            .bind(r.metric.unit())
            .bind(r.received)
            .execute(&mut *tx)
            .await?;
            outcome.new[r.msg][r.rec] = done.rows_affected() == 1;
        }
    }
    for r in &flat.events {
        let done = sqlx::query(
            "INSERT INTO events (time, patient_id, device_id, kind, text, received_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(r.time)
        .bind(r.patient)
        .bind(r.device)
        .bind(r.kind.as_str())
        .bind(r.text)
        .bind(r.received)
        .execute(&mut *tx)
        .await?;
        outcome.new[r.msg][r.rec] = done.rows_affected() == 1;
    }
    for r in &flat.status {
        let done = sqlx::query(
            "INSERT INTO status_reports (time, device_id, patient_id, field, value_num, value_text, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(r.time)
        .bind(r.device)
        .bind(r.patient)
        .bind(r.field)
        .bind(r.number)
        .bind(r.text)
        .bind(r.received)
        .execute(&mut *tx)
        .await?;
        outcome.new[r.msg][r.rec] = done.rows_affected() == 1;
    }
    for t in &flat.devices {
        sqlx::query(
            "UPDATE devices SET
                 last_seen_at = max(coalesce(last_seen_at, $2), $2),
                 battery_pct = coalesce($3, battery_pct),
                 connection = coalesce($4, connection),
                 firmware = coalesce($5, firmware),
                 heartbeat_s = coalesce($6, heartbeat_s)
             WHERE device_id = $1",
        )
        .bind(t.device)
        .bind(t.seen)
        .bind(t.update.battery_pct)
        .bind(t.update.connection.as_deref())
        .bind(t.update.firmware.as_deref())
        .bind(t.update.heartbeat_s)
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

/// Rows per multi-row `INSERT` (7 parameters a row; SQLite takes 32 766).
const ROWS_PER_INSERT: usize = 500;

/// All of `rows`, none of which may be stored already (the fast path).
async fn insert_observations(tx: &mut SqliteConnection, rows: &[ObsRow<'_>]) -> sqlx::Result<()> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO observations (time, patient_id, device_id, metric, value, unit, received_at) ",
        );
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(r.time)
                .push_bind(r.patient)
                .push_bind(r.device)
                .push_bind(r.metric.as_str())
                .push_bind(r.value)
                .push_bind(r.metric.unit())
                .push_bind(r.received);
        });
        insert.build().execute(&mut *tx).await?;
    }
    Ok(())
}
