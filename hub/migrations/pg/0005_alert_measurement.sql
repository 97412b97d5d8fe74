-- One missing-measurement alert per scheduled measurement (ARCHITECTURE §4:
-- "one absence per scheduled measurement"): the measurement is part of an
-- alert's key, as the device is for technical alerts. NULL for every other
-- rule.
ALTER TABLE alerts ADD COLUMN measurement TEXT;

DROP INDEX alerts_one_active;
CREATE UNIQUE INDEX alerts_one_active
    ON alerts (coalesce(patient_id, ''), rule, coalesce(device_id, ''), coalesce(measurement, ''))
    WHERE state <> 'resolved';
DROP INDEX alerts_key_latest;
CREATE INDEX alerts_key_latest
    ON alerts (coalesce(patient_id, ''), rule, coalesce(device_id, ''), coalesce(measurement, ''), last_reading_at DESC);
