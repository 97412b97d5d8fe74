//! End-to-end tests of vaka live in `tests/e2e/`: they start the real
//! `vaka` binary against the local Mosquitto and PostgreSQL (each test with
//! its own database and topic root) and talk to it the way devices and
//! nurses do: MQTT, HTTP and the websocket. Run them with
//! `scripts/test.sh`, which makes sure the services are up.
