//! Digest challenge parsing and answering on arbitrary text: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipstream_core::auth::{digest_authorization, parse_challenge};

fuzz_target!(|text: &str| {
    if let Ok(ch) = parse_challenge(text) {
        let _ = digest_authorization("alice", "secret", "INVITE", "sip:b@h", &ch, "0a4f113b", 1);
    }
});
