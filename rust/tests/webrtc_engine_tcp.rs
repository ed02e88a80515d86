//! ICE-TCP end to end through the real engine (its thread, its sockets): a
//! str0m client that has only a TCP candidate connects to the engine's
//! passive ICE-TCP candidate over a loopback TCP connection (RFC 4571
//! framing), does ICE and DTLS over it, and receives the stream's packets,
//! decrypted and in order.

mod common;

use common::pcmu_frame;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipstream_core::webrtc::tcp::Deframer;
use sipstream_core::webrtc::viewer::StreamCodecs;
use sipstream_core::webrtc::{Engine, EngineEvent, StreamFeed, Timeouts};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Poll the client until it waits: its datagrams go framed on the TCP
/// connection, its RTP sequence numbers are collected.
fn drain(client: &mut Rtc, stream: &mut TcpStream, seqs: &mut Vec<u64>) {
    loop {
        match client.poll_output().unwrap() {
            Output::Transmit(t) => {
                assert_eq!(t.proto, Protocol::Tcp);
                let mut framed = (t.contents.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&t.contents);
                stream.write_all(&framed).unwrap();
            }
            Output::Event(Event::RtpPacket(p)) => seqs.push(*p.seq_no),
            Output::Event(_) => {}
            Output::Timeout(_) => return,
        }
    }
}

#[test]
fn a_viewer_connects_over_ice_tcp_and_receives_the_stream() {
    let engine = Engine::start(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        Timeouts::default(),
        Some(0),
    )
    .unwrap();
    let server = engine.tcp_candidate().expect("a TCP candidate");
    let mut stream = TcpStream::connect(server).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    let local: SocketAddr = stream.local_addr().unwrap();

    let mut now = Instant::now();
    let mut client = Rtc::builder()
        .set_rtp_mode(true)
        .enable_pcmu(true, false)
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .build(now);
    let candidate = Candidate::builder()
        .tcp()
        .host(local)
        .tcptype(TcpType::Active)
        .build()
        .unwrap();
    client.add_local_candidate(candidate);
    let mut sdp = client.sdp_api();
    sdp.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = sdp.apply().unwrap();

    let feed = StreamFeed::new();
    let codecs = StreamCodecs {
        audio: Some("PCMU".into()),
        video: None,
    };
    let (viewer, answer) = engine
        .add_viewer(&offer.to_sdp_string(), &codecs, feed.clone())
        .unwrap();
    assert!(answer.contains("tcptype passive"), "{answer}");
    client
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();

    let mut deframer = Deframer::new(65535);
    let mut buf = vec![0u8; 65536];
    let mut seqs: Vec<u64> = Vec::new();
    let mut engine_connected = false;
    let mut sent = 0u32;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seqs.len() < 50 && Instant::now() < deadline {
        now = Instant::now();
        client.handle_input(Input::Timeout(now)).unwrap();
        drain(&mut client, &mut stream, &mut seqs);
        let mut frames = Vec::new();
        match stream.read(&mut buf) {
            Ok(0) => panic!("the engine closed the TCP connection"),
            Ok(n) => deframer.push(&buf[..n], |f| frames.push(f.to_vec())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
        // str0m in RTP mode holds one received packet until polled
        for f in frames {
            let receive = Receive::new(Protocol::Tcp, server, local, &f).unwrap();
            client
                .handle_input(Input::Receive(Instant::now(), receive))
                .unwrap();
            drain(&mut client, &mut stream, &mut seqs);
        }
        for e in engine.drain_events() {
            match e {
                EngineEvent::Connected { viewer: v } if v == viewer => engine_connected = true,
                EngineEvent::Closed { reason, .. } => panic!("viewer closed: {reason}"),
                _ => {}
            }
        }
        if engine_connected && sent < 60 {
            feed.push_frames(&[pcmu_frame(1000 + sent * 160)]);
            sent += 1;
        }
    }
    assert!(engine_connected, "ICE and DTLS did not come up over TCP");
    assert!(seqs.len() >= 50, "{} packets: {seqs:?}", seqs.len());
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let info = engine.viewer(viewer).unwrap();
    assert_eq!(info.remote, Some(local));
}
