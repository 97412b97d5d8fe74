-- vaka schema for SQLite, the embedded default (ARCHITECTURE §5).
--
-- The same tables and keys as on PostgreSQL; times are INTEGER milliseconds
-- since the Unix epoch (UTC).

CREATE TABLE patients (
    patient_id   TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    timezone     TEXT NOT NULL DEFAULT 'Europe/Stockholm',
    program      TEXT,
    created_at   INTEGER NOT NULL
);

CREATE TABLE devices (
    device_id     TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen_at  INTEGER,
    battery_pct   REAL,
    connection    TEXT,
    firmware      TEXT,
    heartbeat_s   REAL
);

CREATE TABLE device_bindings (
    binding_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL REFERENCES devices (device_id),
    patient_id  TEXT NOT NULL REFERENCES patients (patient_id),
    valid_from  INTEGER NOT NULL,
    valid_to    INTEGER,
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE UNIQUE INDEX device_bindings_open ON device_bindings (device_id) WHERE valid_to IS NULL;
CREATE INDEX device_bindings_patient ON device_bindings (patient_id);

CREATE TABLE observations (
    time        INTEGER NOT NULL,
    patient_id  TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    metric      TEXT NOT NULL,
    value       REAL NOT NULL,
    unit        TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (device_id, metric, time)
);
CREATE INDEX observations_patient_time ON observations (patient_id, metric, time DESC);
CREATE INDEX observations_time ON observations (time);

CREATE VIEW observations_daily AS
    SELECT (time / 86400000) * 86400000 AS day, patient_id, metric,
           avg(value) AS mean, min(value) AS min, max(value) AS max, count(*) AS n
    FROM observations
    GROUP BY 1, 2, 3;

CREATE TABLE events (
    time        INTEGER NOT NULL,
    patient_id  TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    text        TEXT,
    received_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX events_key ON events (device_id, kind, time, coalesce(text, ''));
CREATE INDEX events_patient_time ON events (patient_id, time);

CREATE TABLE status_reports (
    time        INTEGER NOT NULL,
    device_id   TEXT NOT NULL,
    patient_id  TEXT,
    field       TEXT NOT NULL,
    value_num   REAL,
    value_text  TEXT,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, field, time)
);

CREATE TABLE quarantine (
    quarantine_id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at   INTEGER NOT NULL,
    device_id     TEXT NOT NULL,
    topic         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    reference     TEXT NOT NULL,
    first_time    INTEGER,
    payload       BLOB NOT NULL,
    resolution    TEXT,
    resolved_at   INTEGER,
    resolved_by   TEXT,
    UNIQUE (topic, reference)
);
CREATE INDEX quarantine_pending ON quarantine (received_at) WHERE resolution IS NULL;

CREATE TABLE alerts (
    alert_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id       TEXT REFERENCES patients (patient_id),
    device_id        TEXT,
    rule             TEXT NOT NULL,
    category         TEXT NOT NULL CHECK (category IN ('clinical', 'adherence', 'missing_data', 'technical')),
    severity         TEXT NOT NULL CHECK (severity IN ('high', 'medium', 'low')),
    state            TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'snoozed', 'resolved')),
    confirmed        BOOLEAN,
    plan_version     INTEGER NOT NULL DEFAULT 0,
    explanation      TEXT NOT NULL,
    threshold        TEXT NOT NULL,
    readings         TEXT NOT NULL,
    count            INTEGER NOT NULL DEFAULT 1,
    first_reading_at INTEGER NOT NULL,
    last_reading_at  INTEGER NOT NULL,
    opened_at        INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    acknowledged_at  INTEGER,
    acknowledged_by  TEXT,
    snoozed_until    INTEGER,
    resolved_at      INTEGER,
    resolved_by      TEXT,
    outcome          TEXT,
    note             TEXT,
    version          INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX alerts_one_active
    ON alerts (coalesce(patient_id, ''), rule, coalesce(device_id, ''))
    WHERE state <> 'resolved';
CREATE INDEX alerts_patient_opened ON alerts (patient_id, opened_at DESC);
CREATE INDEX alerts_key_latest ON alerts (coalesce(patient_id, ''), rule, coalesce(device_id, ''), last_reading_at DESC);

CREATE TABLE alert_history (
    history_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id    INTEGER NOT NULL REFERENCES alerts (alert_id),
    at          INTEGER NOT NULL,
    action      TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    note        TEXT
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, at);

-- Who viewed or changed which patient's data, when, from where (PDL).
CREATE TABLE audit_log (
    audit_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    patient_id  TEXT,
    detail      TEXT,
    source      TEXT
);
CREATE INDEX audit_log_patient ON audit_log (patient_id, at);
CREATE INDEX audit_log_at ON audit_log (at);
