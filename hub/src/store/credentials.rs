//! Device credentials: the hash of each device's MQTT password, and
//! whether it was revoked (see [`crate::credentials`]).

use sqlx::FromRow;
use vaka_gateway::UnixMillis;

use super::{DbTime, Result, Store, StoreError, on_pool};
use crate::credentials::Account;

/// A device's credential, as stored.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct DeviceCredential {
    pub device_id: String,
    pub password_hash: String,
    pub issued_at: DbTime,
    pub revoked_at: Option<DbTime>,
}

/// What `revoke_device` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already,
}

impl Store {
    async fn require_device(&self, device_id: &str) -> Result<()> {
        match self.device(device_id).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound("device")),
        }
    }

    /// Stores a new password hash for a registered device, replacing any
    /// earlier one and lifting a revocation.
    pub async fn provision_device(
        &self,
        device_id: &str,
        password_hash: &str,
        now: UnixMillis,
    ) -> Result<()> {
        self.require_device(device_id).await?;
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO device_credentials (device_id, password_hash, issued_at, revoked_at)
             VALUES ($1, $2, $3, NULL)
             ON CONFLICT (device_id) DO UPDATE
             SET password_hash = excluded.password_hash, issued_at = excluded.issued_at,
                 revoked_at = NULL",
        )
        .bind(device_id)
        .bind(password_hash)
        .bind(DbTime(now))
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Revokes a registered device's credentials at `now` (also a device
    /// that never had any: it is refused from then on all the same).
    pub async fn revoke_device(&self, device_id: &str, now: UnixMillis) -> Result<Revoked> {
        self.require_device(device_id).await?;
        // '!' is no `$7$` hash: it matches no password.
        let changed = on_pool!(self, pool => sqlx::query(
            "INSERT INTO device_credentials (device_id, password_hash, issued_at, revoked_at)
             VALUES ($1, '!', $2, $2)
             ON CONFLICT (device_id) DO UPDATE SET revoked_at = excluded.revoked_at
             WHERE device_credentials.revoked_at IS NULL",
        )
        .bind(device_id)
        .bind(DbTime(now))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(if changed > 0 {
            Revoked::Now
        } else {
            Revoked::Already
        })
    }

    pub async fn device_credential(&self, device_id: &str) -> Result<Option<DeviceCredential>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT device_id, password_hash, issued_at, revoked_at
             FROM device_credentials WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(pool)
        .await)?)
    }

    /// The broker accounts of all devices with live credentials, by id.
    pub async fn broker_accounts(&self) -> Result<Vec<Account>> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT device_id, password_hash FROM device_credentials
             WHERE revoked_at IS NULL ORDER BY device_id",
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(username, password_hash)| Account {
                username,
                password_hash,
            })
            .collect())
    }
}
