//! Sans-IO media session for one call: RTP/RTCP datagrams in; whole frames,
//! RTCP to send (RR, NACK, PLI/FIR), events and the next wake-up time out.
//! Owns per-track demux (by payload type, then SSRC), the jitter buffer,
//! H.264 depacketizing, keyframe requests, RTCP reports, A/V sync, the
//! placeholder generator and statistics. Never panics on input.
//!
//! Strict RTP: a track takes RTP and RTCP only from its far end, so that a
//! stranger who finds the port cannot take a call's media over. The rule,
//! after Asterisk's `strictrtp` (learn a source, then hold it; learn again
//! when a re-INVITE moves the far end) and symmetric RTP for NATs:
//! - RTP with a negotiated payload type from the address the SDP names for
//!   the track is always accepted and latches the track on it.
//! - RTP from any other address is accepted only while the track has no
//!   latched source (before the first packet, or after a re-INVITE changed
//!   the SDP's address): the first such packet latches the track. This is
//!   the far end behind a NAT, which sends from its public address, and
//!   early media that arrive before the answer says where the far end is.
//! - A latched source is replaced only by the SDP's address (which also
//!   forgets an RTCP source learned from the old one's IP), or by learning
//!   again after `reconfigure` changed the address.
//! - RTCP is accepted from the SDP's RTCP or RTP address, from the latched
//!   RTP source (rtcp-mux), from the latched RTCP source, and, while no
//!   RTCP source is latched, from the IP of a latched RTP source that is
//!   not the SDP's (a NAT: its other port), or from anyone while the track
//!   knows no far-end address at all; an accepted one latches.
//!
//! Everything else is dropped before it touches the track (no SSRC change,
//! no send-address latch, no SR, BYE or feedback) and counted in
//! `SessionStats::foreign_source`. Unlike Asterisk there is no probation of
//! several packets for the first source: the call's first audio is not held
//! back, and the SDP's address wins the track back at its first packet.

use crate::generator::{silence_frame, GeneratorConfig, AUDIO_PERIOD, BLACK_IDR_320X240};
use crate::h264::{find_leading_nal, h264_sps_resolution, H264Depacketizer, NAL_SPS};
use crate::jitter::{JitterBuffer, JitterConfig, Released};
use crate::media::{Frame, AUDIO_CODECS};
use crate::rtp::rtcp::{
    ntp_middle, write_fir, write_nack, write_pli, write_receiver_report, write_sdes_cname,
    write_sender_report, SenderInfo,
};
use crate::rtp::{is_rtcp, parse_rtcp_compound, NtpTime, ReportBlock, RtcpPacket, RtpPacket};
use crate::sync::{ntp_to_us, TrackClock};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Audio or video: one track of each per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }

    fn index(self) -> usize {
        match self {
            MediaKind::Audio => 0,
            MediaKind::Video => 1,
        }
    }

    pub fn parse(s: &str) -> Option<MediaKind> {
        match s {
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            _ => None,
        }
    }
}

/// One of the call's local sockets: audio RTP, audio RTCP, video RTP, video
/// RTCP (index 0..=3, the order of the Python side's socket list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalSocket {
    pub kind: MediaKind,
    pub rtcp: bool,
}

impl LocalSocket {
    pub const AUDIO_RTP: LocalSocket = LocalSocket {
        kind: MediaKind::Audio,
        rtcp: false,
    };

    pub fn index(self) -> usize {
        self.kind.index() * 2 + usize::from(self.rtcp)
    }

    pub fn from_index(i: usize) -> Option<LocalSocket> {
        let kind = match i / 2 {
            0 => MediaKind::Audio,
            1 => MediaKind::Video,
            _ => return None,
        };
        Some(LocalSocket {
            kind,
            rtcp: i % 2 == 1,
        })
    }
}

/// A negotiated payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadType {
    pub pt: u8,
    /// Canonical spelling: `H264`, `PCMU`, `opus`, ...
    pub codec: &'static str,
    pub clock_rate: u32,
    pub kind: MediaKind,
}

impl PayloadType {
    /// `None` for codecs the receive path does not handle (VP8, ...).
    pub fn new(pt: u8, name: &str, clock_rate: u32) -> Option<PayloadType> {
        let (codec, kind) = if name.eq_ignore_ascii_case("H264") {
            ("H264", MediaKind::Video)
        } else {
            let c = AUDIO_CODECS.iter().find(|c| c.eq_ignore_ascii_case(name))?;
            (*c, MediaKind::Audio)
        };
        (pt < 128).then_some(PayloadType {
            pt,
            codec,
            clock_rate: clock_rate.max(1),
            kind,
        })
    }
}

/// RTCP feedback the far end negotiated (a=rtcp-fb).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Feedback {
    /// `nack`: generic NACK.
    pub nack: bool,
    /// `nack pli`.
    pub pli: bool,
    /// `ccm fir`.
    pub fir: bool,
}

impl Feedback {
    /// From a=rtcp-fb values such as `"nack"`, `"nack pli"`, `"ccm fir"`.
    pub fn from_rtcp_fb<I: IntoIterator<Item = S>, S: AsRef<str>>(values: I) -> Feedback {
        let mut f = Feedback::default();
        for v in values {
            let v = v.as_ref().trim().to_ascii_lowercase();
            let words: Vec<&str> = v.split_whitespace().collect();
            match words.as_slice() {
                ["nack"] => f.nack = true,
                ["nack", "pli"] => f.pli = true,
                ["ccm", "fir"] => f.fir = true,
                _ => {}
            }
        }
        f
    }
}

/// Where one track's far end is and what it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackConfig {
    /// From SDP: the far end whose RTP is always accepted. Our send address,
    /// replaced by the latched source of its RTP (symmetric RTP).
    pub remote_rtp: Option<SocketAddr>,
    /// From a=rtcp (else RTP port + 1, or the RTP address with rtcp-mux).
    pub remote_rtcp: Option<SocketAddr>,
    pub rtcp_mux: bool,
    pub feedback: Feedback,
}

/// Everything a session needs from the offer/answer and the settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub payload_types: Vec<PayloadType>,
    pub audio: TrackConfig,
    pub video: TrackConfig,
    pub jitter: JitterConfig,
    /// `None`: no placeholder media.
    pub generator: Option<GeneratorConfig>,
    /// Our SSRC in RTCP.
    pub local_ssrc: u32,
    pub cname: String,
    /// Mean RTCP report interval (randomized ×0.5..1.5, RFC 3550 §6.3.1).
    pub rtcp_interval: Duration,
    /// Minimum time between automatic keyframe requests.
    pub keyframe_interval: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            payload_types: Vec::new(),
            audio: TrackConfig::default(),
            video: TrackConfig::default(),
            jitter: JitterConfig::default(),
            generator: None,
            local_ssrc: 0x5195_7ea3,
            cname: "sipstream".to_string(),
            rtcp_interval: Duration::from_secs(5),
            keyframe_interval: Duration::from_millis(1000),
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local socket to send from.
    pub from: LocalSocket,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Something Python should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Video needs a keyframe and the far end negotiated neither PLI nor
    /// FIR: ask with SIP INFO (picture_fast_update).
    KeyframeNeeded { ssrc: u32 },
    /// A new SSRC replaced the previous one on a track.
    SsrcChanged { kind: MediaKind, old: u32, new: u32 },
    /// The far end sent RTCP BYE.
    Bye {
        kind: Option<MediaKind>,
        ssrc: u32,
        reason: Option<String>,
    },
    /// The stream hub saw something new of the stream: its first frame, a
    /// codec or a picture size (`StreamFeed::stats`).
    StreamChanged,
}

