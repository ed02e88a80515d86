//! The WebRTC engine's demultiplexer on arbitrary datagrams: `demux` (address
//! map, STUN username routing, str0m's `accepts` and `handle_input`) and the
//! viewer's output never panic, whatever arrives from whichever address.
//! The input is a list of datagrams: [source port byte, length byte, bytes].
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sipstream_core::webrtc::viewer::{StreamCodecs, Viewer};
use sipstream_core::webrtc::{demux, Route, Routes, StreamFeed};
use str0m::net::Protocol;
use str0m::Input;

/// A browser-like offer: PCMU and H.264, BUNDLE, rtcp-mux.
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
a=ice-ufrag:fuzz\r\na=ice-pwd:fuzzfuzzfuzzfuzzfuzzfuzz\r\n\
a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r\n\
a=setup:actpass\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
a=rtpmap:96 H264/90000\r\na=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n";

struct State {
    viewers: HashMap<u64, Viewer>,
    by_addr: HashMap<Route, u64>,
    by_ufrag: HashMap<String, u64>,
    now: Instant,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn fresh() -> State {
    let now = Instant::now();
    let server: SocketAddr = "127.0.0.1:31000".parse().unwrap();
    let codecs = StreamCodecs {
        audio: Some("PCMU".into()),
        video: Some(None),
    };
    let (viewer, _) = Viewer::answer(1, OFFER, server, None, &codecs, StreamFeed::new(), now)
        .expect("the canned offer is answered");
    let mut by_ufrag = HashMap::new();
    by_ufrag.insert(viewer.local_ufrag.clone(), 1);
    // the browser's address is known, as after a successful STUN check
    let mut by_addr = HashMap::new();
    by_addr.insert((Protocol::Udp, "127.0.0.1:40000".parse().unwrap()), 1);
    let mut viewers = HashMap::new();
    viewers.insert(1, viewer);
    State {
        viewers,
        by_addr,
        by_ufrag,
        now,
    }
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        // a viewer per input would cost its crypto set-up each time: keep
        // one, and start afresh when an input closed it
        if cell.as_ref().is_none_or(|s| !s.viewers[&1].rtc.is_alive()) {
            *cell = Some(fresh());
        }
        let s = cell.as_mut().unwrap();
        let server: SocketAddr = "127.0.0.1:31000".parse().unwrap();
        let mut rest = data;
        while let [port, len, tail @ ..] = rest {
            let n = usize::from(*len).min(tail.len());
            let (datagram, next) = tail.split_at(n);
            rest = next;
            // port 0 and 1 stand for the viewer's own address
            let from = SocketAddr::from(([127, 0, 0, 1], if *port < 2 { 40000 } else { 1024 + u16::from(*port) }));
            s.now += Duration::from_millis(1);
            let routes = Routes {
                by_addr: &mut s.by_addr,
                by_ufrag: &s.by_ufrag,
            };
            let _ = demux(&mut s.viewers, routes, s.now, (Protocol::Udp, from), server, datagram);
            let viewer = s.viewers.get_mut(&1).unwrap();
            let _ = viewer.rtc.handle_input(Input::Timeout(s.now));
            let mut out = Vec::new();
            let _ = viewer.poll(s.now, &mut out);
        }
    });
});
