//! The websocket's client messages: any text through the parser. Nothing
//! may panic; what parses must be one of the messages the server knows,
//! with a patient id no longer than the frame allows.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vaka_hub::http::ws::{ClientMessage, parse_client_message};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_client_message(&text) {
        Ok(ClientMessage::Subscribe { patient_id } | ClientMessage::Unsubscribe { patient_id }) => {
            assert!(patient_id.len() <= text.len());
        }
        Ok(ClientMessage::Ping) | Err(_) => {}
    }
});
