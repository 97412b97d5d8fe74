-- Staff, care units and who may see which patient (ARCHITECTURE §3, §6).
--
-- A patient is enrolled in one or more care units; the unit's kind says
-- what it is responsible for (region: clinical care; municipality:
-- dispensers, falls and safety alarms). Staff belong to units and see the
-- patients enrolled there; a nurse's board lists the patients assigned to
-- her.

CREATE TABLE care_units (
    unit_id     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('region', 'municipality')),
    created_at  INTEGER NOT NULL
);

CREATE TABLE staff (
    staff_id        TEXT PRIMARY KEY,
    -- Login name; lower case. An OIDC login maps its subject to this row.
    username        TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('nurse', 'physician', 'admin')),
    -- argon2id PHC string; NULL for accounts that log in elsewhere (OIDC).
    password_hash   TEXT,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER,
    created_at      INTEGER NOT NULL
);

CREATE TABLE staff_units (
    staff_id    TEXT NOT NULL REFERENCES staff (staff_id),
    unit_id     TEXT NOT NULL REFERENCES care_units (unit_id),
    PRIMARY KEY (staff_id, unit_id)
);

CREATE TABLE enrolments (
    patient_id  TEXT NOT NULL REFERENCES patients (patient_id),
    unit_id     TEXT NOT NULL REFERENCES care_units (unit_id),
    enrolled_at INTEGER NOT NULL,
    PRIMARY KEY (patient_id, unit_id)
);
CREATE INDEX enrolments_unit ON enrolments (unit_id);

-- A nurse's own list (the board): at most 50 patients, checked by the API.
CREATE TABLE assignments (
    staff_id    TEXT NOT NULL REFERENCES staff (staff_id),
    patient_id  TEXT NOT NULL REFERENCES patients (patient_id),
    assigned_at INTEGER NOT NULL,
    PRIMARY KEY (staff_id, patient_id)
);

-- Login sessions. Only a hash of the cookie's token is stored, so a copy
-- of the database does not let anyone log in.
CREATE TABLE staff_sessions (
    token_hash  TEXT PRIMARY KEY,
    staff_id    TEXT NOT NULL REFERENCES staff (staff_id),
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    source      TEXT
);
CREATE INDEX staff_sessions_staff ON staff_sessions (staff_id);

-- Phone calls to patients, with or without an alert behind them.
CREATE TABLE calls (
    call_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id  TEXT NOT NULL REFERENCES patients (patient_id),
    alert_id    INTEGER REFERENCES alerts (alert_id),
    staff_id    TEXT NOT NULL,
    at          INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('reached', 'no_answer', 'left_message')),
    note        TEXT NOT NULL
);
CREATE INDEX calls_patient ON calls (patient_id, at);

CREATE INDEX audit_log_actor ON audit_log (actor, at);
