//! Plain-RTP (RTSP) viewers through the real engine (its thread, its
//! sockets): one over UDP gets the stream's audio and video on its own
//! ports with its own SSRCs and sequence numbers, and sender reports on its
//! RTCP port; one interleaved on a TCP connection that never reads is cut
//! off, and the UDP viewer keeps getting everything. The UDP viewer's RTCP
//! receiver reports reach it through the engine's RTCP port: its loss and
//! jitter, and a count its RTSP session lives on; strangers' are dropped.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use sipstream_core::media::Frame;
use sipstream_core::rtp::rtcp::write_receiver_report;
use sipstream_core::rtp::ReportBlock;
use sipstream_core::webrtc::plain::{PlainTrackConfig, TrackDest};
use sipstream_core::webrtc::{Engine, EngineEvent, StreamFeed, Timeouts};

fn frame(kind: &'static str, codec: &'static str, data: Vec<u8>, ts: u32, key: bool) -> Frame {
    Frame {
        kind,
        codec,
        payload_type: if kind == "video" { 96 } else { 0 },
        clock_rate: if kind == "video" { 90_000 } else { 8000 },
        data,
        timestamp: ts,
        keyframe: key,
        ssrc: 1,
        pts_us: 0,
        generated: false,
        received: None,
    }
}

fn keyframe(size: usize) -> Vec<u8> {
    let mut au = vec![0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x65];
    au.extend(std::iter::repeat_n(0xab, size));
    au
}

fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

#[test]
fn udp_and_interleaved_viewers_and_a_stuck_one_is_cut_off() {
    let engine = Engine::start_with_plain(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        Timeouts::default(),
        None,
        Some(0),
    )
    .unwrap();
    let (server_rtp, server_rtcp) = engine.plain_ports().unwrap();
    assert_eq!((server_rtp % 2, server_rtcp), (0, server_rtp + 1));
    let feed = StreamFeed::new();
    let (a_rtp, a_rtcp, v_rtp, v_rtcp) = (udp(), udp(), udp(), udp());
    let port = |s: &UdpSocket| s.local_addr().unwrap();
    let track = |pt, clock, ssrc, rtp, rtcp| PlainTrackConfig {
        pt,
        clock,
        ssrc,
        seq: 100,
        dest: TrackDest::Udp { rtp, rtcp },
    };
    let udp_viewer = engine
        .add_plain_viewer(
            feed.clone(),
            Some(track(0, 8000, 0xaaaa, port(&a_rtp), port(&a_rtcp))),
            Some(track(96, 90_000, 0xbbbb, port(&v_rtp), port(&v_rtcp))),
            None,
            1 << 20,
        )
        .unwrap();
    // a TCP client that never reads, with a small backlog allowed
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let stuck = engine
        .add_plain_viewer(
            feed.clone(),
            None,
            Some(PlainTrackConfig {
                pt: 96,
                clock: 90_000,
                ssrc: 3,
                seq: 0,
                dest: TrackDest::Interleaved { rtp: 0, rtcp: 1 },
            }),
            Some(OwnedFd::from(accepted)),
            64 * 1024,
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while feed.viewers() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // about 8 MB of keyframes: far beyond the stuck client's socket buffers
    let mut cut_off = false;
    let mut video = 0;
    let mut audio_seqs = Vec::new();
    let mut buf = [0u8; 2048];
    a_rtp.set_nonblocking(true).unwrap();
    v_rtp.set_nonblocking(true).unwrap();
    for i in 0..400u32 {
        feed.push_frames(&[
            frame("audio", "PCMU", vec![0xff; 160], i * 160, true),
            frame("video", "H264", keyframe(20_000), i * 3000, true),
        ]);
        std::thread::sleep(Duration::from_millis(5));
        while let Ok(n) = a_rtp.recv(&mut buf) {
            assert_eq!(&buf[8..12], &0xaaaau32.to_be_bytes());
            assert_eq!(n, 12 + 160);
            audio_seqs.push(u16::from_be_bytes([buf[2], buf[3]]));
        }
        while let Ok(n) = v_rtp.recv(&mut buf) {
            assert_eq!(buf[1] & 0x7f, 96);
            assert_eq!(&buf[8..12], &0xbbbbu32.to_be_bytes());
            assert!(n > 12);
            video += 1;
        }
        for e in engine.drain_events() {
            if let EngineEvent::Closed { viewer, reason } = e {
                assert_eq!(viewer, stuck, "{reason}");
                assert!(reason.contains("slow client"), "{reason}");
                cut_off = true;
            }
        }
    }
    assert!(cut_off, "the stuck client was not cut off");
    // the UDP viewer got its own sequence numbers from 100, in order
    assert!(audio_seqs.len() > 300, "{}", audio_seqs.len());
    assert_eq!(audio_seqs[0], 100);
    assert!(audio_seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    assert!(video > 300 * 10, "{video}");
    // and sender reports on its RTCP ports
    v_rtcp
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let n = v_rtcp.recv(&mut buf).unwrap();
    assert!(n >= 28 && buf[1] == 200);
    assert_eq!(&buf[4..8], &0xbbbbu32.to_be_bytes());
    // the client's receiver report on the video, to the engine's RTCP port;
    // the same from a stranger's address counts for nobody
    let report = |lost: i32| {
        let mut rr = Vec::new();
        let block = ReportBlock {
            ssrc: 0xbbbb,
            fraction_lost: 64,
            cumulative_lost: lost,
            extended_highest_seq: 100,
            jitter: 900,
            last_sr: 0,
            delay_since_last_sr: 0,
        };
        write_receiver_report(&mut rr, 0x5151, &[block]);
        rr
    };
    let to = ("127.0.0.1", server_rtcp);
    udp().send_to(&report(99), to).unwrap();
    v_rtcp.send_to(&report(7), to).unwrap();
    v_rtcp.send_to(b"not rtcp", to).unwrap();
    a_rtp
        .send_to(b"a NAT opener", ("127.0.0.1", server_rtp))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut counters = engine.viewer(udp_viewer).unwrap().counters;
    while counters.reports == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        counters = engine.viewer(udp_viewer).unwrap().counters;
    }
    assert_eq!(counters.reports, 1);
    assert_eq!((counters.lost, counters.loss), (7, Some(0.25)));
    assert_eq!(counters.jitter_ms, Some(10.0));
    assert!(engine.stats().unroutable >= 1);
    engine.remove_viewer(udp_viewer);
    let deadline = Instant::now() + Duration::from_secs(2);
    while feed.viewers() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(feed.viewers(), 0);
}
