//! One WebRTC viewer. A str0m `Rtc` (ICE-lite, RTP mode) answers the WHEP
//! offer and runs ICE and DTLS, and decrypts the viewer's RTCP; the viewer
//! sends its media itself (the fast path, see [`super::srtp`]): for each of
//! the stream's shared packets, a 12-byte RTP header with its own SSRC and
//! sequence number, one SRTP seal, and a datagram for the engine's
//! `sendmmsg`. It also writes its sender reports (A/V sync in the browser)
//! and reads the viewer's receiver reports, NACKs and keyframe requests.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{MediaKind as RtcKind, Pt};
use str0m::net::{Protocol, TcpType};
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::{Extension, RawPacket};
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Output, Rtc};

use super::feed::{FeedPacket, StreamFeed};
use super::sr::{ntp_time, rtp_time_at, sender_report};
use super::srtp::{self, KeySlot, SrtpSender, RTP_HEADER};
use crate::session::MediaKind;

/// The H.264 payload types we answer with (packetization mode 1 only, the
/// one our packetizer writes): str0m's defaults, RTX alongside.
const H264_PARAMS: &[(u8, u8, u32)] = &[
    (108, 109, 0x42e01f),
    (127, 121, 0x42001f),
    (123, 119, 0x4d001f),
    (114, 115, 0x64001f),
];

/// How often str0m reports the peer's stats (the selected candidate pair).
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Our sender reports kept to match the viewer's receiver reports (RTT).
const SR_KEPT: usize = 8;
/// How often each track's sender report goes out.
const SR_INTERVAL: Duration = Duration::from_secs(1);

/// The crypto provider (its DTLS factory captures SRTP keys) and the DTLS
/// certificate shared by every viewer (one certificate per process, as a
/// server shows one fingerprint).
pub struct Crypto {
    provider: Arc<CryptoProvider>,
    cert: DtlsCert,
}

pub fn crypto() -> &'static Crypto {
    static CRYPTO: OnceLock<Crypto> = OnceLock::new();
    CRYPTO.get_or_init(|| {
        let provider = srtp::provider(str0m::crypto::from_feature_flags());
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .expect("a DTLS certificate");
        Crypto {
            provider: Arc::new(provider),
            cert,
        }
    })
}

/// What the stream carries, to choose the codecs of the answer.
#[derive(Clone, Debug, Default)]
pub struct StreamCodecs {
    /// `PCMU`, `PCMA` or `opus`; None: no audio to send.
    pub audio: Option<String>,
    /// The H.264 stream's profile-level-id when known (preferred among the
    /// browser's H.264 payload types); `Some(None)`: H.264, profile unknown.
    pub video: Option<Option<u32>>,
}