/// What `poll_output` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Frame(Frame),
    Transmit(Transmit),
    Event(Event),
    /// Nothing more now: call `handle_timeout` at this instant.
    Timeout(Instant),
}

/// Per-track counters (RTCP and stats API).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackStats {
    pub ssrc: Option<u32>,
    pub codec: Option<&'static str>,
    pub packets: u64,
    pub bytes: u64,
    pub frames: u64,
    pub keyframes: u64,
    /// Packets given up as lost by the jitter buffer.
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    /// Frames not emitted: incomplete, or waiting for a keyframe.
    pub dropped_frames: u64,
    /// Interarrival jitter (RFC 3550 A.8) in milliseconds.
    pub jitter_ms: f64,
    pub rtt_ms: Option<f64>,
    /// Over the last full second.
    pub bitrate_bps: f64,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    pub keyframe_requests: u64,
    pub nacks_sent: u64,
    pub generated_frames: u64,
    pub ssrc_changes: u64,
    pub sender_reports: u64,
}

/// Session-wide counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionStats {
    pub packets: u64,
    pub bytes: u64,
    pub rtcp_packets: u64,
    pub malformed: u64,
    pub unknown_payload_type: u64,
    /// Packets from an SSRC that was already replaced.
    pub stale_ssrc: u64,
    /// Packets from a new SSRC not (yet) confirmed by a sequential one.
    pub probation: u64,
    /// RTP and RTCP datagrams dropped because they came from an address
    /// other than the track's far end (strict RTP, see the module doc).
    pub foreign_source: u64,
    pub audio: Option<TrackStats>,
    pub video: Option<TrackStats>,
}

/// RFC 3550 A.3 / A.8 reception statistics of one source.
#[derive(Debug, Clone)]
struct Reception {
    clock_rate: f64,
    base_seq: Option<i64>,
    max_ext: i64,
    last_seq: u16,
    received: u64,
    expected_prior: i64,
    received_prior: u64,
    jitter: f64,
    last_transit: Option<i64>,
    last_sr: Option<(u32, Instant)>,
}

impl Reception {
    fn new(clock_rate: u32) -> Self {
        Reception {
            clock_rate: f64::from(clock_rate.max(1)),
            base_seq: None,
            max_ext: 0,
            last_seq: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter: 0.0,
            last_transit: None,
            last_sr: None,
        }
    }

    fn update(&mut self, seq: u16, ts: u32, arrival_us: f64) {
        self.received += 1;
        if self.base_seq.is_none() {
            self.base_seq = Some(i64::from(seq));
            self.max_ext = i64::from(seq);
            self.last_seq = seq;
        } else {
            // signed wrapped difference to the highest so far
            let ext = self.max_ext + i64::from(seq.wrapping_sub(self.last_seq) as i16);
            if ext > self.max_ext {
                self.max_ext = ext;
                self.last_seq = seq;
            }
        }
        let arrival_ts = (arrival_us * self.clock_rate / 1e6) as i64;
        let transit = arrival_ts - i64::from(ts);
        if let Some(last) = self.last_transit {
            // timestamps wrap at 2^32: compare modulo that
            let d = (transit - last) as i32;
            self.jitter += (f64::from(d.unsigned_abs()) - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    fn expected(&self) -> i64 {
        self.base_seq.map_or(0, |b| self.max_ext - b + 1)
    }

    fn report_block(&mut self, ssrc: u32, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let lost = expected - self.received as i64;
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received as i64 - self.received_prior as i64;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval - received_interval;
        let fraction_lost = if expected_interval <= 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                (lsr, (d.as_secs_f64() * 65536.0) as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7f_ffff) as i32,
            // extended highest: cycles in the high 16 bits
            extended_highest_seq: (self.max_ext + (1 << 16)) as u32,
            jitter: self.jitter as u32,
            last_sr,
            delay_since_last_sr,
        }
    }
}

#[derive(Debug)]
struct Source {
    ssrc: u32,
    jitter: JitterBuffer,
    depacketizer: H264Depacketizer,
    reception: Reception,
}

/// Rolling per-second rates.
#[derive(Debug, Default)]
struct RateWindow {
    start: Option<Instant>,
    bytes: u64,
    frames: u64,
}

#[derive(Debug)]
struct Track {
    kind: MediaKind,
    config: TrackConfig,
    rtp_to: Option<SocketAddr>,
    rtcp_to: Option<SocketAddr>,
    /// The address the track takes RTP from (strict RTP); `None`: learning.
    rtp_source: Option<SocketAddr>,
    /// The address the track takes RTCP from; `None`: learning.
    rtcp_source: Option<SocketAddr>,
    source: Option<Source>,
    /// A new SSRC on probation (RFC 3550 A.1): its first packet, kept until
    /// a sequential second one confirms the switch.
    candidate: Option<RtpPacket>,
    replaced: Vec<u32>,
    clock: TrackClock,
    clock_rate: u32,
    stats: TrackStats,
    waiting_keyframe: bool,
    keyframe_wanted: bool,
    last_keyframe_request: Option<Instant>,
    fir_seq: u8,
    next_report: Option<Instant>,
    last_media: Option<Instant>,
    generating: bool,
    next_generated: Option<Instant>,
    rate: RateWindow,
    sent: Sent,
}

/// What we sent on a track (priming packets, DTMF): an active sender's
/// reports are SRs, whose echo in the far end's report blocks gives the RTT.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    packets: u32,
    octets: u32,
    last_timestamp: u32,
    last_at: Option<Instant>,
    clock_rate: u32,
}

fn default_rtcp(config: &TrackConfig) -> Option<SocketAddr> {
    if config.rtcp_mux {
        return config.remote_rtp;
    }
    config.remote_rtcp.or_else(|| {
        config.remote_rtp.map(|mut a| {
            a.set_port(a.port().wrapping_add(1));
            a
        })
    })
}

impl Track {
    fn new(kind: MediaKind, config: TrackConfig) -> Self {
        Track {
            kind,
            config,
            rtp_to: config.remote_rtp,
            rtcp_to: default_rtcp(&config),
            rtp_source: None,
            rtcp_source: None,
            source: None,
            candidate: None,
            replaced: Vec::new(),
            clock: TrackClock::new(if kind == MediaKind::Video {
                90_000
            } else {
                8_000
            }),
            clock_rate: 0,
            stats: TrackStats::default(),
            waiting_keyframe: kind == MediaKind::Video,
            keyframe_wanted: false,
            last_keyframe_request: None,
            fir_seq: 0,
            next_report: None,
            last_media: None,
            generating: false,
            next_generated: None,
            rate: RateWindow::default(),
            sent: Sent::default(),
        }
    }

    /// An SR of this track's current source: the first one of the session
    /// fixes the sender-NTP → session-clock offset common to both tracks.
    fn apply_sender_report(&mut self, ntp_offset_us: &mut Option<f64>, sr: &EarlySr) {
        let offset = *ntp_offset_us.get_or_insert(sr.arrival_us - ntp_to_us(sr.ntp));
        self.stats.sender_reports += 1;
        if let Some(src) = self.source.as_mut() {
            src.reception.last_sr = Some((ntp_middle(sr.ntp), sr.at));
        }
        self.clock
            .on_sender_report(sr.ntp, sr.rtp_timestamp, Some(offset));
    }

