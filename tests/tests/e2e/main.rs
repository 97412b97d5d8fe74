//! End-to-end tests: the real `vaka serve` against the local Mosquitto and
//! PostgreSQL (or SQLite), each test in its own database and topic root.

mod api_walk;
mod crash;
mod demo;
mod faults;
mod ingest;
mod limits;
mod load;
mod rules;
mod security;
mod support;
mod validation;
