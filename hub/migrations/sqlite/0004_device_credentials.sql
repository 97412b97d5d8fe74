-- Device credentials (MQTT username = device id). Only a hash of the
-- password is kept, in Mosquitto's own PBKDF2-SHA512 form
-- (`$7$iterations$salt$hash`), so `vaka mosquitto-config` can write the
-- broker's password file without ever knowing a password.
CREATE TABLE device_credentials (
    device_id     TEXT PRIMARY KEY REFERENCES devices (device_id),
    password_hash TEXT NOT NULL,
    issued_at     INTEGER NOT NULL,
    -- Set by `vaka device revoke`: the gateway quarantines the device's
    -- messages from then on, and the broker config leaves it out.
    revoked_at    INTEGER
);