    /// Whether RTP from `from` is the far end's (module doc); latches on it.
    fn accept_rtp_from(&mut self, from: SocketAddr) -> bool {
        if self.rtp_source == Some(from) {
            return true;
        }
        if self.rtp_source.is_some() && self.config.remote_rtp != Some(from) {
            return false;
        }
        if self.rtp_source.is_some() {
            // the SDP's address takes over: what was learned from the
            // previous source (its candidate SSRC, RTCP from its IP) goes
            self.candidate = None;
            if !self.rtcp_source.is_some_and(|r| self.names_rtcp(r)) {
                self.rtcp_source = None;
            }
        }
        self.rtp_source = Some(from);
        true
    }

    /// An address the SDP names for this track's RTCP (or its RTP, rtcp-mux).
    fn names_rtcp(&self, addr: SocketAddr) -> bool {
        default_rtcp(&self.config) == Some(addr) || self.config.remote_rtp == Some(addr)
    }

    /// Whether RTCP from `from` is the far end's (module doc); latches on it.
    fn accept_rtcp_from(&mut self, from: SocketAddr) -> bool {
        if self.names_rtcp(from) || self.rtcp_source == Some(from) {
            self.rtcp_source = Some(from);
            return true;
        }
        if self.rtp_source == Some(from) {
            return true;
        }
        // a far end that sends RTP from its SDP's address sends RTCP from
        // its SDP's RTCP address: another port of that IP is not its own
        let learn = self.rtcp_source.is_none()
            && match self.rtp_source {
                Some(rtp) => rtp.ip() == from.ip() && self.config.remote_rtp != Some(rtp),
                None => self.config.remote_rtp.is_none() && default_rtcp(&self.config).is_none(),
            };
        if learn {
            self.rtcp_source = Some(from);
        }
        learn
    }

    fn send_socket(&self) -> LocalSocket {
        LocalSocket {
            kind: self.kind,
            rtcp: !self.config.rtcp_mux,
        }
    }

    fn nack_active(&self, jitter: &JitterConfig) -> bool {
        self.config.feedback.nack && jitter.enabled
    }
}

/// Small deterministic PRNG for RTCP interval randomization.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The receive side of one call.
#[derive(Debug)]
pub struct MediaSession {
    config: SessionConfig,
    by_pt: [Option<PayloadType>; 128],
    tracks: [Option<Track>; 2],
    epoch: Instant,
    last_now: Instant,
    /// Sender NTP µs → session µs, fixed by the first SR (common to tracks).
    ntp_offset_us: Option<f64>,
    /// SRs of sources not seen yet (many senders report before their first
    /// RTP): applied when the source's RTP arrives, so even its first
    /// frames are on the common clock.
    early_srs: Vec<EarlySr>,
    /// Recycled RTP payload buffers (see `RtpPacket::parse_into`).
    spare_payloads: Vec<Vec<u8>>,
    /// Our NTP clock at `epoch` (wall clock when the session was made): the
    /// time in our SRs, and what the far end echoes back for the RTT.
    ntp_epoch: NtpTime,
    outputs: VecDeque<Output>,
    stats: SessionStats,
    rng: XorShift,
}

/// Payload buffers kept for reuse (a few frames' worth of packets).
const MAX_SPARE_PAYLOADS: usize = 64;

/// SRs kept for sources not seen yet (one per SSRC, the latest).
const MAX_EARLY_SRS: usize = 4;

/// A received SR: its sender info and when it arrived (kept as is for a
/// source not seen yet).
#[derive(Debug, Clone, Copy)]
struct EarlySr {
    ssrc: u32,
    ntp: NtpTime,
    rtp_timestamp: u32,
    arrival_us: f64,
    at: Instant,
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn wall_clock_ntp() -> NtpTime {
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    duration_to_ntp(since_unix) + (NTP_UNIX_OFFSET << 32)
}

/// A duration as NTP 32.32 fixed point.
fn duration_to_ntp(d: Duration) -> NtpTime {
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (d.as_secs() << 32).wrapping_add(frac)
}

/// The session state a track's processing needs, borrowed field by field
/// so that the track itself can be borrowed from `self.tracks` meanwhile.
macro_rules! session_ctx {
    ($s:ident) => {
        Ctx {
            out: &mut $s.outputs,
            spare: &mut $s.spare_payloads,
            config: &$s.config,
            by_pt: &$s.by_pt,
            epoch: $s.epoch,
            ntp_epoch: $s.ntp_epoch,
            ntp_offset_us: $s.ntp_offset_us,
        }
    };
}

/// The negotiated payload type of an RTP packet's 7-bit `pt`.
fn payload_type(by_pt: &[Option<PayloadType>; 128], pt: u8) -> Option<PayloadType> {
    by_pt.get(usize::from(pt)).copied().flatten()
}

fn us_since(epoch: Instant, t: Instant) -> f64 {
    // whole microseconds, so equal spacing stays exactly equal
    t.saturating_duration_since(epoch).as_micros() as f64
}

impl MediaSession {
    /// `now` is the session's time zero: every `pts_us` counts from it.
    pub fn new(now: Instant, config: SessionConfig) -> Self {
        let seed = u64::from(config.local_ssrc) | 0x9e37_79b9_0000_0000;
        let mut s = MediaSession {
            config: SessionConfig::default(),
            by_pt: [None; 128],
            tracks: [None, None],
            epoch: now,
            last_now: now,
            ntp_offset_us: None,
            early_srs: Vec::new(),
            spare_payloads: Vec::new(),
            ntp_epoch: wall_clock_ntp(),
            outputs: VecDeque::new(),
            stats: SessionStats::default(),
            rng: XorShift(seed),
        };
        s.reconfigure(now, config);
        s
    }

    /// New offer/answer (re-INVITE): codecs, addresses, feedback. Running
    /// sources keep their state; a removed kind drops its track.
    pub fn reconfigure(&mut self, now: Instant, config: SessionConfig) {
        self.by_pt = [None; 128];
        for pt in &config.payload_types {
            if let Some(slot) = self.by_pt.get_mut(usize::from(pt.pt)) {
                *slot = Some(*pt);
            }
        }
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let wanted = config.payload_types.iter().any(|p| p.kind == kind);
            let tc = match kind {
                MediaKind::Audio => config.audio,
                MediaKind::Video => config.video,
            };
            let slot = &mut self.tracks[kind.index()];
            match (wanted, slot.as_mut()) {
                (false, _) => *slot = None,
                (true, None) => *slot = Some(Track::new(kind, tc)),
                (true, Some(t)) => {
                    if t.config.remote_rtp != tc.remote_rtp && tc.remote_rtp.is_some() {
                        t.rtp_to = tc.remote_rtp;
                    }
                    if default_rtcp(&t.config) != default_rtcp(&tc) && default_rtcp(&tc).is_some() {
                        t.rtcp_to = default_rtcp(&tc);
                    }
                    // the far end moved (or the answer named it): learn its
                    // source again, unless it already sends from there
                    if t.config.remote_rtp != tc.remote_rtp && t.rtp_source != tc.remote_rtp {
                        t.rtp_source = None;
                    }
                    if default_rtcp(&t.config) != default_rtcp(&tc)
                        && t.rtcp_source != default_rtcp(&tc)
                    {
                        t.rtcp_source = None;
                    }
                    t.config = tc;
                }
            }
        }
        self.config = config;
        self.last_now = self.last_now.max(now);
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Time zero of `pts_us`.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Session clock in microseconds at `t`.
    pub fn clock_us(&self, t: Instant) -> i64 {
        us_since(self.epoch, t) as i64
    }

