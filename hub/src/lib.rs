//! # vaka-hub
//!
//! The hot path of vaka and the `vaka` binary.
pub mod alerts;
pub mod engine;
pub mod store;
