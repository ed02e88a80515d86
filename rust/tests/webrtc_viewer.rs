//! The WebRTC engine's sans-IO core, with no socket: a str0m client (as a
//! browser would) connects to a viewer through `demux`, receives the
//! stream's packets decrypted and in order, and datagrams from strangers
//! never reach the viewer.

mod common;

use common::pcmu_frame;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipstream_core::webrtc::viewer::{Datagram, StreamCodecs, Viewer};
use sipstream_core::webrtc::{demux, Demuxed, FeedPacket, Route, Routes, StreamFeed};
use sipstream_core::Frame;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::Protocol;
use str0m::{Candidate, Event, Input, Output, Rtc};

const SERVER: &str = "127.0.0.1:31000";
const CLIENT: &str = "127.0.0.1:40000";

struct Setup {
    client: Rtc,
    viewers: HashMap<u64, Viewer>,
    by_addr: HashMap<Route, u64>,
    by_ufrag: HashMap<String, u64>,
    feed: std::sync::Arc<StreamFeed>,
    now: Instant,
    /// Datagrams from the viewer not yet given to the client.
    to_client: Vec<Datagram>,
    /// Stream sequence numbers the viewer's feedback asked to resend.
    resend: Vec<u64>,
}

fn setup() -> Setup {
    let now = Instant::now();
    let server: SocketAddr = SERVER.parse().unwrap();
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let mut client = Rtc::builder()
        .set_rtp_mode(true)
        .enable_pcmu(true, false)
        .set_crypto_provider(std::sync::Arc::new(str0m::crypto::from_feature_flags()))
        .build(now);
    client.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
    let mut sdp = client.sdp_api();
    sdp.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    sdp.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = sdp.apply().unwrap();

    let feed = StreamFeed::new();
    let codecs = StreamCodecs {
        audio: Some("PCMU".into()),
        video: Some(None),
    };
    let (viewer, answer) = Viewer::answer(
        7,
        &offer.to_sdp_string(),
        server,
        None,
        &codecs,
        feed.clone(),
        now,
    )
    .unwrap();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    client
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    let mut by_ufrag = HashMap::new();
    by_ufrag.insert(viewer.local_ufrag.clone(), 7);
    let mut viewers = HashMap::new();
    viewers.insert(7, viewer);
    Setup {
        client,
        viewers,
        by_addr: HashMap::new(),
        by_ufrag,
        feed,
        now,
        to_client: Vec::new(),
        resend: Vec::new(),
    }
}

impl Setup {
    /// Poll the client until it waits: its datagrams go through `demux`,
    /// its events are collected.
    fn pump_client(&mut self, events: &mut Vec<Event>) {
        let server: SocketAddr = SERVER.parse().unwrap();
        loop {
            match self.client.poll_output().unwrap() {
                Output::Transmit(t) => {
                    let routes = Routes {
                        by_addr: &mut self.by_addr,
                        by_ufrag: &self.by_ufrag,
                    };
                    let d = demux(
                        &mut self.viewers,
                        routes,
                        self.now,
                        (Protocol::Udp, t.source),
                        server,
                        &t.contents,
                    );
                    assert!(
                        matches!(
                            d,
                            Demuxed::Delivered {
                                viewer: 7,
                                error: false,
                                ..
                            }
                        ),
                        "{d:?}"
                    );
                }
                Output::Event(e) => events.push(e),
                Output::Timeout(_) => return,
            }
        }
    }

    /// Move datagrams both ways and time forward by 1 ms steps; the client's
    /// events are returned. (str0m in RTP mode holds one received packet
    /// until polled: the client is polled after each datagram.)
    fn run(&mut self, steps: usize) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..steps {
            self.now += Duration::from_millis(1);
            self.client.handle_input(Input::Timeout(self.now)).unwrap();
            self.pump_client(&mut events);
            let viewer = self.viewers.get_mut(&7).unwrap();
            viewer.rtc.handle_input(Input::Timeout(self.now)).unwrap();
            let feedback = viewer.poll(self.now, &mut self.to_client);
            assert!(feedback.close.is_none(), "{feedback:?}");
            self.resend.extend(feedback.resend);
            self.deliver(&mut events);
        }
        events
    }

    /// Hand the client what the viewer sent.
    fn deliver(&mut self, events: &mut Vec<Event>) {
        let server: SocketAddr = SERVER.parse().unwrap();
        for d in std::mem::take(&mut self.to_client) {
            assert_eq!(d.to, CLIENT.parse().unwrap());
            let receive = str0m::net::Receive::new(Protocol::Udp, server, d.to, &d.data).unwrap();
            self.client
                .handle_input(Input::Receive(self.now, receive))
                .unwrap();
            self.pump_client(events);
        }
    }

    /// Send the feed's queued packets as the engine does each tick.
    fn forward(&mut self) -> Vec<FeedPacket> {
        let taken = self.feed.take();
        self.viewers.get_mut(&7).unwrap().forward(
            &taken.packets,
            taken.overflowed,
            &mut self.to_client,
        );
        taken.packets
    }
}

#[test]
fn a_viewer_connects_through_demux_and_receives_every_packet_in_order() {
    let mut s = setup();
    let events = s.run(300);
    assert!(
        events.iter().any(|e| matches!(e, Event::Connected)),
        "not connected"
    );
    assert!(s.viewers[&7].connected);
    assert_eq!(
        s.by_addr.get(&(Protocol::Udp, CLIENT.parse().unwrap())),
        Some(&7)
    );

    // 50 audio frames through the feed, sent as the engine does each tick:
    // the client decrypts our SRTP
    for i in 0..50u32 {
        s.feed.push_frames(&[pcmu_frame(1000 + i * 160)]);
        s.forward();
    }
    let events = s.run(50);
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::RtpPacket(p) => Some(*p.seq_no),
            _ => None,
        })
        .collect();
    assert_eq!(seqs.len(), 50, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(s.viewers[&7].counters.packets, 50);
}