    /// One datagram arrived on `local` from `from`. Never fails: malformed
    /// and unexpected packets are counted.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        local: LocalSocket,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.last_now = self.last_now.max(now);
        self.stats.packets += 1;
        self.stats.bytes += data.len() as u64;
        if is_rtcp(data) {
            self.handle_rtcp(now, local, from, data);
            return;
        }
        let buffer = self.spare_payloads.pop().unwrap_or_default();
        let Ok(packet) = RtpPacket::parse_into(data, buffer) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(pt) = payload_type(&self.by_pt, packet.payload_type) else {
            self.stats.unknown_payload_type += 1;
            return;
        };
        let jitter_config = self.config.jitter;
        let arrival_us = us_since(self.epoch, now);
        let Some(track) = self.tracks[pt.kind.index()].as_mut() else {
            self.stats.unknown_payload_type += 1;
            return;
        };
        if !track.accept_rtp_from(from) {
            self.stats.foreign_source += 1;
            if self.spare_payloads.len() < MAX_SPARE_PAYLOADS {
                self.spare_payloads.push(packet.payload);
            }
            return;
        }
        // symmetric RTP: answer where the far end sends from
        track.rtp_to = Some(from);
        if track.config.rtcp_mux {
            track.rtcp_to = Some(from);
        }
        let ssrc = packet.ssrc;
        match track.source.as_ref().map(|s| s.ssrc) {
            Some(current) if current == ssrc => {}
            Some(_) if track.replaced.contains(&ssrc) => {
                self.stats.stale_ssrc += 1;
                return;
            }
            Some(_)
                if !track.candidate.as_ref().is_some_and(|c| {
                    c.ssrc == ssrc && c.sequence.wrapping_add(1) == packet.sequence
                }) =>
            {
                // one stray packet must not take the track over
                track.candidate = Some(packet);
                self.stats.probation += 1;
                return;
            }
            current => {
                if let Some(old) = current {
                    track.replaced.push(old);
                    if track.replaced.len() > 8 {
                        track.replaced.remove(0);
                    }
                    track.stats.ssrc_changes += 1;
                    self.outputs.push_back(Output::Event(Event::SsrcChanged {
                        kind: track.kind,
                        old,
                        new: ssrc,
                    }));
                }
                let mut jb = JitterBuffer::new(jitter_config);
                // a video frame spans packets sent back-to-back: with the
                // buffer off, still take them reordered among themselves
                jb.set_frame_hold(track.kind == MediaKind::Video);
                if track.nack_active(&jitter_config) {
                    jb.set_nack_wait(Some(nack_wait(track.stats.rtt_ms)));
                }
                track.source = Some(Source {
                    ssrc,
                    jitter: jb,
                    depacketizer: H264Depacketizer::new(),
                    reception: Reception::new(pt.clock_rate),
                });
                track.clock.restart(pt.clock_rate);
                track.clock_rate = pt.clock_rate;
                if let Some(i) = self.early_srs.iter().position(|e| e.ssrc == ssrc) {
                    let early = self.early_srs.swap_remove(i);
                    track.apply_sender_report(&mut self.ntp_offset_us, &early);
                }
                track.waiting_keyframe = track.kind == MediaKind::Video;
                track.stats.ssrc = Some(ssrc);
                if track.next_report.is_none() {
                    let r = self.rng.next_f64();
                    track.next_report = Some(now + self.config.rtcp_interval.mul_f64(0.5 + r));
                }
            }
        }
        if track.clock_rate != pt.clock_rate && pt.codec != "telephone-event" {
            track.clock.restart(pt.clock_rate);
            track.clock_rate = pt.clock_rate;
        }
        // real media: the generator stops at once (not after the jitter wait)
        track.last_media = Some(now);
        track.generating = false;
        track.next_generated = None;
        track.stats.packets += 1;
        track.stats.bytes += data.len() as u64;
        track.rate.bytes += data.len() as u64;
        let Some(source) = track.source.as_mut() else {
            return;
        };
        if let Some(first) = track.candidate.take().filter(|c| c.ssrc == ssrc) {
            source
                .reception
                .update(first.sequence, first.timestamp, arrival_us);
            source.jitter.insert(now, first);
        }
        source
            .reception
            .update(packet.sequence, packet.timestamp, arrival_us);
        source.jitter.insert(now, packet);
        let mut ctx = session_ctx!(self);
        ctx.service_track(track, now);
    }

    fn handle_rtcp(&mut self, now: Instant, local: LocalSocket, from: SocketAddr, data: &[u8]) {
        self.stats.rtcp_packets += 1;
        // a port of a kind the call does not have has no far end either
        let accepted = self.tracks[local.kind.index()]
            .as_mut()
            .is_some_and(|t| t.accept_rtcp_from(from));
        if !accepted {
            self.stats.foreign_source += 1;
            return;
        }
        let Ok(packets) = parse_rtcp_compound(data) else {
            self.stats.malformed += 1;
            return;
        };
        let mut latched = false;
        for p in packets {
            match p {
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    ref reports,
                } => {
                    self.round_trip(now, local.kind, reports);
                    let arrival_us = us_since(self.epoch, now);
                    let Some(track) = self
                        .tracks
                        .iter_mut()
                        .flatten()
                        .find(|t| t.source.as_ref().is_some_and(|s| s.ssrc == ssrc))
                    else {
                        self.early_srs.retain(|e| e.ssrc != ssrc);
                        if self.early_srs.len() >= MAX_EARLY_SRS {
                            self.early_srs.remove(0);
                        }
                        self.early_srs.push(EarlySr {
                            ssrc,
                            ntp: info.ntp,
                            rtp_timestamp: info.rtp_timestamp,
                            arrival_us,
                            at: now,
                        });
                        continue;
                    };
                    if !track.config.rtcp_mux {
                        track.rtcp_to = Some(from);
                    }
                    latched = true;
                    let sr = EarlySr {
                        ssrc,
                        ntp: info.ntp,
                        rtp_timestamp: info.rtp_timestamp,
                        arrival_us,
                        at: now,
                    };
                    track.apply_sender_report(&mut self.ntp_offset_us, &sr);
                }
                RtcpPacket::ReceiverReport { ref reports, .. } => {
                    self.round_trip(now, local.kind, reports);
                }
                RtcpPacket::Bye { ssrcs, reason } => {
                    for ssrc in ssrcs {
                        let kind = self
                            .tracks
                            .iter()
                            .flatten()
                            .find(|t| t.source.as_ref().is_some_and(|s| s.ssrc == ssrc))
                            .map(|t| t.kind);
                        self.outputs.push_back(Output::Event(Event::Bye {
                            kind,
                            ssrc,
                            reason: reason.clone(),
                        }));
                    }
                }
                _ => {}
            }
        }
        if !latched {
            if let Some(t) = self.tracks[local.kind.index()].as_mut() {
                if !t.config.rtcp_mux && local.rtcp {
                    t.rtcp_to = Some(from);
                }
            }
        }
    }

    /// RTT from a report block on our SSRC that echoes one of our SRs
    /// (RFC 3550 §6.4.1: arrival - LSR - DLSR, in 1/65536 s).
    fn round_trip(&mut self, now: Instant, kind: MediaKind, reports: &[ReportBlock]) {
        let local_ssrc = self.config.local_ssrc;
        let Some(block) = reports
            .iter()
            .find(|b| b.ssrc == local_ssrc && b.last_sr != 0)
        else {
            return;
        };
        let arrival = ntp_middle(self.ntp_at(now));
        let rtt = arrival
            .wrapping_sub(block.last_sr)
            .wrapping_sub(block.delay_since_last_sr) as i32;
        // Far ends count DLSR in whole milliseconds (libre, so baresip) and
        // we stamp arrivals per reactor wake-up, so a sub-millisecond round
        // trip (loopback, a LAN) can come out a little below zero: that is 0.
        // Further below zero, or over a minute, is a bad echo: ignored.
        let rtt = match rtt {
            RTT_ROUNDING..0 => 0,
            0..RTT_MAX => rtt,
            _ => return,
        };
        if let Some(track) = self.tracks[kind.index()].as_mut() {
            track.stats.rtt_ms = Some(f64::from(rtt) * 1000.0 / 65_536.0);
        }
    }

