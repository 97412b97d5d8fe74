-- vaka schema for PostgreSQL (ARCHITECTURE §5).
--
-- Times are TIMESTAMPTZ. Ids that devices and people see are TEXT
-- (`[A-Za-z0-9_-]`), so an operator can read them in psql.

CREATE TABLE patients (
    patient_id   TEXT PRIMARY KEY,
    -- Invented in the demo; in production the display name of the patient.
    display_name TEXT NOT NULL,
    timezone     TEXT NOT NULL DEFAULT 'Europe/Stockholm',
    program      TEXT,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE devices (
    device_id     TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    -- Kept up to date from what the device sends.
    last_seen_at  TIMESTAMPTZ,
    battery_pct   DOUBLE PRECISION,
    connection    TEXT,
    firmware      TEXT,
    heartbeat_s   DOUBLE PRECISION
);

-- Which patient a device speaks for, over which time range. A message is
-- filed under the binding in force at its first record's time.
CREATE TABLE device_bindings (
    binding_id  BIGSERIAL PRIMARY KEY,
    device_id   TEXT NOT NULL REFERENCES devices (device_id),
    patient_id  TEXT NOT NULL REFERENCES patients (patient_id),
    valid_from  TIMESTAMPTZ NOT NULL,
    valid_to    TIMESTAMPTZ,
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
-- At most one open binding per device.
CREATE UNIQUE INDEX device_bindings_open ON device_bindings (device_id) WHERE valid_to IS NULL;
CREATE INDEX device_bindings_patient ON device_bindings (patient_id);

-- Events (falls, doses, CTG sessions …). The unique key makes a redelivered
-- message store nothing twice.
CREATE TABLE events (
    time        TIMESTAMPTZ NOT NULL,
    patient_id  TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    text        TEXT,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX events_key ON events (device_id, kind, time, coalesce(text, ''));
CREATE INDEX events_patient_time ON events (patient_id, time);

-- Every status report a device sends (battery, connection, heartbeat …).
CREATE TABLE status_reports (
    time        TIMESTAMPTZ NOT NULL,
    device_id   TEXT NOT NULL,
    patient_id  TEXT,
    field       TEXT NOT NULL,
    value_num   DOUBLE PRECISION,
    value_text  TEXT,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (device_id, field, time)
);

-- Messages from unknown or unbound devices: kept, not lost, for an
-- administrator to bind the device or discard them with a reason.
CREATE TABLE quarantine (
    quarantine_id BIGSERIAL PRIMARY KEY,
    received_at   TIMESTAMPTZ NOT NULL,
    device_id     TEXT NOT NULL,
    topic         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    reference     TEXT NOT NULL,
    first_time    TIMESTAMPTZ,
    payload       BYTEA NOT NULL,
    resolution    TEXT,
    resolved_at   TIMESTAMPTZ,
    resolved_by   TEXT,
    UNIQUE (topic, reference)
);
CREATE INDEX quarantine_pending ON quarantine (received_at) WHERE resolution IS NULL;

-- Alerts. `first_reading_at` / `last_reading_at` are data times: the engine
-- uses them to recognise a finding it has already filed (after a restart or
-- a redelivery), so the same data never opens an alert twice.
CREATE TABLE alerts (
    alert_id         BIGSERIAL PRIMARY KEY,
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
    first_reading_at TIMESTAMPTZ NOT NULL,
    last_reading_at  TIMESTAMPTZ NOT NULL,
    opened_at        TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    acknowledged_at  TIMESTAMPTZ,
    acknowledged_by  TEXT,
    snoozed_until    TIMESTAMPTZ,
    resolved_at      TIMESTAMPTZ,
    resolved_by      TEXT,
    outcome          TEXT,
    note             TEXT,
    version          INTEGER NOT NULL DEFAULT 1
);
-- At most one active alert per patient + rule (+ device, for technical rules).
CREATE UNIQUE INDEX alerts_one_active
    ON alerts (coalesce(patient_id, ''), rule, coalesce(device_id, ''))
    WHERE state <> 'resolved';
CREATE INDEX alerts_patient_opened ON alerts (patient_id, opened_at DESC);
CREATE INDEX alerts_key_latest ON alerts (coalesce(patient_id, ''), rule, coalesce(device_id, ''), last_reading_at DESC);

CREATE TABLE alert_history (
    history_id  BIGSERIAL PRIMARY KEY,
    alert_id    BIGINT NOT NULL REFERENCES alerts (alert_id),
    at          TIMESTAMPTZ NOT NULL,
    action      TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    note        TEXT
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, at);

-- Observations: the bulk of the data. With TimescaleDB available (installed
-- and preloaded) it is a hypertable with compression after 7 days, a
-- retention policy and a continuous aggregate of daily means; otherwise a
-- table range-partitioned by month with a BRIN index on time, and a plain
-- view with the same daily means. The unique key (device, metric, time)
-- makes redelivery harmless in both.
DO $$
DECLARE
    timescale boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
        OR (EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
            AND current_setting('shared_preload_libraries', true) LIKE '%timescaledb%');
BEGIN
    IF timescale THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        CREATE TABLE observations (
            time        TIMESTAMPTZ NOT NULL,
            patient_id  TEXT NOT NULL,
            device_id   TEXT NOT NULL,
            metric      TEXT NOT NULL,
            value       DOUBLE PRECISION NOT NULL,
            unit        TEXT NOT NULL,
            received_at TIMESTAMPTZ NOT NULL,
            UNIQUE (device_id, metric, time)
        );
        PERFORM create_hypertable('observations', 'time', chunk_time_interval => INTERVAL '7 days');
        ALTER TABLE observations SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'device_id, metric',
            timescaledb.compress_orderby = 'time'
        );
        PERFORM add_compression_policy('observations', INTERVAL '7 days');
        PERFORM add_retention_policy('observations', INTERVAL '400 days');
        EXECUTE $v$
            CREATE MATERIALIZED VIEW observations_daily
            WITH (timescaledb.continuous) AS
            SELECT time_bucket(INTERVAL '1 day', time) AS day, patient_id, metric,
                   avg(value) AS mean, min(value) AS min, max(value) AS max, count(*) AS n
            FROM observations
            GROUP BY 1, 2, 3
            WITH NO DATA
        $v$;
        PERFORM add_continuous_aggregate_policy('observations_daily',
            start_offset => INTERVAL '30 days', end_offset => INTERVAL '1 hour',
            schedule_interval => INTERVAL '1 hour');
    ELSE
        CREATE TABLE observations (
            time        TIMESTAMPTZ NOT NULL,
            patient_id  TEXT NOT NULL,
            device_id   TEXT NOT NULL,
            metric      TEXT NOT NULL,
            value       DOUBLE PRECISION NOT NULL,
            unit        TEXT NOT NULL,
            received_at TIMESTAMPTZ NOT NULL,
            UNIQUE (device_id, metric, time)
        ) PARTITION BY RANGE (time);
        -- Catches what no monthly partition covers, so no insert ever fails.
        CREATE TABLE observations_default PARTITION OF observations DEFAULT;
        CREATE INDEX observations_time_brin ON observations USING brin (time);
        CREATE VIEW observations_daily AS
            SELECT date_trunc('day', time) AS day, patient_id, metric,
                   avg(value) AS mean, min(value) AS min, max(value) AS max, count(*) AS n
            FROM observations
            GROUP BY 1, 2, 3;
    END IF;
END
$$;
CREATE INDEX observations_patient_time ON observations (patient_id, metric, time DESC);

-- Creates the monthly partitions from `months_back` months ago to
-- `months_ahead` months ahead (plain PostgreSQL only; a no-op on a
-- hypertable). Rows that landed in the default partition for a month that
-- now gets its own partition are moved into it, in the same transaction.
CREATE FUNCTION vaka_ensure_observation_partitions(months_back integer, months_ahead integer)
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    created integer := 0;
    m date;
    part text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table p
                   JOIN pg_class c ON c.oid = p.partrelid
                   WHERE c.relname = 'observations' AND c.relnamespace = current_schema()::regnamespace) THEN
        RETURN 0;
    END IF;
    FOR i IN -months_back .. months_ahead LOOP
        m := (date_trunc('month', now()) + make_interval(months => i))::date;
        part := format('observations_%s', to_char(m, 'YYYY_MM'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TEMP TABLE vaka_moved ON COMMIT DROP AS
                            WITH moved AS (DELETE FROM observations_default
                                           WHERE time >= %L AND time < %L RETURNING *)
                            SELECT * FROM moved', m, (m + INTERVAL '1 month')::date);
            EXECUTE format('CREATE TABLE %I PARTITION OF observations FOR VALUES FROM (%L) TO (%L)',
                           part, m, (m + INTERVAL '1 month')::date);
            EXECUTE 'INSERT INTO observations SELECT * FROM vaka_moved';
            DROP TABLE vaka_moved;
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$fn$;

SELECT vaka_ensure_observation_partitions(13, 3);

-- Who viewed or changed which patient's data, when, from where (PDL).
CREATE TABLE audit_log (
    audit_id    BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    patient_id  TEXT,
    detail      TEXT,
    source      TEXT
);
CREATE INDEX audit_log_patient ON audit_log (patient_id, at);
CREATE INDEX audit_log_at ON audit_log (at);
