//! Local calendar time. Patients weigh themselves "in the morning" of *their*
//! day (ARCHITECTURE §2: local days are in the patient's time zone), so every
//! daily plan is made on local dates and turned into [`UnixMillis`] here.

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use vaka_gateway::UnixMillis;

/// The zone used when a patient's zone does not parse.
pub(crate) const DEFAULT_TZ: Tz = chrono_tz::Europe::Stockholm;

/// The zone named `name`, or Stockholm.
pub(crate) fn zone(name: &str) -> Tz {
    name.parse().unwrap_or(DEFAULT_TZ)
}

/// The local date at `t`.
pub(crate) fn date_of(t: UnixMillis, tz: Tz) -> NaiveDate {
    utc(t).with_timezone(&tz).date_naive()
}

fn utc(t: UnixMillis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0).unwrap_or_default()
}

/// The instant of `seconds` after local midnight of `date`.
///
/// Around a DST change a local time can be missing (spring) or ambiguous
/// (autumn); the earlier meaning is taken, and a missing one is moved past
/// the gap. (Nothing here is planned between 02:00 and 03:00, but a
/// generator must not panic on a date the calendar makes odd.)
pub(crate) fn at(date: NaiveDate, seconds: u32, tz: Tz) -> UnixMillis {
    let seconds = seconds.min(86_399);
    let naive = date
        .and_hms_opt(seconds / 3600, seconds / 60 % 60, seconds % 60)
        .unwrap_or_default();
    let local = match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
        LocalResult::None => {
            let later = naive + chrono::Duration::hours(1);
            match tz.from_local_datetime(&later) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
                LocalResult::None => return UnixMillis(naive.and_utc().timestamp_millis()),
            }
        }
    };
    UnixMillis(local.timestamp_millis())
}

/// A stable number for a date (days since 1970-01-01), used as a seed key.
pub(crate) fn day_number(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - 719_163
}

pub(crate) fn add_days(date: NaiveDate, days: i64) -> NaiveDate {
    let shifted = if days >= 0 {
        date.checked_add_days(Days::new(days.unsigned_abs()))
    } else {
        date.checked_sub_days(Days::new(days.unsigned_abs()))
    };
    shifted.unwrap_or(date)
}

/// Monday = 0 … Sunday = 6.
pub(crate) fn weekday(date: NaiveDate) -> u32 {
    date.weekday().num_days_from_monday()
}

/// `hh:mm` as seconds after midnight.
pub(crate) const fn hm(h: u32, m: u32) -> u32 {
    h * 3600 + m * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_morning_in_stockholm_winter_and_summer() {
        let tz = DEFAULT_TZ;
        let winter = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        // 07:00 CET = 06:00 UTC.
        assert_eq!(at(winter, hm(7, 0), tz), UnixMillis(1_796_104_800_000));
        let summer = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
        let t = at(summer, hm(7, 0), tz);
        assert_eq!(utc(t).format("%H:%M").to_string(), "05:00");
        assert_eq!(date_of(t, tz), summer);
    }

    #[test]
    fn dst_gap_does_not_panic() {
        let spring = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let t = at(spring, hm(2, 30), DEFAULT_TZ);
        assert_eq!(date_of(t, DEFAULT_TZ), spring);
        assert_eq!(day_number(NaiveDate::from_ymd_opt(1970, 1, 2).unwrap()), 1);
        assert_eq!(weekday(NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()), 0);
        assert_eq!(zone("Nowhere/Atlantis"), DEFAULT_TZ);
    }
}