    /// Our NTP time at `now`.
    fn ntp_at(&self, now: Instant) -> NtpTime {
        self.ntp_epoch
            .wrapping_add(duration_to_ntp(now.saturating_duration_since(self.epoch)))
    }

    /// RTP we sent on `kind` from outside the session (priming packets,
    /// DTMF events), with our local SSRC: counted in our SRs.
    pub fn note_rtp_sent(
        &mut self,
        now: Instant,
        kind: MediaKind,
        rtp_timestamp: u32,
        payload_len: usize,
    ) {
        let Some(track) = self.tracks[kind.index()].as_mut() else {
            return;
        };
        let clock_rate = self
            .config
            .payload_types
            .iter()
            .find(|p| p.kind == kind && p.codec != "telephone-event")
            .map_or(8000, |p| p.clock_rate);
        let sent = &mut track.sent;
        sent.packets = sent.packets.wrapping_add(1);
        sent.octets = sent.octets.wrapping_add(payload_len as u32);
        sent.last_timestamp = rtp_timestamp;
        sent.last_at = Some(now);
        sent.clock_rate = clock_rate;
    }

    /// Timers: jitter-buffer holes, NACK retries, RTCP reports, keyframe
    /// request retries, the generator, and the stats windows.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        for track in self.tracks.iter_mut().flatten() {
            let mut ctx = session_ctx!(self);
            ctx.service_track(track, now);
            if track.next_report.is_some_and(|t| t <= now) {
                ctx.send_report(track, now, None);
                let r = self.rng.next_f64();
                track.next_report = Some(now + self.config.rtcp_interval.mul_f64(0.5 + r));
            }
            if track.keyframe_wanted
                && track
                    .last_keyframe_request
                    .is_none_or(|t| t + self.config.keyframe_interval <= now)
            {
                ctx.request_keyframe(track, now);
            }
            ctx.generate(track, now);
            update_rates(track, now);
        }
    }

    /// Ask for a keyframe now (new viewer, recorder start): PLI or FIR
    /// when negotiated, else an `Event::KeyframeNeeded`.
    pub fn request_keyframe(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        if let Some(track) = self.tracks[MediaKind::Video.index()].as_mut() {
            let mut ctx = session_ctx!(self);
            ctx.request_keyframe(track, now);
        }
    }

    /// Next output; `Output::Timeout` when there is nothing more to do now.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        Output::Timeout(self.next_timeout())
    }

    /// Next output that is not a timeout (convenience for batch drivers).
    pub fn poll_event(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn next_timeout(&self) -> Instant {
        let mut next = self.last_now + Duration::from_secs(3600);
        for track in self.tracks.iter().flatten() {
            let mut candidates = vec![track.next_report];
            if let Some(src) = &track.source {
                candidates.push(src.jitter.next_timeout());
                if track.nack_active(&self.config.jitter) {
                    candidates.push(src.jitter.next_nack());
                }
            }
            if track.keyframe_wanted {
                candidates.push(Some(
                    track
                        .last_keyframe_request
                        .map_or(self.last_now, |t| t + self.config.keyframe_interval),
                ));
            }
            if let Some(g) = &self.config.generator {
                candidates.push(Some(generator_due(track, g, self.epoch)));
            }
            candidates.push(track.rate.start.map(|s| s + Duration::from_secs(1)));
            for c in candidates.into_iter().flatten() {
                next = next.min(c);
            }
        }
        next
    }

    pub fn stats(&self) -> SessionStats {
        let mut s = self.stats.clone();
        for t in self.tracks.iter().flatten() {
            let mut ts = t.stats.clone();
            if let Some(src) = &t.source {
                ts.late += src.jitter.late;
                ts.duplicates += src.jitter.duplicates;
                ts.lost += src.jitter.lost;
                ts.jitter_ms = src.reception.jitter / src.reception.clock_rate * 1000.0;
            }
            match t.kind {
                MediaKind::Audio => s.audio = Some(ts),
                MediaKind::Video => s.video = Some(ts),
            }
        }
        s
    }

    /// Current send target of a track's RTP (configured or latched).
    pub fn remote_rtp(&self, kind: MediaKind) -> Option<SocketAddr> {
        self.tracks[kind.index()].as_ref().and_then(|t| t.rtp_to)
    }

    /// Current send target of a track's RTCP.
    pub fn remote_rtcp(&self, kind: MediaKind) -> Option<SocketAddr> {
        self.tracks[kind.index()].as_ref().and_then(|t| t.rtcp_to)
    }
}

/// How far below zero (in 1/65536 s) an RTT may come out from the far
/// end's and our clock rounding and still count as 0: 10 ms.
const RTT_ROUNDING: i32 = -655;
/// An RTT of a minute or more is a bad echo.
const RTT_MAX: i32 = 65_536 * 60;

fn nack_wait(rtt_ms: Option<f64>) -> Duration {
    match rtt_ms {
        Some(rtt) => Duration::from_secs_f64((rtt * 2.0 + 40.0) / 1000.0),
        None => Duration::from_millis(150),
    }
}

fn nack_interval(rtt_ms: Option<f64>) -> Duration {
    match rtt_ms {
        Some(rtt) => Duration::from_secs_f64((rtt * 1.2).max(20.0) / 1000.0),
        None => Duration::from_millis(50),
    }
}

fn generator_due(track: &Track, g: &GeneratorConfig, epoch: Instant) -> Instant {
    if let (true, Some(n)) = (track.generating, track.next_generated) {
        return n;
    }
    track.last_media.unwrap_or(epoch) + g.start_delay
}

fn update_rates(track: &mut Track, now: Instant) {
    let start = *track.rate.start.get_or_insert(now);
    let elapsed = now.saturating_duration_since(start).as_secs_f64();
    if elapsed >= 1.0 {
        track.stats.bitrate_bps = track.rate.bytes as f64 * 8.0 / elapsed;
        track.stats.fps = track.rate.frames as f64 / elapsed;
        track.rate = RateWindow {
            start: Some(now),
            bytes: 0,
            frames: 0,
        };
    }
}

/// Borrowed session state the per-track work needs.
struct Ctx<'a> {
    out: &'a mut VecDeque<Output>,
    /// Payload buffers of depacketized video packets, for the next packets.
    spare: &'a mut Vec<Vec<u8>>,
    config: &'a SessionConfig,
    by_pt: &'a [Option<PayloadType>; 128],
    epoch: Instant,
    ntp_epoch: NtpTime,
    ntp_offset_us: Option<f64>,
}

