//! `NameAddr`, `SipUri` and `Via` parsers on arbitrary text: never panic,
//! and what they print parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipstream_core::{NameAddr, SipUri, Via};

fuzz_target!(|text: &str| {
    if let Ok(u) = SipUri::parse(text) {
        let _ = u.param("transport");
        let _ = SipUri::parse(&u.to_string());
    }
    if let Ok(n) = NameAddr::parse(text) {
        let _ = n.tag();
        let _ = NameAddr::parse(&n.to_string());
        let _ = SipUri::parse(&n.uri);
    }
    if let Ok(v) = Via::parse(text) {
        let _ = v.branch();
        let _ = Via::parse(&v.to_string());
    }
});
