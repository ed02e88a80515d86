//! Shared helpers for the media tests: a virtual clock, an in-memory far
//! end that packetizes H.264 and PCMU, and output collectors.
#![allow(dead_code)]

use sipstream_core::h264::{h264_packetize, START_CODE};
use sipstream_core::rtp::{build_rtp, RtcpPacket, SenderInfo};
use sipstream_core::session::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const SPS_640X480: &[u8] = &[
    0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x3d, 0xa1, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00,
    0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
];
pub const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

pub fn far() -> SocketAddr {
    "10.0.0.2:40000".parse().unwrap()
}
pub fn far_video() -> SocketAddr {
    "10.0.0.2:40002".parse().unwrap()
}

pub fn config(feedback: Feedback) -> SessionConfig {
    SessionConfig {
        payload_types: vec![
            PayloadType::new(0, "PCMU", 8000).unwrap(),
            PayloadType::new(101, "telephone-event", 8000).unwrap(),
            PayloadType::new(96, "H264", 90000).unwrap(),
        ],
        audio: TrackConfig {
            remote_rtp: Some(far()),
            ..TrackConfig::default()
        },
        video: TrackConfig {
            remote_rtp: Some(far_video()),
            feedback,
            ..TrackConfig::default()
        },
        ..SessionConfig::default()
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An access unit: SPS+PPS+IDR for keyframes, one P slice otherwise.
pub fn access_unit(n: u32, keyframe: bool, size: usize) -> Vec<u8> {
    let mut au = Vec::new();
    if keyframe {
        for nal in [SPS_640X480, PPS] {
            au.extend_from_slice(&START_CODE);
            au.extend_from_slice(nal);
        }
    }
    au.extend_from_slice(&START_CODE);
    au.push(if keyframe { 0x65 } else { 0x41 });
    au.extend_from_slice(format!("frame{n}:").as_bytes());
    au.extend((0..size).map(|i| ((i as u32 + n * 7) % 250) as u8 + 1));
    au
}

/// The far end's video sender.
pub struct VideoSender {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub frame: u32,
    pub gop: u32,
}

impl VideoSender {
    pub fn new(ssrc: u32, seq: u16, ts: u32) -> Self {
        VideoSender {
            ssrc,
            seq,
            ts,
            frame: 0,
            gop: 30,
        }
    }

    /// Packets of the next frame (3000 ticks = 30 fps) and its AU.
    pub fn next_frame(&mut self, size: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let key = self.frame.is_multiple_of(self.gop);
        let au = access_unit(self.frame, key, if key { size * 3 } else { size });
        let payloads = h264_packetize(&au, 1200);
        let n = payloads.len();
        let packets = payloads
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let pkt = build_rtp(96, self.seq, self.ts, self.ssrc, k + 1 == n, p);
                self.seq = self.seq.wrapping_add(1);
                pkt
            })
            .collect();
        self.ts = self.ts.wrapping_add(3000);
        self.frame += 1;
        (au, packets)
    }
}

pub struct AudioSender {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
}

impl AudioSender {
    pub fn next(&mut self) -> Vec<u8> {
        let p = build_rtp(0, self.seq, self.ts, self.ssrc, false, &[0x55; 160]);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        p
    }
}

pub fn drain(s: &mut MediaSession) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        match s.poll_output() {
            Output::Timeout(_) => return out,
            o => out.push(o),
        }
    }
}

pub fn frames(out: &[Output]) -> Vec<sipstream_core::Frame> {
    out.iter()
        .filter_map(|o| match o {
            Output::Frame(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

pub fn transmits(out: &[Output]) -> Vec<Transmit> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

pub fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Every RTCP packet of every transmit.
pub fn rtcp(out: &[Output]) -> Vec<RtcpPacket> {
    transmits(out)
        .iter()
        .flat_map(|t| sipstream_core::rtp::parse_rtcp_compound(&t.data).unwrap())
        .collect()
}

/// Run timers up to `until` in `step`s, collecting outputs.
pub fn run_until(
    s: &mut MediaSession,
    now: &mut Instant,
    until: Instant,
    step: Duration,
) -> Vec<Output> {
    let mut out = Vec::new();
    while *now < until {
        *now += step;
        s.handle_timeout(*now);
        out.extend(drain(s));
    }
    out
}

pub fn sender_report(ssrc: u32, ntp: u64, rtp: u32) -> Vec<u8> {
    let mut d = Vec::new();
    sipstream_core::rtp::rtcp::write_sender_report(
        &mut d,
        ssrc,
        &SenderInfo {
            ntp,
            rtp_timestamp: rtp,
            packet_count: 0,
            octet_count: 0,
        },
        &[],
    );
    d
}

pub fn video_rtp() -> LocalSocket {
    LocalSocket {
        kind: MediaKind::Video,
        rtcp: false,
    }
}
pub fn video_rtcp() -> LocalSocket {
    LocalSocket {
        kind: MediaKind::Video,
        rtcp: true,
    }
}

/// A 20 ms PCMU frame (160 samples) as the receive path emits it.
pub fn pcmu_frame(timestamp: u32) -> sipstream_core::Frame {
    sipstream_core::Frame {
        kind: "audio",
        codec: "PCMU",
        payload_type: 0,
        clock_rate: 8000,
        data: vec![0x55; 160],
        timestamp,
        keyframe: true,
        ssrc: 1,
        pts_us: 0,
        generated: false,
        received: None,
    }
}
