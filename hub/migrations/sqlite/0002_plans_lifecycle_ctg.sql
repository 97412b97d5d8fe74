-- Monitoring plans, the rest of the alert lifecycle, CTG session summaries.

CREATE TABLE monitoring_plans (
    patient_id  TEXT NOT NULL REFERENCES patients (patient_id),
    version     INTEGER NOT NULL,
    plan        TEXT NOT NULL,
    changed_by  TEXT NOT NULL,
    changed_at  INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    previous    TEXT,
    PRIMARY KEY (patient_id, version)
);

ALTER TABLE alerts ADD COLUMN escalation_level INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN escalated_at INTEGER;
ALTER TABLE alerts ADD COLUMN attention_since INTEGER;
ALTER TABLE alerts ADD COLUMN snooze_reason TEXT;
ALTER TABLE alerts ADD COLUMN snooze_count INTEGER NOT NULL DEFAULT 0;

CREATE TABLE ctg_sessions (
    patient_id   TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER NOT NULL,
    summary      TEXT NOT NULL,
    PRIMARY KEY (device_id, started_at)
);
CREATE INDEX ctg_sessions_patient ON ctg_sessions (patient_id, started_at DESC);
