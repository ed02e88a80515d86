//! SDP parsing on arbitrary text: never panics; what parses prints and
//! parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipstream_core::sdp::SessionDescription;

fuzz_target!(|text: &str| {
    if let Ok(sd) = SessionDescription::parse(text) {
        let printed = sd.to_sdp_string();
        let _ = SessionDescription::parse(&printed);
    }
});
