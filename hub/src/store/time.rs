//! [`DbTime`]: one Rust type for a point in time on both backends.
//!
//! PostgreSQL stores `TIMESTAMPTZ` (readable in psql, what TimescaleDB
//! partitions on); SQLite stores INTEGER milliseconds (compact, and ordered
//! as numbers). Because the type is the same in Rust, a query written once
//! binds and decodes on either backend (see `on_pool!` in `store`).

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use vaka_gateway::UnixMillis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DbTime(pub UnixMillis);

impl DbTime {
    pub fn millis(self) -> i64 {
        self.0.0
    }

    pub fn to_chrono(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    pub fn from_chrono(t: DateTime<Utc>) -> DbTime {
        DbTime(UnixMillis(t.timestamp_millis()))
    }
}

impl From<UnixMillis> for DbTime {
    fn from(t: UnixMillis) -> Self {
        DbTime(t)
    }
}

impl From<DbTime> for UnixMillis {
    fn from(t: DbTime) -> Self {
        t.0
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl PgHasArrayType for DbTime {
    fn array_type_info() -> PgTypeInfo {
        <DateTime<Utc> as PgHasArrayType>::array_type_info()
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode(self.to_chrono(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(DbTime::from_chrono)
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.0.0, buf)
    }
}

impl<'r> Decode<'r, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        <i64 as Decode<Sqlite>>::decode(value).map(|ms| DbTime(UnixMillis(ms)))
    }
}
