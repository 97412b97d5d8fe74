//! Staff, care units, enrolments, assignments, login sessions, the call
//! log and the audit log's search.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::FromRow;
use vaka_gateway::UnixMillis;

use super::{AuditEntry, BeginWrite, DbTime, Result, Store, StoreError, on_pool};
use crate::access::{CareUnit, PatientAccess, Role, UnitKind};

/// A member of staff as the API shows her (never with the password hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaffMember {
    #[serde(rename = "id")]
    pub staff_id: String,
    pub username: String,
    #[serde(rename = "name")]
    pub display_name: String,
    pub role: Role,
    pub active: bool,
    pub units: Vec<CareUnit>,
}

#[derive(FromRow)]
struct StaffRow {
    staff_id: String,
    username: String,
    display_name: String,
    role: String,
    active: bool,
}

/// What a login checks.
#[derive(Debug, Clone, FromRow)]
pub struct Credentials {
    pub staff_id: String,
    pub password_hash: Option<String>,
    pub active: bool,
    pub failed_logins: i32,
    pub locked_until: Option<DbTime>,
}

pub struct NewStaff<'a> {
    pub staff_id: &'a str,
    pub username: &'a str,
    pub display_name: &'a str,
    pub role: Role,
    pub password_hash: Option<String>,
    pub units: &'a [String],
}

/// A change to a member of staff; `None` leaves a field as it is.
#[derive(Default)]
pub struct StaffChange {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    pub password_hash: Option<String>,
    pub active: Option<bool>,
    pub units: Option<Vec<String>>,
}

/// A logged-in session, found by the digest of its cookie.
#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub staff_id: String,
    pub csrf_token: String,
    pub expires_at: DbTime,
}

/// A phone call to a patient.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Call {
    #[serde(rename = "id")]
    pub call_id: i64,
    pub patient_id: String,
    pub alert_id: Option<i64>,
    #[serde(rename = "staff")]
    pub staff_id: String,
    pub at: DbTime,
    pub outcome: String,
    pub note: String,
}

pub struct NewCall<'a> {
    pub patient_id: &'a str,
    pub alert_id: Option<i64>,
    pub staff_id: &'a str,
    pub at: UnixMillis,
    pub outcome: &'a str,
    pub note: &'a str,
}

/// What to look for in the audit log; every field narrows the search.
#[derive(Debug, Default)]
pub struct AuditFilter<'a> {
    pub actor: Option<&'a str>,
    pub patient_id: Option<&'a str>,
    /// An action, or the start of one ending in `.` (`patient.` finds
    /// every action on patients).
    pub action: Option<&'a str>,
    pub from: Option<UnixMillis>,
    pub to: Option<UnixMillis>,
    pub limit: i64,
}

impl Store {
    // ------------------------------------------------------------ care units