impl Ctx<'_> {
    /// Send due NACKs, release what the jitter buffer has due.
    fn service_track(&mut self, track: &mut Track, now: Instant) {
        self.send_nacks(track, now);
        self.emit_released(track, now);
    }

    fn emit_released(&mut self, track: &mut Track, now: Instant) {
        loop {
            let Some(src) = track.source.as_mut() else {
                return;
            };
            let Some(released) = src.jitter.pop(now) else {
                return;
            };
            let Released::Packet(p, arrival) = released else {
                continue;
            };
            let arrival_us = us_since(self.epoch, arrival);
            let Some(pt) = payload_type(self.by_pt, p.payload_type) else {
                continue;
            };
            let ssrc = src.ssrc;
            match track.kind {
                MediaKind::Audio => {
                    let pts_us = track.clock.pts(p.timestamp, arrival_us, self.ntp_offset_us);
                    self.real_media(track, now);
                    self.out.push_back(Output::Frame(Frame {
                        kind: "audio",
                        codec: pt.codec,
                        payload_type: pt.pt,
                        clock_rate: pt.clock_rate,
                        data: p.payload,
                        timestamp: p.timestamp,
                        keyframe: true,
                        ssrc,
                        pts_us,
                        generated: false,
                        received: Some(arrival),
                    }));
                    track.stats.frames += 1;
                    track.rate.frames += 1;
                    if pt.codec != "telephone-event" {
                        track.stats.codec = Some(pt.codec);
                    }
                }
                MediaKind::Video => {
                    let dropped_before = src.depacketizer.dropped;
                    let aus = src
                        .depacketizer
                        .push(&p.payload, p.sequence, p.timestamp, p.marker);
                    if self.spare.len() < MAX_SPARE_PAYLOADS {
                        self.spare.push(p.payload);
                    }
                    let dropped = src.depacketizer.dropped - dropped_before;
                    if dropped > 0 {
                        track.stats.dropped_frames += dropped;
                        track.waiting_keyframe = true;
                        self.want_keyframe(track, now);
                    }
                    for au in aus {
                        if track.waiting_keyframe && !au.keyframe {
                            // it references what was lost: undecodable
                            track.stats.dropped_frames += 1;
                            self.want_keyframe(track, now);
                            continue;
                        }
                        if au.keyframe {
                            track.waiting_keyframe = false;
                            track.keyframe_wanted = false;
                            track.stats.keyframes += 1;
                            if let Some(sps) = find_leading_nal(&au.data, NAL_SPS) {
                                if let Some((w, h)) = h264_sps_resolution(sps) {
                                    track.stats.width = w;
                                    track.stats.height = h;
                                }
                            }
                        }
                        let pts_us = track
                            .clock
                            .pts(au.timestamp, arrival_us, self.ntp_offset_us);
                        self.real_media(track, now);
                        self.out.push_back(Output::Frame(Frame {
                            kind: "video",
                            codec: pt.codec,
                            payload_type: pt.pt,
                            clock_rate: pt.clock_rate,
                            data: au.data,
                            timestamp: au.timestamp,
                            keyframe: au.keyframe,
                            ssrc,
                            pts_us,
                            generated: false,
                            received: Some(arrival),
                        }));
                        track.stats.frames += 1;
                        track.rate.frames += 1;
                        track.stats.codec = Some(pt.codec);
                    }
                }
            }
        }
    }

    fn real_media(&mut self, track: &mut Track, now: Instant) {
        track.last_media = Some(now);
        track.generating = false;
        track.next_generated = None;
    }

    fn send_nacks(&mut self, track: &mut Track, now: Instant) {
        if !track.nack_active(&self.config.jitter) {
            return;
        }
        let interval = nack_interval(track.stats.rtt_ms);
        let Some(src) = track.source.as_mut() else {
            return;
        };
        let lost = src.jitter.nacks_due(now, interval);
        if lost.is_empty() {
            return;
        }
        let media_ssrc = src.ssrc;
        track.stats.nacks_sent += 1;
        let mut extra = Vec::new();
        write_nack(&mut extra, self.config.local_ssrc, media_ssrc, &lost);
        self.send_report(track, now, Some(extra));
    }

    /// RR (+ SDES CNAME) compound, with feedback appended.
    fn send_report(&mut self, track: &mut Track, now: Instant, feedback: Option<Vec<u8>>) {
        let Some(to) = track.rtcp_to else {
            return;
        };
        let mut data = Vec::with_capacity(96);
        let blocks: Vec<ReportBlock> = track
            .source
            .as_mut()
            .map(|s| vec![s.reception.report_block(s.ssrc, now)])
            .unwrap_or_default();
        let sent = track.sent;
        match sent.last_at {
            // an active sender (RFC 3550 §6.4): sent within two report intervals
            Some(at) if now.saturating_duration_since(at) < self.config.rtcp_interval * 2 => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let info = SenderInfo {
                    ntp: self
                        .ntp_epoch
                        .wrapping_add(duration_to_ntp(now.saturating_duration_since(self.epoch))),
                    // our RTP clock now, extrapolated from the last packet sent
                    rtp_timestamp: sent
                        .last_timestamp
                        .wrapping_add((elapsed * f64::from(sent.clock_rate)) as u32),
                    packet_count: sent.packets,
                    octet_count: sent.octets,
                };
                write_sender_report(&mut data, self.config.local_ssrc, &info, &blocks);
            }
            _ => write_receiver_report(&mut data, self.config.local_ssrc, &blocks),
        }
        write_sdes_cname(&mut data, self.config.local_ssrc, &self.config.cname);
        if let Some(fb) = feedback {
            data.extend_from_slice(&fb);
        }
        self.out.push_back(Output::Transmit(Transmit {
            from: track.send_socket(),
            to,
            data,
        }));
    }

    fn want_keyframe(&mut self, track: &mut Track, now: Instant) {
        track.keyframe_wanted = true;
        if track
            .last_keyframe_request
            .is_none_or(|t| t + self.config.keyframe_interval <= now)
        {
            self.request_keyframe(track, now);
        }
    }

    fn request_keyframe(&mut self, track: &mut Track, now: Instant) {
        track.last_keyframe_request = Some(now);
        track.stats.keyframe_requests += 1;
        let media_ssrc = track.source.as_ref().map_or(0, |s| s.ssrc);
        let fb = track.config.feedback;
        if (fb.pli || fb.fir) && track.rtcp_to.is_some() {
            let mut extra = Vec::new();
            if fb.pli {
                write_pli(&mut extra, self.config.local_ssrc, media_ssrc);
            } else {
                track.fir_seq = track.fir_seq.wrapping_add(1);
                write_fir(
                    &mut extra,
                    self.config.local_ssrc,
                    media_ssrc,
                    track.fir_seq,
                );
            }
            self.send_report(track, now, Some(extra));
        } else {
            self.out
                .push_back(Output::Event(Event::KeyframeNeeded { ssrc: media_ssrc }));
        }
    }

    fn generate(&mut self, track: &mut Track, now: Instant) {
        let Some(g) = self.config.generator else {
            return;
        };
        let due = generator_due(track, &g, self.epoch);
        if now < due {
            return;
        }
        let pt = self
            .config
            .payload_types
            .iter()
            .find(|p| {
                p.kind == track.kind
                    && (p.kind == MediaKind::Video
                        || silence_frame(p.codec, p.clock_rate).is_some())
            })
            .copied();
        let Some(pt) = pt else {
            return;
        };
        let period = match track.kind {
            MediaKind::Audio => AUDIO_PERIOD,
            MediaKind::Video => g.video_interval.max(Duration::from_millis(10)),
        };
        let mut at = due;
        // a late timer does not produce a burst longer than one second
        if now.saturating_duration_since(at) > Duration::from_secs(1) {
            at = now;
        }
        track.generating = true;
        while at <= now {
            let at_us = i64::try_from(at.saturating_duration_since(self.epoch).as_micros())
                .unwrap_or(i64::MAX);
            let pts = at_us.max(track.clock.last_pts().map_or(0, |p| p + 1));
            track.clock.note_generated(pts);
            let data = match track.kind {
                MediaKind::Audio => silence_frame(pt.codec, pt.clock_rate).unwrap_or_default(),
                MediaKind::Video => BLACK_IDR_320X240.to_vec(),
            };
            let rtp_ts = (pts as f64 * f64::from(pt.clock_rate) / 1e6) as u64;
            self.out.push_back(Output::Frame(Frame {
                kind: track.kind.as_str(),
                codec: pt.codec,
                payload_type: pt.pt,
                clock_rate: pt.clock_rate,
                data,
                // the RTP clock wraps at 2^32
                timestamp: rtp_ts as u32,
                keyframe: true,
                ssrc: 0,
                pts_us: pts,
                generated: true,
                received: None,
            }));
            track.stats.generated_frames += 1;
            at += period;
        }
        track.next_generated = Some(at);
    }
}

