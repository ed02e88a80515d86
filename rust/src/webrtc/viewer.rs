//! One WebRTC viewer: a str0m `Rtc` (ICE-lite, RTP mode) answering a WHEP
//! offer, plus what it needs to forward a stream's shared packets: the
//! negotiated payload types, its own sequence numbers, and whether it still
//! waits for a keyframe.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{MediaKind as RtcKind, Mid, Pt};
use str0m::rtp::RtpWrite;
use str0m::stats::MediaEgressStats;
use str0m::{Candidate, Rtc};

use super::feed::{FeedPacket, StreamFeed};
use crate::session::MediaKind;

/// The H.264 payload types we answer with (packetization mode 1 only, the
/// one our packetizer writes): str0m's defaults, RTX alongside.
const H264_PARAMS: &[(u8, u8, u32)] = &[
    (108, 109, 0x42e01f),
    (127, 121, 0x42001f),
    (123, 119, 0x4d001f),
    (114, 115, 0x64001f),
];

/// How often str0m reports a viewer's RTCP-derived stats.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// RTX history per viewer: about 1 s of a 1 Mbit/s stream.
const RTX_PACKETS: usize = 256;
const RTX_AGE: Duration = Duration::from_secs(1);

/// The crypto provider and DTLS certificate shared by every viewer (one
/// certificate per process, as a server shows one fingerprint).
pub struct Crypto {
    provider: Arc<CryptoProvider>,
    cert: DtlsCert,
}

pub fn crypto() -> &'static Crypto {
    static CRYPTO: OnceLock<Crypto> = OnceLock::new();
    CRYPTO.get_or_init(|| {
        let provider = str0m::crypto::from_feature_flags();
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

#[derive(Debug)]
struct Track {
    mid: Mid,
    pt: Pt,
    /// Extended sequence number of the next packet (starts below 2^16, so
    /// the SRTP rollover counter begins at 0 as the browser expects).
    seq: u64,
}

/// Counters shown in the viewer's stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct ViewerCounters {
    pub packets: u64,
    pub bytes: u64,
    pub keyframe_requests: u64,
    /// Packets not sent because the viewer waited for a keyframe.
    pub skipped: u64,
    /// From the viewer's RTCP (receiver reports, NACK), once a second, on
    /// the main track (video, else audio): NACKs received, packets it
    /// reported lost, its fraction lost and jitter; and the round trip.
    pub nacks: u64,
    pub lost: u64,
    pub loss: Option<f32>,
    pub jitter_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
}

pub struct Viewer {
    pub id: u64,
    pub rtc: Rtc,
    pub feed: Arc<StreamFeed>,
    /// Our ICE username fragment: STUN from a new address names it.
    pub local_ufrag: String,
    audio: Option<Track>,
    video: Option<Track>,
    pub connected: bool,
    pub created: Instant,
    /// The last datagram from the viewer (ICE consent, RFC 7675).
    pub last_input: Instant,
    /// When str0m next wants `Input::Timeout`.
    pub next_timeout: Instant,
    waiting_keyframe: bool,
    /// The engine tick that last polled this viewer.
    pub polled_tick: u64,
    pub counters: ViewerCounters,
}

impl Viewer {
    /// Answer a WHEP offer. `candidate` is the address the viewer socket is
    /// reachable on (advertised `ip`, the engine's port).
    pub fn answer(
        id: u64,
        offer_sdp: &str,
        candidate: SocketAddr,
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
        let mut rtc = config.build(now);
        let host = Candidate::host(candidate, "udp").map_err(|e| format!("candidate: {e}"))?;
        rtc.add_local_candidate(host);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("cannot answer the offer: {e}"))?;

        let mut audio = None;
        let mut video = None;
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
                    .map(|p| p.pt()),
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
                        .map(|p| p.pt())
                }
                _ => None,
            };
            let Some(pt) = chosen else { continue };
            let track = Some(Track {
                mid,
                pt,
                seq: u64::from(rand_u16() & 0x7fff),
            });
            match kind {
                RtcKind::Audio => audio = track,
                RtcKind::Video => video = track,
            }
        }
        if audio.is_none() && video.is_none() {
            return Err("No common codecs".into());
        }
        if let Some(t) = &video {
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(t.mid, None) {
                tx.set_rtx_cache(RTX_PACKETS, RTX_AGE, None);
            }
        }
        let local_ufrag = ice_ufrag(&answer.to_sdp_string()).ok_or("answer without ice-ufrag")?;
        let sdp = answer.to_sdp_string();
        feed.add_viewer();
        let viewer = Viewer {
            id,
            rtc,
            feed,
            local_ufrag,
            waiting_keyframe: video.is_some(),
            audio,
            video,
            connected: false,
            created: now,
            last_input: now,
            next_timeout: now,
            polled_tick: 0,
            counters: ViewerCounters::default(),
        };
        Ok((viewer, sdp))
    }

    /// Write the stream's packets of this tick. Before the first keyframe a
    /// viewer gets audio only (its decoder could not use the rest).
    pub fn write(&mut self, packets: &[FeedPacket], overflowed: bool) {
        if !self.connected {
            return;
        }
        if overflowed && self.video.is_some() {
            self.waiting_keyframe = true;
        }
        let mut api = self.rtc.direct_api();
        for p in packets {
            let track = match p.kind {
                MediaKind::Audio => self.audio.as_mut(),
                MediaKind::Video => {
                    if self.waiting_keyframe {
                        if !p.keyframe_start {
                            self.counters.skipped += 1;
                            continue;
                        }
                        self.waiting_keyframe = false;
                    }
                    self.video.as_mut()
                }
            };
            let Some(track) = track else { continue };
            let Some(tx) = api.stream_tx_by_mid(track.mid, None) else {
                continue;
            };
            let write = RtpWrite::new(
                track.pt,
                track.seq.into(),
                p.timestamp,
                p.arrival,
                p.payload.clone(),
            )
            .marker(p.marker)
            .nackable(p.kind == MediaKind::Video);
            tx.write_rtp(write);
            track.seq += 1;
            self.counters.packets += 1;
            self.counters.bytes += p.payload.len() as u64;
        }
    }

    /// A track's egress stats (what the viewer's RTCP said of it).
    pub fn note_egress(&mut self, s: &MediaEgressStats) {
        let (main, clock_khz) = match (&self.video, &self.audio) {
            (Some(v), _) => (v.mid == s.mid, 90.0),
            (None, Some(a)) => (a.mid == s.mid, 8.0),
            _ => return,
        };
        let c = &mut self.counters;
        // loss, jitter and NACKs of the main track (video, else audio); the
        // round trip is the connection's, whichever track measured it
        if let Some(remote) = &s.remote {
            if main {
                c.jitter_ms = Some(f64::from(remote.jitter) / clock_khz);
                c.lost = remote.packets_lost;
            }
        }
        if main {
            c.loss = s.loss;
            c.nacks = s.nacks;
        }
        if let Some(rtt) = s.rtt {
            c.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
        }
    }

    pub fn wants_video(&self) -> bool {
        self.video.is_some()
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
