//! Sans-IO receive path for one call: RTP packets in, whole frames out.

use crate::h264::H264Depacketizer;
use crate::rtp::{is_rtcp, RtpPacket};
use crate::sync::TimestampUnwrapper;
use std::collections::HashMap;
use std::time::Instant;

/// One decodable unit: an H.264 access unit or one audio packet's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `audio` or `video`.
    pub kind: &'static str,
    /// Canonical codec name: `H264`, `PCMU`, `PCMA`, `G722`, `opus`, ...
    pub codec: &'static str,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Annex-B access unit for H.264, the RTP payload for audio.
    pub data: Vec<u8>,
    pub timestamp: u32,
    /// IDR for video; always true for audio.
    pub keyframe: bool,
    pub ssrc: u32,
    /// Presentation time in microseconds on the session's common clock
    /// (monotonic per track). `MediaReceiver` uses the unwrapped RTP
    /// timestamp scaled to microseconds.
    pub pts_us: i64,
    /// A placeholder (silence, black keyframe) from the generator.
    pub generated: bool,
    /// When the packet that completed the frame was read from its socket
    /// (`None` for generated frames and frames not read from a socket): the
    /// WebRTC engine's latency is measured from here.
    pub received: Option<Instant>,
}

/// Audio codecs passed through one frame per packet (canonical spelling).
pub(crate) const AUDIO_CODECS: &[&str] = &[
    "PCMU",
    "PCMA",
    "G722",
    "G729",
    "opus",
    "telephone-event",
    "CN",
    "L16",
    "GSM",
    "iLBC",
    "speex",
    "AMR",
    "AMR-WB",
];

#[derive(Debug, Clone)]
enum Route {
    H264,
    Audio(&'static str),
}

/// Receive state for one call.
#[derive(Debug)]
pub struct MediaReceiver {
    payload_types: HashMap<u8, (Route, u32)>,
    pub packets: u64,
    pub bytes: u64,
    pub malformed: u64,
    pub unknown_payload_type: u64,
    /// Sequence gaps (packets missing), per SSRC, summed.
    pub lost: u64,
    /// RTCP packets seen (ignored here).
    pub rtcp: u64,
    pub video_ssrc: Option<u32>,
    pub audio_ssrc: Option<u32>,
    last_seq: HashMap<u32, u16>,
    depacketizer: H264Depacketizer,
    video_keyframe_seen: bool,
    unwrap: [TimestampUnwrapper; 2],
}

#[derive(Clone, Copy)]
enum MediaKindIndex {
    Audio = 0,
    Video = 1,
}

impl MediaReceiver {
    /// `payload_types` maps payload type → (codec name, clock rate). Codec
    /// names are matched case-insensitively; names other than H264 and the
    /// known audio codecs count as unknown payload types.
    pub fn new<I, S>(payload_types: I) -> Self
    where
        I: IntoIterator<Item = (u8, (S, u32))>,
        S: AsRef<str>,
    {
        let payload_types = payload_types
            .into_iter()
            .filter_map(|(pt, (name, rate))| {
                let name = name.as_ref();
                let route = if name.eq_ignore_ascii_case("H264") {
                    Route::H264
                } else {
                    Route::Audio(AUDIO_CODECS.iter().find(|c| c.eq_ignore_ascii_case(name))?)
                };
                Some((pt, (route, rate)))
            })
            .collect();
        MediaReceiver {
            payload_types,
            packets: 0,
            bytes: 0,
            malformed: 0,
            unknown_payload_type: 0,
            lost: 0,
            rtcp: 0,
            video_ssrc: None,
            audio_ssrc: None,
            last_seq: HashMap::new(),
            depacketizer: H264Depacketizer::new(),
            video_keyframe_seen: false,
            unwrap: [TimestampUnwrapper::default(); 2],
        }
    }

    fn pts(&mut self, kind: MediaKindIndex, ts: u32, clock_rate: u32) -> i64 {
        let ext = self
            .unwrap
            .get_mut(kind as usize)
            .map_or(i64::from(ts), |u| u.unwrap(ts));
        ext.saturating_mul(1_000_000) / i64::from(clock_rate.max(1))
    }

