//! What the consistency checker (`crate::consistency`) asks of the store:
//! the latest data time of a patient's measurement or of a device's
//! messages, and whether a reading an alert names is stored.

use vaka_gateway::UnixMillis;

use super::{DbTime, Result, Store, on_pool};

impl Store {
    /// Data time of the patient's latest stored reading of `metric`.
    pub async fn latest_reading(
        &self,
        patient_id: &str,
        metric: &str,
    ) -> Result<Option<UnixMillis>> {
        let t: Option<DbTime> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT max(time) FROM observations WHERE patient_id = $1 AND metric = $2",
        )
        .bind(patient_id)
        .bind(metric)
        .fetch_one(pool)
        .await)?;
        Ok(t.map(Into::into))
    }

    /// Data time of the latest message (reading, event or status) a device
    /// sent, whoever it was bound to.
    pub async fn latest_from_device(&self, device_id: &str) -> Result<Option<UnixMillis>> {
        let times: Vec<Option<DbTime>> = on_pool!(self, pool => {
            let mut v = Vec::new();
            for sql in [
                "SELECT max(time) FROM observations WHERE device_id = $1",
                "SELECT max(time) FROM events WHERE device_id = $1",
                "SELECT max(time) FROM status_reports WHERE device_id = $1",
            ] {
                v.push(sqlx::query_scalar(sql).bind(device_id).fetch_one(pool).await?);
            }
            Ok::<_, sqlx::Error>(v)
        })?;
        Ok(times.into_iter().flatten().max().map(Into::into))
    }

    /// Whether a reading (metric, event or status field `name` at `time`
    /// from `device_id`) is stored.
    pub async fn reading_stored(
        &self,
        device_id: &str,
        name: &str,
        time: UnixMillis,
    ) -> Result<bool> {
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM observations WHERE device_id = $1 AND metric = $2 AND time = $3)
                  + (SELECT count(*) FROM events WHERE device_id = $1 AND kind = $2 AND time = $3)
                  + (SELECT count(*) FROM status_reports WHERE device_id = $1 AND field = $2 AND time = $3)",
        )
        .bind(device_id)
        .bind(name)
        .bind(DbTime(time))
        .fetch_one(pool)
        .await)?;
        Ok(n > 0)
    }
}
