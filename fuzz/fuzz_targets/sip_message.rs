//! `SipMessage::parse` on arbitrary bytes must never panic, and whatever
//! parses must survive serialize → reparse with the same start line, headers
//! (Content-Length aside, which the serializer rewrites) and body. The
//! structured header values and challenges found in it are parsed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipstream_core::auth::parse_challenge;
use sipstream_core::sdp::SessionDescription;
use sipstream_core::sip::{SipMessage, MAX_MESSAGE_SIZE};
use sipstream_core::{NameAddr, SipUri, Via};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = SipMessage::parse(data) else {
        return;
    };
    let bytes = m.to_bytes();
    // Expanding compact names and splitting comma lists can push a message
    // near the limit over it; nothing else may fail on the way back.
    if bytes.len() <= MAX_MESSAGE_SIZE {
        let again = SipMessage::parse(&bytes).unwrap_or_else(|e| {
            panic!("reparse failed: {e}\n{:?}", String::from_utf8_lossy(&bytes))
        });
        assert_eq!(again.start, m.start);
        assert_eq!(again.body, m.body);
        let strip = |h: &sipstream_core::sip::Headers| {
            h.iter()
                .filter(|(n, _)| *n != "Content-Length")
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&again.headers), strip(&m.headers));
        assert_eq!(again.to_bytes(), bytes, "serialization is a fixed point");
    }
    let _ = m.cseq();
    for (name, value) in m.headers.iter() {
        match name {
            "Via" => {
                if let Ok(v) = Via::parse(value) {
                    let _ = v.to_string();
                }
            }
            "From" | "To" | "Contact" | "Route" | "Record-Route" | "Refer-To" => {
                if let Ok(n) = NameAddr::parse(value) {
                    let _ = n.to_string();
                    if let Ok(u) = SipUri::parse(&n.uri) {
                        let _ = u.to_string();
                    }
                }
            }
            "WWW-Authenticate" | "Proxy-Authenticate" => {
                let _ = parse_challenge(value);
            }
            _ => {}
        }
    }
    if let Some(uri) = m.uri() {
        let _ = SipUri::parse(uri);
    }
    if let Ok(text) = std::str::from_utf8(&m.body) {
        let _ = SessionDescription::parse(text);
    }
});
