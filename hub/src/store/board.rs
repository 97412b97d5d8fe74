//! What the triage board reads of one patient's recent data.

use vaka_gateway::UnixMillis;

use super::{
    DbTime, PatientEvent, PatientEventRow, PatientObservation, PatientObservationRow, Result,
    Store, on_pool,
};

impl Store {
    /// A patient's spot readings (not the 4 Hz CTG traces) and dose events
    /// since `since`, oldest first.
    pub async fn recent_readings(
        &self,
        patient_id: &str,
        since: UnixMillis,
    ) -> Result<(Vec<PatientObservation>, Vec<PatientEvent>)> {
        let obs: Vec<PatientObservationRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT time, patient_id, device_id, metric, value FROM observations
             WHERE patient_id = $1 AND metric IN ('weight', 'sys', 'dia', 'hr', 'spo2', 'temp')
               AND time >= $2
             ORDER BY time, device_id, metric",
        )
        .bind(patient_id)
        .bind(DbTime(since))
        .fetch_all(pool)
        .await)?;
        let events: Vec<PatientEventRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT time, patient_id, device_id, kind, text FROM events
             WHERE patient_id = $1 AND kind IN ('dose_taken', 'dose_missed') AND time >= $2
             ORDER BY time, device_id, kind",
        )
        .bind(patient_id)
        .bind(DbTime(since))
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
        ))
    }
}