    /// True after video loss until the next keyframe, and while video is
    /// flowing but no keyframe has arrived yet (drives PLI/FIR).
    pub fn needs_keyframe(&self) -> bool {
        self.depacketizer.needs_keyframe || (self.video_ssrc.is_some() && !self.video_keyframe_seen)
    }

    /// The H.264 depacketizer's counters (dropped AUs etc.).
    pub fn depacketizer(&self) -> &H264Depacketizer {
        &self.depacketizer
    }

    /// Feed one datagram; returns the frames it completed. Never fails:
    /// bad input is counted.
    pub fn push(&mut self, packet: &[u8]) -> Vec<Frame> {
        self.packets += 1;
        self.bytes += packet.len() as u64;
        if is_rtcp(packet) {
            self.rtcp += 1;
            return Vec::new();
        }
        let Ok(p) = RtpPacket::parse(packet) else {
            self.malformed += 1;
            return Vec::new();
        };
        let Some((route, clock_rate)) = self.payload_types.get(&p.payload_type).cloned() else {
            self.unknown_payload_type += 1;
            return Vec::new();
        };
        match self.last_seq.get(&p.ssrc) {
            Some(&last) => {
                // signed wrapped difference: >1 means packets went missing
                let diff = p.sequence.wrapping_sub(last) as i16;
                if diff > 1 {
                    self.lost += u64::from(diff.unsigned_abs() - 1);
                }
                if !(-512..=0).contains(&diff) {
                    self.last_seq.insert(p.ssrc, p.sequence);
                }
            }
            None => {
                self.last_seq.insert(p.ssrc, p.sequence);
            }
        }
        match route {
            Route::Audio(codec) => {
                self.audio_ssrc = Some(p.ssrc);
                let pts_us = self.pts(MediaKindIndex::Audio, p.timestamp, clock_rate);
                vec![Frame {
                    kind: "audio",
                    codec,
                    payload_type: p.payload_type,
                    clock_rate,
                    data: p.payload,
                    timestamp: p.timestamp,
                    keyframe: true,
                    ssrc: p.ssrc,
                    pts_us,
                    generated: false,
                    received: None,
                }]
            }
            Route::H264 => {
                if self.video_ssrc != Some(p.ssrc) {
                    // new or changed video source: start over
                    self.video_ssrc = Some(p.ssrc);
                    self.depacketizer = H264Depacketizer::new();
                    self.video_keyframe_seen = false;
                }
                let aus = self
                    .depacketizer
                    .push(&p.payload, p.sequence, p.timestamp, p.marker);
                aus.into_iter()
                    .map(|au| {
                        self.video_keyframe_seen |= au.keyframe;
                        let pts_us = self.pts(MediaKindIndex::Video, au.timestamp, clock_rate);
                        Frame {
                            kind: "video",
                            codec: "H264",
                            payload_type: p.payload_type,
                            clock_rate,
                            data: au.data,
                            timestamp: au.timestamp,
                            keyframe: au.keyframe,
                            ssrc: p.ssrc,
                            pts_us,
                            generated: false,
                            received: None,
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::h264_packetize;
    use crate::rtp::{build_pli, build_rtp};

    fn receiver() -> MediaReceiver {
        MediaReceiver::new([
            (0u8, ("PCMU", 8000)),
            (8, ("pcma", 8000)),
            (111, ("OPUS", 48000)),
            (101, ("telephone-event", 8000)),
            (9, ("G722", 8000)),
            (96, ("H264", 90000)),
            (100, ("VP8", 90000)),
        ])
    }

    #[test]
    fn audio_packets_become_one_keyframe_each_with_canonical_names() {
        let mut r = receiver();
        let f = r.push(&build_rtp(0, 1, 160, 0xa, false, &[0xff; 160]));
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].kind, f[0].codec, f[0].clock_rate),
            ("audio", "PCMU", 8000)
        );
        assert!(f[0].keyframe);
        assert_eq!(f[0].data.len(), 160);
        assert_eq!(
            r.push(&build_rtp(8, 2, 320, 0xa, false, b"x"))[0].codec,
            "PCMA"
        );
        assert_eq!(
            r.push(&build_rtp(111, 3, 960, 0xa, false, b"x"))[0].codec,
            "opus"
        );
        assert_eq!(
            r.push(&build_rtp(101, 4, 960, 0xa, true, b"x"))[0].codec,
            "telephone-event"
        );
        assert_eq!(
            r.push(&build_rtp(9, 5, 960, 0xa, false, b"x"))[0].codec,
            "G722"
        );
        assert_eq!(r.audio_ssrc, Some(0xa));
        assert_eq!((r.packets, r.lost), (5, 0));
    }

    #[test]
    fn h264_packets_are_depacketized_into_access_units() {
        let mut r = receiver();
        let mut au = vec![
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65,
        ];
        au.extend([9u8; 5000]);
        let payloads = h264_packetize(&au, 1200);
        let n = payloads.len();
        let mut frames = Vec::new();
        assert!(r.needs_keyframe() || r.video_ssrc.is_none());
        for (k, p) in payloads.iter().enumerate() {
            frames.extend(r.push(&build_rtp(96, k as u16, 9000, 0xb, k == n - 1, p)));
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data, au);
        assert!(frames[0].keyframe);
        assert_eq!(
            (frames[0].kind, frames[0].codec, frames[0].ssrc),
            ("video", "H264", 0xb)
        );
        assert_eq!(r.video_ssrc, Some(0xb));
        assert!(!r.needs_keyframe());
    }

    #[test]
    fn video_before_first_keyframe_and_after_loss_needs_keyframe() {
        let mut r = receiver();
        r.push(&build_rtp(96, 1, 1, 0xb, true, &[0x41, 1]));
        assert!(r.needs_keyframe());
        r.push(&build_rtp(96, 2, 2, 0xb, true, &[0x65, 1]));
        assert!(!r.needs_keyframe());
        r.push(&build_rtp(96, 5, 3, 0xb, true, &[0x41, 1]));
        assert_eq!(r.lost, 2);
        assert!(r.needs_keyframe());
        assert_eq!(r.depacketizer().dropped, 1);
    }

    #[test]
    fn bad_unknown_and_rtcp_packets_are_counted_not_raised() {
        let mut r = receiver();
        assert!(r.push(&[1, 2, 3]).is_empty());
        assert!(r.push(&[]).is_empty());
        assert!(r.push(&build_rtp(50, 1, 1, 1, false, b"x")).is_empty());
        assert!(r.push(&build_rtp(100, 1, 1, 1, false, b"x")).is_empty());
        assert!(r.push(&build_pli(1, 2)).is_empty());
        assert_eq!(
            (r.malformed, r.unknown_payload_type, r.rtcp, r.packets),
            (2, 2, 1, 5)
        );
        assert_eq!(r.bytes, 3 + 13 + 13 + 12);
    }

    #[test]
    fn loss_is_counted_per_ssrc_with_wrap() {
        let mut r = receiver();
        r.push(&build_rtp(0, 65534, 0, 1, false, b"a"));
        r.push(&build_rtp(0, 10, 0, 2, false, b"a"));
        r.push(&build_rtp(0, 1, 0, 1, false, b"a")); // 65535, 0 missing
        r.push(&build_rtp(0, 11, 0, 2, false, b"a"));
        r.push(&build_rtp(0, 11, 0, 2, false, b"a")); // duplicate
        assert_eq!(r.lost, 2);
    }

    #[test]
    fn random_datagrams_never_panic() {
        let mut r = receiver();
        let mut x: u64 = 0xdead_beef_cafe_f00d;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 48) as usize;
            let mut v: Vec<u8> = (0..len)
                .map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            if let Some(b) = v.first_mut() {
                *b = 0x80 | (*b & 0x3f);
            }
            if let Some(b) = v.get_mut(1) {
                *b = [0u8, 8, 96, 0xe0, 111][(x >> 50) as usize % 5];
            }
            let _ = r.push(&v);
        }
    }
}