/// A datagram for the engine to send.
#[derive(Debug)]
pub struct Datagram {
    pub proto: Protocol,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// One of our outgoing RTP streams to the viewer.
#[derive(Debug)]
struct Track {
    pt: Pt,
    ssrc: u32,
    /// The RTP clock (sender reports extrapolate the RTP time with it).
    clock: u32,
    cname: String,
    /// Extended sequence number of the next packet (starts below 2^15, so
    /// the SRTP rollover counter begins at 0 as the browser expects).
    seq: u64,
    /// (stream sequence, our sequence) of the first packet since the
    /// viewer (re)started on a keyframe: every later packet of the stream
    /// went out, so a NACKed sequence maps back to the stream's history.
    base: Option<(u64, u64)>,
    /// The last packet sent: its RTP timestamp and when it entered the hub.
    last: Option<(u32, Instant)>,
    packets: u32,
    octets: u32,
}

impl Track {
    /// The RTP header of the next packet (the sequence number advances).
    fn header(&mut self, marker: bool, timestamp: u32) -> ([u8; RTP_HEADER], u64) {
        let seq = self.seq;
        self.seq += 1;
        (rtp_header(self.pt, marker, seq, timestamp, self.ssrc), seq)
    }
}

fn rtp_header(pt: Pt, marker: bool, seq: u64, timestamp: u32, ssrc: u32) -> [u8; RTP_HEADER] {
    let mut h = [0u8; RTP_HEADER];
    h[0] = 0x80;
    h[1] = (u8::from(marker) << 7) | (*pt & 0x7f);
    h[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    h[4..8].copy_from_slice(&timestamp.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    h
}

/// Counters shown in the viewer's stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct ViewerCounters {
    pub packets: u64,
    pub bytes: u64,
    pub keyframe_requests: u64,
    /// Packets not sent because the viewer waited for a keyframe.
    pub skipped: u64,
    /// Packets the viewer NACKed, and those we sent again (the rest had
    /// left the stream's history).
    pub nacks: u64,
    pub resent: u64,
    /// From the viewer's receiver reports on the main track (video, or
    /// audio while no video went out): packets it lost, its fraction lost and jitter; and the round
    /// trip from its reports on our sender reports.
    pub lost: u64,
    pub loss: Option<f32>,
    pub jitter_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
    /// RTCP packets a plain-RTP viewer sent us (over UDP, its RTSP
    /// session's keep-alive); 0 for WebRTC viewers.
    pub reports: u64,
}

/// What the viewer's output asked of the engine.
#[derive(Debug, Default)]
pub struct Feedback {
    /// ICE and DTLS just came up.
    pub connected: bool,
    /// The viewer asked for a keyframe (PLI/FIR), or just connected.
    pub keyframe: bool,
    /// Stream sequence numbers of video packets to send again.
    pub resend: Vec<u64>,
    /// The viewer is done (why).
    pub close: Option<&'static str>,
    /// str0m failed on this viewer's input or timers.
    pub error: bool,
}

pub struct Viewer {
    pub id: u64,
    pub rtc: Rtc,
    pub feed: Arc<StreamFeed>,
    /// Our ICE username fragment: STUN from a new address names it.
    pub local_ufrag: String,
    audio: Option<Track>,
    video: Option<Track>,
    keys: KeySlot,
    srtp: Option<SrtpSender>,
    /// Where our media goes: the nominated pair's remote end (learnt from
    /// str0m's DTLS datagrams and its selected-pair stats).
    send_to: Option<(Protocol, SocketAddr)>,
    /// Our recent sender reports: (compact NTP time, when sent).
    reports: Vec<(u32, Instant)>,
    /// When the next sender reports are due (each viewer on its own phase,
    /// so that they do not all fall in one tick).
    pub next_report: Instant,
    pub connected: bool,
    pub created: Instant,
    /// The last datagram from the viewer (ICE consent, RFC 7675).
    pub last_input: Instant,
    /// When str0m next wants `Input::Timeout`.
    pub next_timeout: Instant,
    waiting_keyframe: bool,
    pub counters: ViewerCounters,
}

impl Viewer {
    /// Answer a WHEP offer. `candidate` is the address the viewer socket is
    /// reachable on (advertised `ip`, the engine's port); `tcp_candidate`,
    /// when set, is offered as a passive ICE-TCP candidate.
    pub fn answer(
        id: u64,
        offer_sdp: &str,
        candidate: SocketAddr,
        tcp_candidate: Option<SocketAddr>,
        codecs: &StreamCodecs,
        feed: Arc<StreamFeed>,
        now: Instant,
    ) -> Result<(Viewer, String), String> {
        let offer =
            SdpOffer::from_sdp_string(offer_sdp).map_err(|e| format!("bad SDP offer: {e}"))?;
        let crypto = crypto();
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_crypto_provider(crypto.provider.clone())
            .set_dtls_cert(crypto.cert.clone())
            .set_stats_interval(Some(STATS_INTERVAL))
            // the viewer's RTCP, decrypted, comes to us as raw packets
            .enable_raw_packets(true)
            // only `mid`: we write no header extension (BUNDLE binds our
            // SSRCs by the answer's a=ssrc lines), and the send-time and
            // transport-wide sequence ones feed a sender's bandwidth
            // estimate, which a forwarder without simulcast has no use for
            .clear_extension_map()
            .set_extension(4, Extension::RtpMid)
            .clear_codecs();
        match codecs.audio.as_deref() {
            Some("PCMU") => config = config.enable_pcmu(true, false),
            Some("PCMA") => config = config.enable_pcma(true, false),
            Some("opus") => config = config.enable_opus(true, false),
            _ => {}
        }
        if codecs.video.is_some() {
            for &(pt, rtx, profile) in H264_PARAMS {
                config
                    .codec_config()
                    .add_h264(pt.into(), Some(rtx.into()), true, profile);
            }
        }
        let keys = KeySlot::default();
        let mut rtc = keys.capture(|| config.build(now));
        let host = Candidate::host(candidate, "udp").map_err(|e| format!("candidate: {e}"))?;
        rtc.add_local_candidate(host);
        if let Some(addr) = tcp_candidate {
            let tcp = Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| format!("TCP candidate: {e}"))?;
            rtc.add_local_candidate(tcp);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("cannot answer the offer: {e}"))?;
        let sdp = one_media_stream(&answer.to_sdp_string());

        let mut audio = None;
        let mut video = None;
        let mut mids = Vec::new();
        for line in answer.media_lines.iter().filter(|l| !l.disabled) {
            let mid = line.mid();
            let Some(media) = rtc.media(mid) else {
                continue;
            };
            if !media.direction().is_sending() {
                continue;
            }
            let kind = media.kind();
            let remote: Vec<Pt> = media.remote_pts().to_vec();
            let params = rtc.codec_config().params();
            let chosen = match kind {
                RtcKind::Audio if audio.is_none() => params
                    .iter()
                    .find(|p| remote.contains(&p.pt()) && p.spec().codec.is_audio())
                    .map(|p| (p.pt(), p.spec().clock_rate.get())),
                RtcKind::Video if video.is_none() => {
                    let h264: Vec<_> = params
                        .iter()
                        .filter(|p| remote.contains(&p.pt()) && p.spec().codec == Codec::H264)
                        .collect();
                    let wanted = codecs.video.flatten();
                    let profile =
                        |p: &&&str0m::format::PayloadParams| p.spec().format.profile_level_id;
                    h264.iter()
                        .find(|p| {
                            wanted.is_some()
                                && profile(p).map(|v| v >> 16) == wanted.map(|w| w >> 16)
                        })
                        .or_else(|| h264.iter().find(|p| profile(p) == Some(0x42e01f)))
                        .or_else(|| h264.first())
                        .map(|p| (p.pt(), 90_000))
                }
                _ => None,
            };
            let Some((pt, clock)) = chosen else { continue };
            let Some(ssrc) = rtc
                .direct_api()
                .stream_tx_by_mid(mid, None)
                .map(|tx| *tx.ssrc())
            else {
                continue;
            };
            mids.push(mid);
            let track = Some(Track {
                pt,
                ssrc,
                clock,
                cname: ssrc_cname(&sdp, ssrc).unwrap_or_else(|| format!("sipstream-{id}")),
                seq: u64::from(rand_u16() & 0x7fff),
                base: None,
                last: None,
                packets: 0,
                octets: 0,
            });
            match kind {
                RtcKind::Audio => audio = track,
                RtcKind::Video => video = track,
            }
        }
        if audio.is_none() && video.is_none() {
            return Err("No common codecs".into());
        }
        // we send these streams ourselves: str0m's own would send sender
        // reports of nothing on the same SSRCs
        for mid in mids {
            let ssrcs: Vec<_> = rtc
                .direct_api()
                .stream_tx_by_mid(mid, None)
                .map(|tx| tx.ssrc())
                .into_iter()
                .collect();
            for ssrc in ssrcs {
                rtc.direct_api().remove_stream_tx(ssrc);
            }
        }
        let local_ufrag = ice_ufrag(&sdp).ok_or("answer without ice-ufrag")?;
        feed.add_viewer();
        let viewer = Viewer {
            id,
            rtc,
            feed,
            local_ufrag,
            waiting_keyframe: video.is_some(),
            audio,
            video,
            keys,
            srtp: None,
            send_to: None,
            reports: Vec::new(),
            next_report: now,
            connected: false,
            created: now,
            last_input: now,
            next_timeout: now,
            counters: ViewerCounters::default(),
        };
        Ok((viewer, sdp))
    }

    /// Drain str0m's output: its datagrams go to `out`, its events are
    /// handled; what the engine must do comes back.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Datagram>) -> Feedback {
        let mut feedback = Feedback::default();
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    // not STUN (a response goes wherever the check came
                    // from): str0m sends on the nominated pair
                    if t.contents.first().is_some_and(|b| *b > 3) {
                        self.send_to = Some((t.proto, t.destination));
                    }
                    out.push(Datagram {
                        proto: t.proto,
                        to: t.destination,
                        data: t.contents.into(),
                    });
                }
                Ok(Output::Event(e)) => match e {
                    RtcEvent::Connected => {
                        self.srtp = self.keys.sender(&crypto().provider);
                        if self.srtp.is_none() {
                            feedback.close = Some("no SRTP keys from DTLS");
                            break;
                        }
                        self.connected = true;
                        self.next_report = now + SR_INTERVAL;
                        feedback.connected = true;
                        feedback.keyframe |= self.video.is_some();
                    }
                    RtcEvent::RawPacket(raw) => {
                        if let RawPacket::RtcpRx(rtcp) = *raw {
                            self.on_rtcp(rtcp, now, &mut feedback);
                        }
                    }
                    RtcEvent::PeerStats(s) => {
                        if let Some(pair) = s.selected_candidate_pair {
                            self.send_to = Some((pair.protocol, pair.remote.addr));
                        }
                    }
                    RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        feedback.close = Some("ICE disconnected");
                    }
                    _ => {}
                },
                Err(_) => {
                    feedback.error = true;
                    feedback.close = Some("WebRTC error");
                    break;
                }
            }
        }
        if feedback.close.is_none() && !self.rtc.is_alive() {
            feedback.close = Some("closed");
        }
        feedback
    }

    /// The viewer's RTCP: keyframe requests, NACKs, receiver reports.
    fn on_rtcp(&mut self, rtcp: Rtcp, now: Instant, feedback: &mut Feedback) {
        let video_ssrc = self.video.as_ref().map(|t| t.ssrc);
        match rtcp {
            Rtcp::Pli(p) if Some(*p.ssrc) == video_ssrc => {
                self.counters.keyframe_requests += 1;
                feedback.keyframe = true;
            }
            Rtcp::Fir(f) if f.reports.iter().any(|e| Some(*e.ssrc) == video_ssrc) => {
                self.counters.keyframe_requests += 1;
                feedback.keyframe = true;
            }
            Rtcp::Nack(n) => {
                let Some(track) = self.video.as_ref().filter(|t| t.ssrc == *n.ssrc) else {
                    return;
                };
                for entry in n.reports.iter() {
                    let lost = (0..17u16)
                        .filter(|i| *i == 0 || entry.blp & (1 << (i - 1)) != 0)
                        .map(|i| entry.pid.wrapping_add(i));
                    for seq in lost {
                        self.counters.nacks += 1;
                        // how far back from our next sequence number
                        let back = u64::from((track.seq as u16).wrapping_sub(seq));
                        let Some((stream_base, our_base)) = track.base else {
                            continue;
                        };
                        if back == 0 || back > 0x8000 || track.seq < our_base + back {
                            continue;
                        }
                        feedback
                            .resend
                            .push(stream_base + (track.seq - back - our_base));
                    }
                }
            }
            Rtcp::ReceiverReport(rr) => {
                for block in rr.reports.iter() {
                    self.on_report_block(block, now);
                }
            }
            Rtcp::SenderReport(sr) => {
                for block in sr.reports.iter() {
                    self.on_report_block(block, now);
                }
            }
            _ => {}
        }
    }

    fn on_report_block(&mut self, block: &str0m::rtp::rtcp::ReceptionReport, now: Instant) {
        // the main track: video, or audio while no video went out
        let main = self
            .video
            .as_ref()
            .filter(|v| v.packets > 0 || self.audio.is_none())
            .or(self.audio.as_ref());
        let Some(main) = main.filter(|t| t.ssrc == *block.ssrc) else {
            // the other track's report: only its round trip
            self.note_rtt(block.last_sr_time, block.last_sr_delay, now);
            return;
        };
        let clock_khz = f64::from(main.clock) / 1000.0;
        let c = &mut self.counters;
        c.lost = u64::from(block.packets_lost & 0x00ff_ffff);
        c.loss = Some(f32::from(block.fraction_lost) / 256.0);
        c.jitter_ms = Some(f64::from(block.jitter) / clock_khz);
        self.note_rtt(block.last_sr_time, block.last_sr_delay, now);
    }

    /// The round trip from a report on one of our sender reports (RFC 3550
    /// §6.4.1: now - LSR - DLSR).
    fn note_rtt(&mut self, lsr: u32, dlsr: u32, now: Instant) {
        if lsr == 0 {
            return;
        }
        // A receiver that converts the SR's NTP time and back (str0m does)
        // may echo it off by a unit of 1/65536 s: match within two.
        if let Some((_, sent)) = self
            .reports
            .iter()
            .find(|(ntp, _)| ntp.wrapping_sub(lsr).wrapping_add(2) <= 4)
        {
            let held = Duration::from_secs_f64(f64::from(dlsr) / 65536.0);
            let rtt = now.saturating_duration_since(*sent).saturating_sub(held);
            self.counters.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
        }
    }

    /// Send the stream's packets of this tick. Before the first keyframe a
    /// viewer gets audio only (its decoder could not use the rest).
    pub fn forward(&mut self, packets: &[FeedPacket], overflowed: bool, out: &mut Vec<Datagram>) {
        if !self.connected {
            return;
        }
        if overflowed && self.video.is_some() {
            self.waiting_keyframe = true;
        }
        for p in packets {
            if p.kind == MediaKind::Video && self.waiting_keyframe {
                if !p.keyframe_start || self.video.is_none() {
                    self.counters.skipped += 1;
                    continue;
                }
                self.waiting_keyframe = false;
                if let Some(t) = self.video.as_mut() {
                    t.base = Some((p.seq, t.seq));
                }
            }
            let track = match p.kind {
                MediaKind::Audio => self.audio.as_mut(),
                MediaKind::Video => self.video.as_mut(),
            };
            let Some(track) = track else { continue };
            let (header, seq) = track.header(p.marker, p.timestamp);
            track.last = Some((p.timestamp, p.arrival));
            track.packets = track.packets.wrapping_add(1);
            track.octets = track.octets.wrapping_add(p.payload.len() as u32);
            if self.seal(&header, &p.payload, seq, out) {
                self.counters.packets += 1;
                self.counters.bytes += p.payload.len() as u64;
            }
        }
    }

    /// Send again a video packet the viewer NACKed (`packet.seq` is one
    /// that [`Viewer::poll`] asked for), with its first sequence number.
    pub fn resend(&mut self, packet: &FeedPacket, out: &mut Vec<Datagram>) {
        let Some(track) = self.video.as_ref() else {
            return;
        };
        let Some((stream_base, our_base)) = track.base else {
            return;
        };
        if packet.seq < stream_base {
            return;
        }
        let seq = our_base + (packet.seq - stream_base);
        let header = rtp_header(track.pt, packet.marker, seq, packet.timestamp, track.ssrc);
        if self.seal(&header, &packet.payload, seq, out) {
            self.counters.resent += 1;
        }
    }

    /// SRTP-protect one RTP packet for the viewer's address.
    fn seal(
        &mut self,
        header: &[u8; RTP_HEADER],
        payload: &[u8],
        seq: u64,
        out: &mut Vec<Datagram>,
    ) -> bool {
        let (Some(srtp), Some((proto, to))) = (self.srtp.as_mut(), self.send_to) else {
            return false;
        };
        let mut data = Vec::with_capacity(RTP_HEADER + payload.len() + srtp.rtp_overhead());
        if srtp
            .protect_rtp(header, payload, (seq >> 16) as u32, &mut data)
            .is_err()
        {
            return false;
        }
        out.push(Datagram { proto, to, data });
        true
    }

    /// A sender report (with an SDES CNAME) for each track that has sent
    /// something: the browser maps each track's RTP time to a common clock
    /// with them (lip sync), and its reports on them give the round trip.
    pub fn sender_reports(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        self.next_report = now + SR_INTERVAL;
        let (Some(srtp), Some((proto, to))) = (self.srtp.as_mut(), self.send_to) else {
            return;
        };
        let ntp = ntp_time(SystemTime::now());
        let compact = ((ntp.0 & 0xffff) << 16) | (ntp.1 >> 16);
        for track in [self.audio.as_ref(), self.video.as_ref()]
            .into_iter()
            .flatten()
        {
            let Some(last) = track.last else {
                continue;
            };
            let rtcp = sender_report(
                track.ssrc,
                ntp,
                rtp_time_at(last, now, track.clock),
                track.packets,
                track.octets,
                &track.cname,
            );
            if let Ok(data) = srtp.protect_rtcp(&rtcp) {
                out.push(Datagram { proto, to, data });
            }
        }
        if self.reports.len() == SR_KEPT {
            self.reports.remove(0);
        }
        self.reports.push((compact, now));
    }

    pub fn waiting_keyframe(&self) -> bool {
        self.waiting_keyframe
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.feed.remove_viewer();
    }
}