#[test]
fn strangers_datagrams_never_reach_a_viewer() {
    let mut s = setup();
    s.run(300);
    let server: SocketAddr = SERVER.parse().unwrap();
    // a tiny deterministic generator: STUN-, DTLS-, RTP- and RTCP-looking
    // datagrams, and STUN naming the viewer's ufrag without its password
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let ufrag = s.viewers[&7].local_ufrag.clone();
    for i in 0..20_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 1300) as usize;
        let mut d: Vec<u8> = (0..len).map(|k| (x >> (k % 56)) as u8).collect();
        if let Some(first) = d.first_mut() {
            *first = [0, 1, 20, 23, 128, 191, 255][i as usize % 7];
        }
        if i % 5 == 0 {
            // a binding request with USERNAME "<ufrag>:x" and a made-up integrity
            let user = format!("{ufrag}:x");
            let mut attr = vec![0x00, 0x06, 0, user.len() as u8];
            attr.extend(user.as_bytes());
            while attr.len() % 4 != 0 {
                attr.push(0);
            }
            attr.extend([0x00, 0x08, 0, 20]);
            attr.extend([0xab; 20]);
            d = vec![0x00, 0x01, 0, attr.len() as u8, 0x21, 0x12, 0xa4, 0x42];
            d.extend([7; 12]);
            d.extend(attr);
        }
        let from = SocketAddr::from(([127, 0, 0, 2], 1024 + (i % 5000) as u16));
        let routes = Routes {
            by_addr: &mut s.by_addr,
            by_ufrag: &s.by_ufrag,
        };
        let got = demux(
            &mut s.viewers,
            routes,
            s.now,
            (Protocol::Udp, from),
            server,
            &d,
        );
        assert_eq!(
            got,
            Demuxed::Unroutable,
            "datagram {i} from {from} reached a viewer"
        );
    }
    assert_eq!(s.by_addr.len(), 1, "a stranger claimed an address");
    // the viewer is still fine
    s.feed.push_frames(&[pcmu_frame(5000)]);
    s.forward();
    let events = s.run(20);
    assert!(events.iter().any(|e| matches!(e, Event::RtpPacket(_))));
}

fn h264(ts: u32, keyframe: bool) -> Frame {
    // an SPS and a 3,000-byte slice: four packets, three of them FU-As
    let mut data = vec![0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1];
    data.push(if keyframe { 0x65 } else { 0x41 });
    data.extend(std::iter::repeat_n(0xab, 3000));
    Frame {
        kind: "video",
        codec: "H264",
        payload_type: 96,
        clock_rate: 90_000,
        data,
        timestamp: ts,
        keyframe,
        ssrc: 2,
        pts_us: 0,
        generated: false,
        received: None,
    }
}

fn video_seqs(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RtpPacket(p) if p.header.payload_type != 0.into() => Some(*p.seq_no),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lost_video_packet_is_nacked_and_resent_from_the_streams_history() {
    let mut s = setup();
    s.run(300);
    assert!(s.viewers[&7].connected);
    let mut history: Vec<FeedPacket> = Vec::new();
    let mut events = Vec::new();
    for i in 0..6u32 {
        s.feed.push_frames(&[h264(90_000 + i * 3600, i == 0)]);
        history.extend(s.forward());
        if i == 2 {
            // the third packet of the third picture never arrives
            let lost = s.to_client.remove(2);
            assert!(!lost.data.is_empty());
        }
        s.deliver(&mut events);
        events.extend(s.run(40));
    }
    events.extend(s.run(300));
    let asked = std::mem::take(&mut s.resend);
    assert!(
        !asked.is_empty(),
        "the client sent no NACK the viewer understood"
    );
    // what the engine does with the stream's history
    for seq in &asked {
        let packet = history
            .iter()
            .find(|p| p.seq == *seq)
            .expect("in the history");
        s.viewers
            .get_mut(&7)
            .unwrap()
            .resend(packet, &mut s.to_client);
    }
    s.deliver(&mut events);
    events.extend(s.run(50));
    let mut seqs = video_seqs(&events);
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        24,
        "every packet of six pictures arrived: {seqs:?}"
    );
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let counters = s.viewers[&7].counters;
    assert!(counters.nacks >= 1 && counters.resent >= 1, "{counters:?}");
}

#[test]
fn sender_reports_reach_the_client_and_its_reports_give_the_round_trip() {
    let mut s = setup();
    s.run(300);
    let mut events = Vec::new();
    for round in 0..4u32 {
        for i in 0..50u32 {
            s.feed
                .push_frames(&[pcmu_frame(1000 + (round * 50 + i) * 160)]);
            s.forward();
            events.extend(s.run(20));
        }
        let now = s.now;
        s.viewers
            .get_mut(&7)
            .unwrap()
            .sender_reports(now, &mut s.to_client);
        s.deliver(&mut events);
    }
    events.extend(s.run(2000));
    assert!(
        events.iter().any(|e| matches!(e, Event::SenderFeedback(_))),
        "the client read no sender report"
    );
    let counters = s.viewers[&7].counters;
    assert!(counters.rtt_ms.is_some(), "{counters:?}");
    assert_eq!(counters.lost, 0, "{counters:?}");
    assert_eq!(counters.loss, Some(0.0), "{counters:?}");
}