    pub async fn create_care_unit(&self, unit: &CareUnit, now: UnixMillis) -> Result<CareUnit> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO care_units (unit_id, name, kind, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&unit.unit_id)
        .bind(&unit.name)
        .bind(&unit.kind)
        .bind(DbTime(now))
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(|e| StoreError::conflict_on_unique(e, "care unit"))?;
        Ok(unit.clone())
    }

    pub async fn care_units(&self) -> Result<Vec<CareUnit>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT unit_id, name, kind FROM care_units ORDER BY name",
        )
        .fetch_all(pool)
        .await)?)
    }

    // ----------------------------------------------------------------- staff

    pub async fn create_staff(&self, s: &NewStaff<'_>, now: UnixMillis) -> Result<StaffMember> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO staff (staff_id, username, display_name, role, password_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(s.staff_id)
            .bind(s.username.to_lowercase())
            .bind(s.display_name)
            .bind(s.role.as_str())
            .bind(&s.password_hash)
            .bind(DbTime(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::conflict_on_unique(e, "staff member or user name"))?;
            for unit in s.units {
                sqlx::query("INSERT INTO staff_units (staff_id, unit_id) VALUES ($1, $2)")
                    .bind(s.staff_id)
                    .bind(unit)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| foreign_key_as_not_found(e, "care unit"))?;
            }
            tx.commit().await?;
        });
        self.staff_member(s.staff_id)
            .await?
            .ok_or(StoreError::NotFound("staff member"))
    }

    pub async fn update_staff(&self, staff_id: &str, c: &StaffChange) -> Result<StaffMember> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query(
                "UPDATE staff SET display_name = coalesce($2, display_name),
                        role = coalesce($3, role),
                        password_hash = coalesce($4, password_hash),
                        active = coalesce($5, active),
                        failed_logins = CASE WHEN $4 IS NULL THEN failed_logins ELSE 0 END,
                        locked_until = CASE WHEN $4 IS NULL THEN locked_until ELSE NULL END
                 WHERE staff_id = $1",
            )
            .bind(staff_id)
            .bind(&c.display_name)
            .bind(c.role.map(Role::as_str))
            .bind(&c.password_hash)
            .bind(c.active)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound("staff member"));
            }
            if let Some(units) = &c.units {
                sqlx::query("DELETE FROM staff_units WHERE staff_id = $1")
                    .bind(staff_id)
                    .execute(&mut *tx)
                    .await?;
                for unit in units {
                    sqlx::query("INSERT INTO staff_units (staff_id, unit_id) VALUES ($1, $2)")
                        .bind(staff_id)
                        .bind(unit)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| foreign_key_as_not_found(e, "care unit"))?;
                }
            }
            // A new password or a closed account ends every open session.
            if c.password_hash.is_some() || c.active == Some(false) {
                sqlx::query("DELETE FROM staff_sessions WHERE staff_id = $1")
                    .bind(staff_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        self.staff_member(staff_id)
            .await?
            .ok_or(StoreError::NotFound("staff member"))
    }

    pub async fn staff_member(&self, staff_id: &str) -> Result<Option<StaffMember>> {
        let row: Option<StaffRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT staff_id, username, display_name, role, active FROM staff WHERE staff_id = $1",
        )
        .bind(staff_id)
        .fetch_optional(pool)
        .await)?;
        match row {
            None => Ok(None),
            Some(row) => Ok(self.with_units(vec![row]).await?.pop()),
        }
    }

    pub async fn staff(&self) -> Result<Vec<StaffMember>> {
        let rows: Vec<StaffRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT staff_id, username, display_name, role, active FROM staff ORDER BY display_name",
        )
        .fetch_all(pool)
        .await)?;
        self.with_units(rows).await
    }

    async fn with_units(&self, rows: Vec<StaffRow>) -> Result<Vec<StaffMember>> {
        let memberships: Vec<(String, String, String, String)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT s.staff_id, u.unit_id, u.name, u.kind FROM staff_units s
             JOIN care_units u ON u.unit_id = s.unit_id ORDER BY u.name",
        )
        .fetch_all(pool)
        .await)?;
        let mut units: HashMap<String, Vec<CareUnit>> = HashMap::new();
        for (staff_id, unit_id, name, kind) in memberships {
            units.entry(staff_id).or_default().push(CareUnit {
                unit_id,
                name,
                kind,
            });
        }
        rows.into_iter()
            .map(|r| {
                let role = Role::parse(&r.role)
                    .ok_or_else(|| StoreError::Corrupt(format!("role {:?}", r.role)))?;
                Ok(StaffMember {
                    units: units.remove(&r.staff_id).unwrap_or_default(),
                    staff_id: r.staff_id,
                    username: r.username,
                    display_name: r.display_name,
                    role,
                    active: r.active,
                })
            })
            .collect()
    }

    // ----------------------------------------------------------------- login

    pub async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT staff_id, password_hash, active, failed_logins, locked_until
             FROM staff WHERE username = $1",
        )
        .bind(username.to_lowercase())
        .fetch_optional(pool)
        .await)?)
    }

    /// Counts a failed login; after `max_failures` in a row the account is
    /// locked until `lock_until`. Returns the count.
    pub async fn login_failed(
        &self,
        staff_id: &str,
        max_failures: i32,
        lock_until: UnixMillis,
    ) -> Result<i32> {
        let (count,): (i32,) = on_pool!(self, pool => sqlx::query_as(
            "UPDATE staff SET failed_logins = failed_logins + 1,
                    locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END
             WHERE staff_id = $1 RETURNING failed_logins",
        )
        .bind(staff_id)
        .bind(max_failures)
        .bind(DbTime(lock_until))
        .fetch_one(pool)
        .await)?;
        Ok(count)
    }

    /// A successful login starts a session and forgets earlier failures.
    pub async fn start_session(
        &self,
        staff_id: &str,
        token_digest: &str,
        csrf_token: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
        source: Option<&str>,
    ) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE staff SET failed_logins = 0, locked_until = NULL WHERE staff_id = $1")
                .bind(staff_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM staff_sessions WHERE expires_at < $1")
                .bind(DbTime(now))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO staff_sessions (token_hash, staff_id, csrf_token, created_at, expires_at, source)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(token_digest)
            .bind(staff_id)
            .bind(csrf_token)
            .bind(DbTime(now))
            .bind(DbTime(expires_at))
            .bind(source)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The open session of a cookie, if it has not expired and its account
    /// is still active.
    pub async fn session(&self, token_digest: &str, now: UnixMillis) -> Result<Option<SessionRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT s.staff_id, s.csrf_token, s.expires_at FROM staff_sessions s
             JOIN staff t ON t.staff_id = s.staff_id
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND t.active",
        )
        .bind(token_digest)
        .bind(DbTime(now))
        .fetch_optional(pool)
        .await)?)
    }

    pub async fn end_session(&self, token_digest: &str) -> Result<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1")
            .bind(token_digest)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    // ------------------------------------------------ enrolments and access

    pub async fn enrol(&self, patient_id: &str, unit_id: &str, now: UnixMillis) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO enrolments (patient_id, unit_id, enrolled_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(patient_id)
        .bind(unit_id)
        .bind(DbTime(now))
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(|e| foreign_key_as_not_found(e, "patient or care unit"))
    }

    pub async fn unenrol(&self, patient_id: &str, unit_id: &str) -> Result<bool> {
        let done = on_pool!(self, pool => sqlx::query(
            "DELETE FROM enrolments WHERE patient_id = $1 AND unit_id = $2",
        )
        .bind(patient_id)
        .bind(unit_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// The care units a patient is enrolled in.
    pub async fn enrolments(&self, patient_id: &str) -> Result<Vec<CareUnit>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT u.unit_id, u.name, u.kind FROM enrolments e
             JOIN care_units u ON u.unit_id = e.unit_id WHERE e.patient_id = $1 ORDER BY u.name",
        )
        .bind(patient_id)
        .fetch_all(pool)
        .await)?)
    }

    /// How a member of staff relates to each patient of her units (patients
    /// outside them are absent). `patient_id` narrows it to one patient.
    pub async fn patient_accesses(
        &self,
        staff_id: &str,
        patient_id: Option<&str>,
    ) -> Result<HashMap<String, PatientAccess>> {
        // Every enrolment of every patient that shares a unit with her,
        // marked with whether she belongs to that unit.
        let rows: Vec<(String, String, bool)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT e.patient_id, u.kind,
                    EXISTS (SELECT 1 FROM staff_units m WHERE m.staff_id = $1 AND m.unit_id = e.unit_id)
             FROM enrolments e JOIN care_units u ON u.unit_id = e.unit_id
             WHERE ($2 IS NULL OR e.patient_id = $2)
               AND e.patient_id IN (SELECT f.patient_id FROM enrolments f
                                    JOIN staff_units m ON m.unit_id = f.unit_id AND m.staff_id = $1)",
        )
        .bind(staff_id)
        .bind(patient_id)
        .fetch_all(pool)
        .await)?;
        let mut out: HashMap<String, PatientAccess> = HashMap::new();
        for (patient, kind, member) in rows {
            let kind = UnitKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unit kind {kind:?}")))?;
            let access = out.entry(patient).or_default();
            access.enrolled.push(kind);
            if member {
                access.through.push(kind);
            }
        }
        Ok(out)
    }

    // ----------------------------------------------------------- assignments

    pub async fn assign(&self, staff_id: &str, patient_id: &str, now: UnixMillis) -> Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO assignments (staff_id, patient_id, assigned_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(staff_id)
        .bind(patient_id)
        .bind(DbTime(now))
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(|e| foreign_key_as_not_found(e, "staff member or patient"))
    }

    pub async fn unassign(&self, staff_id: &str, patient_id: &str) -> Result<bool> {
        let done = on_pool!(self, pool => sqlx::query(
            "DELETE FROM assignments WHERE staff_id = $1 AND patient_id = $2",
        )
        .bind(staff_id)
        .bind(patient_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// The patients on a nurse's own list, in the order they were assigned.
    pub async fn assignments(&self, staff_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT patient_id FROM assignments WHERE staff_id = $1 ORDER BY assigned_at, patient_id",
        )
        .bind(staff_id)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    // ------------------------------------------------------------------ calls

    pub async fn add_call(&self, c: &NewCall<'_>) -> Result<Call> {
        on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO calls (patient_id, alert_id, staff_id, at, outcome, note)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING call_id, patient_id, alert_id, staff_id, at, outcome, note",
        )
        .bind(c.patient_id)
        .bind(c.alert_id)
        .bind(c.staff_id)
        .bind(DbTime(c.at))
        .bind(c.outcome)
        .bind(c.note)
        .fetch_one(pool)
        .await)
        .map_err(|e| foreign_key_as_not_found(e, "alert"))
    }

    pub async fn calls(
        &self,
        patient_id: &str,
        since: Option<UnixMillis>,
        limit: i64,
    ) -> Result<Vec<Call>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT call_id, patient_id, alert_id, staff_id, at, outcome, note FROM calls
             WHERE patient_id = $1 AND ($2 IS NULL OR at >= $2) ORDER BY at DESC, call_id DESC LIMIT $3",
        )
        .bind(patient_id)
        .bind(since.map(DbTime))
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    // ------------------------------------------------------------ audit search

    pub async fn search_audit(&self, f: &AuditFilter<'_>) -> Result<Vec<AuditEntry>> {
        // `patient.` finds every action that starts so; anything else is
        // one action.
        let (exact, prefix) = match f.action {
            Some(a) if a.ends_with('.') => (None, Some(a)),
            other => (other, None),
        };
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT at, actor, action, patient_id, detail, source FROM audit_log
             WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR patient_id = $2)
               AND ($3 IS NULL OR action = $3)
               AND (CAST($4 AS TEXT) IS NULL
                    OR substr(action, 1, length(CAST($4 AS TEXT))) = CAST($4 AS TEXT))
               AND ($5 IS NULL OR at >= $5) AND ($6 IS NULL OR at < $6)
             ORDER BY at DESC, audit_id DESC LIMIT $7",
        )
        .bind(f.actor)
        .bind(f.patient_id)
        .bind(exact)
        .bind(prefix)
        .bind(f.from.map(DbTime))
        .bind(f.to.map(DbTime))
        .bind(f.limit)
        .fetch_all(pool)
        .await)?)
    }
}

/// A reference to a row that does not exist is the caller's mistake.
fn foreign_key_as_not_found(e: sqlx::Error, what: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound(what),
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Db(e),
    }
}