/// The CNAME of `ssrc` in an SDP's `a=ssrc:<ssrc> cname:<cname>` lines.
fn ssrc_cname(sdp: &str, ssrc: u32) -> Option<String> {
    let prefix = format!("a=ssrc:{ssrc} cname:");
    sdp.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|s| s.trim().to_string())
}

/// `a=ice-ufrag:` of an SDP.
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .map(|s| s.trim().to_string())
}

fn rand_u16() -> u16 {
    // The low bits of a hashed clock: sequence numbers need not be secret,
    // only different per viewer.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u16
}

/// The answer with every track in one media stream (the first `a=msid`'s):
/// str0m gives each answered track a stream of its own, and players that
/// show `ontrack`'s `event.streams[0]` (the WCS Web SDK, many WHEP pages)
/// would then keep only the last track, video or audio.
fn one_media_stream(sdp: &str) -> String {
    let Some(stream) = sdp.lines().find_map(|l| {
        l.strip_prefix("a=msid:")
            .and_then(|rest| rest.split(' ').next())
            .map(str::to_owned)
    }) else {
        return sdp.to_owned();
    };
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive("\r\n") {
        let body = line.trim_end_matches("\r\n");
        let fixed = if body.starts_with("a=msid-semantic:") {
            Some(format!("a=msid-semantic: WMS {stream}"))
        } else if let Some(rest) = body.strip_prefix("a=msid:") {
            rest.split_once(' ')
                .map(|(_, track)| format!("a=msid:{stream} {track}"))
        } else if let (Some(rest), true) = (body.strip_prefix("a=ssrc:"), body.contains(" msid:")) {
            rest.split_once(" msid:").and_then(|(ssrc, msid)| {
                msid.split_once(' ')
                    .map(|(_, track)| format!("a=ssrc:{ssrc} msid:{stream} {track}"))
            })
        } else {
            None
        };
        match fixed {
            Some(f) => {
                out.push_str(&f);
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_media_stream;

    #[test]
    fn every_answered_track_is_in_the_first_tracks_stream() {
        let sdp = "v=0\r\na=msid-semantic: WMS A B\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\
                   a=msid:A ta\r\na=ssrc:1 cname:x\r\na=ssrc:1 msid:A ta\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:B tv\r\na=ssrc:2 msid:B tv\r\n";
        let one = one_media_stream(sdp);
        assert_eq!(
            one,
            "v=0\r\na=msid-semantic: WMS A\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\
             a=msid:A ta\r\na=ssrc:1 cname:x\r\na=ssrc:1 msid:A ta\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:A tv\r\na=ssrc:2 msid:A tv\r\n"
        );
        // nothing to do without msid
        assert_eq!(one_media_stream("v=0\r\n"), "v=0\r\n");
    }
}