/// Strict RTP: a track takes RTP and RTCP only from its far end (the SDP's
/// address, or the first source while none is latched); a stranger's
/// packets, even with a new SSRC and a negotiated payload type, are dropped
/// and counted as `foreign_source`.
#[cfg(test)]
mod source_latching_tests {
    use super::*;
    use crate::rtp::build_rtp;
    use crate::rtp::rtcp::{write_bye, write_receiver_report};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The address the SDP names for the far end's audio.
    fn far() -> SocketAddr {
        "10.0.0.2:40000".parse().unwrap()
    }

    /// The answer's session: PCMU and telephone-event from far(), H.264.
    fn config() -> SessionConfig {
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
                remote_rtp: Some("10.0.0.2:40002".parse().unwrap()),
                ..TrackConfig::default()
            },
            ..SessionConfig::default()
        }
    }

    struct AudioSender {
        ssrc: u32,
        seq: u16,
        ts: u32,
    }

    impl AudioSender {
        /// The far end's audio.
        fn real() -> Self {
            AudioSender {
                ssrc: 0x5555,
                seq: 1,
                ts: 0,
            }
        }

        /// A stranger's audio, with its own SSRC.
        fn evil() -> Self {
            AudioSender {
                ssrc: 0x6666,
                seq: 7,
                ts: 555,
            }
        }

        fn next(&mut self) -> Vec<u8> {
            let p = build_rtp(0, self.seq, self.ts, self.ssrc, false, &[0x55; 160]);
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(160);
            p
        }
    }

    fn drain(s: &mut MediaSession) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn frames(out: &[Output]) -> Vec<Frame> {
        out.iter()
            .filter_map(|o| match o {
                Output::Frame(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }

    fn events(out: &[Output]) -> Vec<Event> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn run_until(s: &mut MediaSession, now: &mut Instant, until: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        while *now < until {
            *now += ms(20);
            s.handle_timeout(*now);
            out.extend(drain(s));
        }
        out
    }

    fn sender_report(ssrc: u32) -> Vec<u8> {
        let mut d = Vec::new();
        let info = SenderInfo {
            ntp: 1 << 32,
            rtp_timestamp: 0,
            packet_count: 0,
            octet_count: 0,
        };
        write_sender_report(&mut d, ssrc, &info, &[]);
        d
    }

    fn stranger() -> SocketAddr {
        "203.0.113.7:4000".parse().unwrap()
    }

    fn nat() -> SocketAddr {
        "192.0.2.9:7000".parse().unwrap()
    }

    fn audio_rtcp() -> LocalSocket {
        LocalSocket {
            kind: MediaKind::Audio,
            rtcp: true,
        }
    }

    fn bye(ssrc: u32) -> Vec<u8> {
        let mut d = Vec::new();
        write_receiver_report(&mut d, ssrc, &[]);
        write_bye(&mut d, ssrc, Some("injected"));
        d
    }

    /// Each 20 ms: one packet of the far end, then two sequential ones of
    /// the intruder (enough for a new SSRC to pass probation). Every output.
    fn interleave(
        s: &mut MediaSession,
        now: &mut Instant,
        far_end: (&mut AudioSender, SocketAddr),
        intruder: (&mut AudioSender, SocketAddr),
        rounds: usize,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        for _ in 0..rounds {
            s.handle_receive(*now, LocalSocket::AUDIO_RTP, far_end.1, &far_end.0.next());
            for _ in 0..2 {
                s.handle_receive(*now, LocalSocket::AUDIO_RTP, intruder.1, &intruder.0.next());
            }
            let next = *now + ms(20);
            out.extend(run_until(s, now, next));
        }
        out
    }

    #[test]
    fn a_frame_carries_when_its_packet_was_read() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, config());
        let mut far_end = AudioSender::real();
        let mut now = t0;
        let mut out = Vec::new();
        let mut sent = Vec::new();
        for _ in 0..10 {
            s.handle_receive(now, LocalSocket::AUDIO_RTP, far(), &far_end.next());
            sent.push(now);
            let next = now + ms(20);
            out.extend(run_until(&mut s, &mut now, next));
        }
        let received: Vec<_> = frames(&out).iter().map(|f| f.received).collect();
        assert_eq!(received, sent.into_iter().map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn a_strangers_new_ssrc_is_dropped_while_the_sdp_source_keeps_delivering() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, config());
        let mut real = AudioSender {
            ssrc: 0x1111,
            seq: 100,
            ts: 0,
        };
        let mut evil = AudioSender::evil();
        let mut now = t0;
        let mut out = Vec::new();
        for _ in 0..5 {
            s.handle_receive(now, LocalSocket::AUDIO_RTP, far(), &real.next());
            let next = now + ms(20);
            out.extend(run_until(&mut s, &mut now, next));
        }
        out.extend(interleave(
            &mut s,
            &mut now,
            (&mut real, far()),
            (&mut evil, stranger()),
            10,
        ));
        out.extend(run_until(&mut s, &mut now, t0 + ms(1000)));
        assert_eq!(events(&out), vec![], "no SSRC change");
        let f = frames(&out);
        assert_eq!(f.len(), 15);
        assert!(f.iter().all(|f| f.ssrc == 0x1111));
        let st = s.stats();
        assert_eq!(st.foreign_source, 20);
        let audio = st.audio.unwrap();
        assert_eq!(
            (audio.ssrc, audio.ssrc_changes, audio.packets),
            (Some(0x1111), 0, 15)
        );
        // our own RTP and RTCP still go to the far end
        assert_eq!(s.remote_rtp(MediaKind::Audio), Some(far()));
    }

    #[test]
    fn a_far_end_behind_nat_is_latched_on_its_first_packet_and_a_second_stranger_is_dropped() {
        let t0 = Instant::now();
        // the SDP names far() (a private address); the far end's packets come
        // from its NAT's public address
        let mut s = MediaSession::new(t0, config());
        let mut real = AudioSender {
            ssrc: 0x2222,
            seq: 1,
            ts: 0,
        };
        let mut evil = AudioSender::evil();
        let mut now = t0;
        let mut out = Vec::new();
        for _ in 0..3 {
            s.handle_receive(now, LocalSocket::AUDIO_RTP, nat(), &real.next());
            let next = now + ms(20);
            out.extend(run_until(&mut s, &mut now, next));
        }
        assert_eq!(s.remote_rtp(MediaKind::Audio), Some(nat()));
        out.extend(interleave(
            &mut s,
            &mut now,
            (&mut real, nat()),
            (&mut evil, stranger()),
            10,
        ));
        out.extend(run_until(&mut s, &mut now, t0 + ms(1000)));
        assert_eq!(events(&out), vec![]);
        let f = frames(&out);
        assert_eq!(f.len(), 13);
        assert!(f.iter().all(|f| f.ssrc == 0x2222));
        assert_eq!(s.stats().foreign_source, 20);
        assert_eq!(s.stats().audio.unwrap().ssrc_changes, 0);
        assert_eq!(s.remote_rtp(MediaKind::Audio), Some(nat()));
    }

    #[test]
    fn rtcp_from_a_stranger_is_ignored() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, config());
        let mut real = AudioSender {
            ssrc: 0x3333,
            seq: 1,
            ts: 0,
        };
        s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &real.next());
        drain(&mut s);
        let sdp_rtcp: SocketAddr = "10.0.0.2:40001".parse().unwrap();
        let evil_rtcp: SocketAddr = "203.0.113.7:4001".parse().unwrap();
        // an SR for the far end's SSRC (would fix the A/V clock offset and
        // redirect our reports) and a BYE, on the RTCP port and the RTP port
        s.handle_receive(t0 + ms(10), audio_rtcp(), evil_rtcp, &sender_report(0x3333));
        s.handle_receive(t0 + ms(20), audio_rtcp(), evil_rtcp, &bye(0x3333));
        s.handle_receive(
            t0 + ms(30),
            LocalSocket::AUDIO_RTP,
            stranger(),
            &bye(0x3333),
        );
        // another program on the far end's host
        let same_host: SocketAddr = "10.0.0.2:5555".parse().unwrap();
        s.handle_receive(t0 + ms(35), audio_rtcp(), same_host, &bye(0x3333));
        assert_eq!(events(&drain(&mut s)), vec![]);
        assert_eq!(s.remote_rtcp(MediaKind::Audio), Some(sdp_rtcp));
        let st = s.stats();
        assert_eq!(st.foreign_source, 4);
        assert_eq!(st.audio.unwrap().sender_reports, 0);
        // the far end's own BYE still counts
        s.handle_receive(t0 + ms(40), audio_rtcp(), sdp_rtcp, &bye(0x3333));
        assert_eq!(
            events(&drain(&mut s)),
            vec![Event::Bye {
                kind: Some(MediaKind::Audio),
                ssrc: 0x3333,
                reason: Some("injected".into())
            }]
        );
    }

    #[test]
    fn rtcp_from_the_nat_address_of_the_latched_rtp_source_is_accepted() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, config());
        let mut real = AudioSender {
            ssrc: 0x4444,
            seq: 1,
            ts: 0,
        };
        s.handle_receive(t0, LocalSocket::AUDIO_RTP, nat(), &real.next());
        let nat_rtcp: SocketAddr = "192.0.2.9:7001".parse().unwrap();
        s.handle_receive(t0 + ms(10), audio_rtcp(), nat_rtcp, &bye(0x4444));
        assert_eq!(events(&drain(&mut s)).len(), 1);
        assert_eq!(s.remote_rtcp(MediaKind::Audio), Some(nat_rtcp));
        // once latched, another port of that address is not the far end's
        s.handle_receive(
            t0 + ms(20),
            audio_rtcp(),
            "192.0.2.9:7777".parse().unwrap(),
            &bye(0x4444),
        );
        assert_eq!(events(&drain(&mut s)), vec![]);
        assert_eq!(s.stats().foreign_source, 1);
    }

    /// The offer's session: payload types, no far-end address yet.
    fn offer() -> SessionConfig {
        let mut offer = config();
        offer.audio.remote_rtp = None;
        offer.video.remote_rtp = None;
        offer
    }

    #[test]
    fn rtcp_learned_from_an_early_stranger_is_dropped_once_the_sdp_address_sends() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, config());
        let mut evil = AudioSender::evil();
        // first on the port, so latched, with RTCP from its IP
        s.handle_receive(t0, LocalSocket::AUDIO_RTP, stranger(), &evil.next());
        let evil_rtcp: SocketAddr = "203.0.113.7:4001".parse().unwrap();
        s.handle_receive(t0, audio_rtcp(), evil_rtcp, &bye(0x6666));
        assert_eq!(events(&drain(&mut s)).len(), 1);
        let mut real = AudioSender::real();
        s.handle_receive(t0 + ms(20), LocalSocket::AUDIO_RTP, far(), &real.next());
        s.handle_receive(t0 + ms(30), audio_rtcp(), evil_rtcp, &bye(0x5555));
        assert_eq!(events(&drain(&mut s)), vec![]);
        assert_eq!(s.stats().foreign_source, 1);
    }

    #[test]
    fn before_the_answer_the_first_source_is_latched_and_the_answer_keeps_it() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, offer());
        let mut real = AudioSender::real();
        let mut evil = AudioSender::evil();
        let mut now = t0;
        // early media, before the answer says where the far end is
        let mut out = interleave(
            &mut s,
            &mut now,
            (&mut real, far()),
            (&mut evil, stranger()),
            5,
        );
        assert_eq!(s.remote_rtp(MediaKind::Audio), Some(far()));
        s.reconfigure(now, config());
        out.extend(interleave(
            &mut s,
            &mut now,
            (&mut real, far()),
            (&mut evil, stranger()),
            5,
        ));
        out.extend(run_until(&mut s, &mut now, t0 + ms(1000)));
        assert_eq!(events(&out), vec![]);
        let f = frames(&out);
        assert_eq!(f.len(), 10);
        assert!(f.iter().all(|f| f.ssrc == 0x5555));
        assert_eq!(s.stats().foreign_source, 20);
    }

    #[test]
    fn the_answers_address_takes_the_track_back_from_an_early_stranger() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, offer());
        let mut real = AudioSender::real();
        let mut evil = AudioSender::evil();
        let mut now = t0;
        // the stranger is first on the port: nothing tells it apart yet
        s.handle_receive(now, LocalSocket::AUDIO_RTP, stranger(), &evil.next());
        s.handle_receive(now, LocalSocket::AUDIO_RTP, stranger(), &evil.next());
        assert_eq!(s.remote_rtp(MediaKind::Audio), Some(stranger()));
        s.reconfigure(now, config());
        let mut out = interleave(
            &mut s,
            &mut now,
            (&mut real, far()),
            (&mut evil, stranger()),
            10,
        );
        out.extend(run_until(&mut s, &mut now, t0 + ms(1000)));
        assert_eq!(s.remote_rtp(MediaKind::Audio), Some(far()));
        let f = frames(&out);
        assert_eq!(f.iter().filter(|f| f.ssrc == 0x5555).count(), 10);
        assert_eq!(f.last().map(|f| f.ssrc), Some(0x5555));
        assert_eq!(s.stats().foreign_source, 20);
    }

    #[test]
    fn a_reinvite_with_a_new_address_learns_the_far_ends_new_source() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, config());
        let mut before = AudioSender {
            ssrc: 0x7777,
            seq: 1,
            ts: 0,
        };
        let mut now = t0;
        let mut out = Vec::new();
        for _ in 0..3 {
            s.handle_receive(now, LocalSocket::AUDIO_RTP, nat(), &before.next());
            let next = now + ms(20);
            out.extend(run_until(&mut s, &mut now, next));
        }
        // the far end moved: a new private address in the SDP, a new NAT mapping
        let mut moved = config();
        moved.audio.remote_rtp = Some("10.9.9.9:50000".parse().unwrap());
        s.reconfigure(now, moved);
        let new_nat: SocketAddr = "198.51.100.20:6000".parse().unwrap();
        let mut after = AudioSender {
            ssrc: 0x8888,
            seq: 900,
            ts: 90_000,
        };
        out.extend(interleave(
            &mut s,
            &mut now,
            (&mut after, new_nat),
            (&mut before, nat()),
            10,
        ));
        out.extend(run_until(&mut s, &mut now, t0 + ms(1000)));
        assert_eq!(s.remote_rtp(MediaKind::Audio), Some(new_nat));
        assert_eq!(frames(&out).iter().filter(|f| f.ssrc == 0x8888).count(), 10);
        assert_eq!(s.stats().foreign_source, 20);
    }
}
