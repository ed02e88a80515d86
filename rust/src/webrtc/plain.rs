//! Plain-RTP viewers (RTSP playback): the stream's shared packets with the
//! viewer's own SSRC, sequence numbers and payload types, no encryption,
//! over UDP (to the client's RTP/RTCP ports) or interleaved in its RTSP TCP
//! connection (`$ channel length packet`, RFC 2326 §10.12).
//!
//! Sans-IO: [`PlainViewer::forward`] and [`PlainViewer::sender_reports`]
//! produce datagrams and interleaved bytes; the engine sends them. The TCP
//! output goes through a bounded [`Backlog`] (ICE-TCP's): a client that stops reading is
//! cut off, never buffered without bound.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::feed::{FeedPacket, StreamFeed};
use super::sr::{ntp_time, rtp_time_at, sender_report};
use super::tcp::Backlog;
use crate::rtp::{parse_rtcp_compound, RtcpPacket};
use crate::session::MediaKind;

/// How often each track's sender report goes out (the first one follows the
/// track's first packet, so players can line audio up with video at once).
const SR_INTERVAL: Duration = Duration::from_secs(2);

/// Where one track's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackDest {
    /// UDP: the client's RTP and RTCP addresses.
    Udp { rtp: SocketAddr, rtcp: SocketAddr },
    /// Interleaved in the RTSP connection, on these channels.
    Interleaved { rtp: u8, rtcp: u8 },
}

/// One track as the RTSP session set it up.
#[derive(Clone, Copy, Debug)]
pub struct PlainTrackConfig {
    pub pt: u8,
    pub clock: u32,
    pub ssrc: u32,
    /// Sequence number of the first packet (announced in RTP-Info).
    pub seq: u16,
    pub dest: TrackDest,
}

#[derive(Debug)]
struct Track {
    config: PlainTrackConfig,
    seq: u16,
    /// The last packet sent: its RTP timestamp and when it entered the hub.
    last: Option<(u32, Instant)>,
    packets: u32,
    octets: u32,
}

impl Track {
    /// This track's sender report: `rtp_time` at `ntp`.
    fn report(&self, ntp: (u32, u32), rtp_time: u32, cname: &str) -> Vec<u8> {
        sender_report(
            self.config.ssrc,
            ntp,
            rtp_time,
            self.packets,
            self.octets,
            cname,
        )
    }
}

/// A UDP datagram for the engine's RTSP socket pair.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainDatagram {
    /// From the RTCP socket (else the RTP one).
    pub rtcp: bool,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// The RTSP client's TCP connection (a dup of Python's socket), written
/// without blocking from a bounded backlog.
pub struct TcpOut {
    fd: OwnedFd,
    backlog: Backlog,
    max_backlog: usize,
}

impl TcpOut {
    pub fn new(fd: OwnedFd, max_backlog: usize) -> TcpOut {
        TcpOut {
            fd,
            backlog: Backlog::default(),
            max_backlog,
        }
    }

    /// Write what the socket takes. Err: the connection failed, or more
    /// than the bound waits (the client is not reading): cut it off.
    pub fn flush(&mut self) -> Result<(), String> {
        while !self.backlog.is_empty() {
            let pending = self.backlog.pending();
            // SAFETY: `pending` is a valid buffer for its length; the fd is ours.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    pending.as_ptr() as *const libc::c_void,
                    pending.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.kind() {
                    std::io::ErrorKind::WouldBlock => break,
                    std::io::ErrorKind::Interrupted => continue,
                    _ => return Err(format!("TCP write failed: {err}")),
                }
            }
            self.backlog.consume(n as usize);
        }
        if self.backlog.len() > self.max_backlog {
            return Err(format!(
                "slow client: over {} bytes unsent",
                self.max_backlog
            ));
        }
        Ok(())
    }
}

/// What the engine must do after [`PlainViewer::forward`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlainFeedback {
    /// The viewer just started waiting for a picture.
    pub keyframe: bool,
}

/// What a client's RTCP said (over UDP, or interleaved in its connection).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClientReports {
    /// Compound RTCP packets it sent (over UDP, its RTSP session's keep-alive).
    pub reports: u64,
    /// From its last report block on the main track (video, or audio
    /// without video): packets lost, the fraction lost since its previous
    /// report, interarrival jitter.
    pub lost: u64,
    pub loss: Option<f32>,
    pub jitter_ms: Option<f64>,
}

/// One RTSP client's plain-RTP output.
pub struct PlainViewer {
    pub id: u64,
    pub feed: Arc<StreamFeed>,
    audio: Option<Track>,
    video: Option<Track>,
    cname: String,
    waiting_keyframe: bool,
    /// Interleaved output, when the client asked for TCP.
    pub tcp: Option<TcpOut>,
    /// Interleaved bytes produced since the engine last flushed them (the
    /// sans-IO side: tests read them here).
    pub interleaved: Vec<u8>,
    pub next_report: Instant,
    pub packets: u64,
    pub bytes: u64,
    /// Video packets not sent while waiting for a keyframe.
    pub skipped: u64,
    pub reports: ClientReports,
}

impl PlainViewer {
    /// A viewer of `feed` (counted in its viewers until dropped).
    pub fn new(
        id: u64,
        feed: Arc<StreamFeed>,
        audio: Option<PlainTrackConfig>,
        video: Option<PlainTrackConfig>,
        tcp: Option<TcpOut>,
        now: Instant,
    ) -> PlainViewer {
        let track = |config: PlainTrackConfig| Track {
            config,
            seq: config.seq,
            last: None,
            packets: 0,
            octets: 0,
        };
        feed.add_viewer();
        PlainViewer {
            id,
            feed,
            waiting_keyframe: video.is_some(),
            audio: audio.map(track),
            video: video.map(track),
            cname: format!("sipstream-rtsp-{id}"),
            tcp,
            interleaved: Vec::new(),
            next_report: now,
            packets: 0,
            bytes: 0,
            skipped: 0,
            reports: ClientReports::default(),
        }
    }

    /// The client's RTCP addresses, for the tracks it receives over UDP.
    pub fn udp_rtcp_sources(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = [self.audio.as_ref(), self.video.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|t| match t.config.dest {
                TrackDest::Udp { rtcp, .. } => Some(rtcp),
                TrackDest::Interleaved { .. } => None,
            })
            .collect();
        addrs.dedup();
        addrs
    }

    /// An RTCP packet from the client (a datagram from one of its RTCP
    /// addresses, or an interleaved frame): a valid compound packet counts
    /// as a report, and a report block on the main track
    /// updates its loss and jitter. Anything else is dropped.
    pub fn receive_rtcp(&mut self, data: &[u8]) {
        let Ok(packets) = parse_rtcp_compound(data) else {
            return;
        };
        self.reports.reports += 1;
        let Some(main) = self.video.as_ref().or(self.audio.as_ref()) else {
            return;
        };
        let (ssrc, clock) = (main.config.ssrc, main.config.clock);
        for packet in &packets {
            let blocks = match packet {
                RtcpPacket::ReceiverReport { reports, .. }
                | RtcpPacket::SenderReport { reports, .. } => reports,
                _ => continue,
            };
            for block in blocks.iter().filter(|b| b.ssrc == ssrc) {
                self.reports.lost = u64::try_from(block.cumulative_lost).unwrap_or(0);
                self.reports.loss = Some(f32::from(block.fraction_lost) / 256.0);
                self.reports.jitter_ms =
                    Some(f64::from(block.jitter) * 1000.0 / f64::from(clock.max(1)));
            }
        }
    }

    pub fn waiting_keyframe(&self) -> bool {
        self.waiting_keyframe
    }

    /// The stream's packets of this tick, with this viewer's headers. Video
    /// starts (and restarts after an overflow) at a keyframe; audio flows
    /// from the start. A track's first packet follows a sender report of
    /// that track: players (ffmpeg) time the packets they get before a
    /// track's first report on their own, then jump to the reported clock,
    /// which can send timestamps backwards.
    pub fn forward(
        &mut self,
        packets: &[FeedPacket],
        overflowed: bool,
        (now, wall): (Instant, SystemTime),
        out: &mut Vec<PlainDatagram>,
    ) -> PlainFeedback {
        let mut feedback = PlainFeedback::default();
        if overflowed && self.video.is_some() && !self.waiting_keyframe {
            self.waiting_keyframe = true;
            feedback.keyframe = true;
        }
        for p in packets {
            if p.kind == MediaKind::Video && self.waiting_keyframe {
                if !p.keyframe_start || self.video.is_none() {
                    self.skipped += 1;
                    continue;
                }
                self.waiting_keyframe = false;
            }
            let track = match p.kind {
                MediaKind::Audio => self.audio.as_mut(),
                MediaKind::Video => self.video.as_mut(),
            };
            let Some(track) = track else { continue };
            let c = track.config;
            if track.last.is_none() {
                let first = (p.timestamp, p.arrival);
                let report = track.report(
                    ntp_time(wall),
                    rtp_time_at(first, now, c.clock),
                    &self.cname,
                );
                emit(c.dest, true, report, &mut self.interleaved, out);
            }
            let mut packet = Vec::with_capacity(16 + p.payload.len());
            packet.push(0x80);
            packet.push((u8::from(p.marker) << 7) | (c.pt & 0x7f));
            packet.extend(track.seq.to_be_bytes());
            packet.extend(p.timestamp.to_be_bytes());
            packet.extend(c.ssrc.to_be_bytes());
            packet.extend_from_slice(&p.payload);
            track.seq = track.seq.wrapping_add(1);
            track.last = Some((p.timestamp, p.arrival));
            track.packets = track.packets.wrapping_add(1);
            track.octets = track.octets.wrapping_add(p.payload.len() as u32);
            self.packets += 1;
            self.bytes += p.payload.len() as u64;
            emit(c.dest, false, packet, &mut self.interleaved, out);
        }
        feedback
    }

    /// A sender report (and SDES CNAME) for each track that has sent
    /// something, when due: players map each track's RTP time onto one
    /// clock with them (A/V sync). The RTP time is the last packet's,
    /// extrapolated by the time since it entered the hub, as the WebRTC
    /// viewers' reports do: the call's receive path already put both
    /// tracks on its common A/V clock.
    pub fn sender_reports(&mut self, now: Instant, wall: SystemTime, out: &mut Vec<PlainDatagram>) {
        if now < self.next_report {
            return;
        }
        let mut sent = false;
        let ntp = ntp_time(wall);
        for track in [self.audio.as_ref(), self.video.as_ref()]
            .into_iter()
            .flatten()
        {
            let Some(last) = track.last else {
                continue;
            };
            let report = track.report(ntp, rtp_time_at(last, now, track.config.clock), &self.cname);
            emit(track.config.dest, true, report, &mut self.interleaved, out);
            sent = true;
        }
        // until the first packet, check every tick
        if sent {
            self.next_report = now + SR_INTERVAL;
        }
    }

    /// Move the interleaved bytes produced so far to the TCP backlog and
    /// write what the socket takes; Err: cut the client off.
    pub fn flush_tcp(&mut self) -> Result<(), String> {
        let Some(tcp) = self.tcp.as_mut() else {
            self.interleaved.clear();
            return Ok(());
        };
        if !self.interleaved.is_empty() {
            tcp.backlog.push(&self.interleaved);
            self.interleaved.clear();
        }
        tcp.flush()
    }

    /// Bytes from the control plane (an RTSP response) for the TCP
    /// connection, between two interleaved frames.
    pub fn push_text(&mut self, text: &[u8]) {
        self.interleaved.extend_from_slice(text);
    }
}

impl Drop for PlainViewer {
    fn drop(&mut self) {
        self.feed.remove_viewer();
    }
}

fn emit(
    dest: TrackDest,
    rtcp: bool,
    packet: Vec<u8>,
    interleaved: &mut Vec<u8>,
    out: &mut Vec<PlainDatagram>,
) {
    match dest {
        TrackDest::Udp { rtp, rtcp: rtcp_to } => out.push(PlainDatagram {
            rtcp,
            to: if rtcp { rtcp_to } else { rtp },
            data: packet,
        }),
        TrackDest::Interleaved { rtp, rtcp: rtcp_ch } => {
            // a feed payload is at most a SIP datagram: it fits 16 bits
            let len = packet.len().min(usize::from(u16::MAX)) as u16;
            interleaved.push(b'$');
            interleaved.push(if rtcp { rtcp_ch } else { rtp });
            interleaved.extend(len.to_be_bytes());
            interleaved.extend_from_slice(&packet[..usize::from(len)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: MediaKind, keyframe_start: bool, ts: u32, now: Instant) -> FeedPacket {
        FeedPacket {
            kind,
            seq: 0,
            codec: if kind == MediaKind::Video {
                "H264"
            } else {
                "PCMU"
            },
            timestamp: ts,
            marker: true,
            keyframe_start,
            payload: Arc::from(&[1u8, 2, 3][..]),
            arrival: now,
            generated: false,
        }
    }

    fn track(pt: u8, ssrc: u32, seq: u16, dest: TrackDest) -> PlainTrackConfig {
        PlainTrackConfig {
            pt,
            clock: if pt == 0 { 8000 } else { 90_000 },
            ssrc,
            seq,
            dest,
        }
    }

    #[test]
    fn udp_viewer_gets_its_own_headers_and_video_from_a_keyframe() {
        let now = Instant::now();
        let feed = StreamFeed::new();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let v: SocketAddr = "127.0.0.1:5002".parse().unwrap();
        let w: SocketAddr = "127.0.0.1:5003".parse().unwrap();
        let mut viewer = PlainViewer::new(
            7,
            feed.clone(),
            Some(track(0, 0x1111, 65535, TrackDest::Udp { rtp: a, rtcp: b })),
            Some(track(96, 0x2222, 10, TrackDest::Udp { rtp: v, rtcp: w })),
            None,
            now,
        );
        assert_eq!(feed.viewers(), 1);
        let mut out = Vec::new();
        let packets = [
            packet(MediaKind::Video, false, 900, now), // before a keyframe: skipped
            packet(MediaKind::Audio, false, 160, now),
            packet(MediaKind::Video, true, 1800, now),
            packet(MediaKind::Audio, false, 320, now),
        ];
        viewer.forward(&packets, false, (now, SystemTime::now()), &mut out);
        assert_eq!(viewer.skipped, 1);
        // each track's first packet comes after a sender report of its own
        // RTP time, to the track's RTCP port
        assert_eq!(out.len(), 5);
        assert!(out[0].rtcp && out[0].to == b && out[0].data[1] == 200);
        assert_eq!(&out[0].data[4..8], &0x1111u32.to_be_bytes());
        assert_eq!(&out[0].data[16..20], &160u32.to_be_bytes());
        assert_eq!(out[1].to, a);
        assert_eq!(
            &out[1].data[..12],
            &[0x80, 0x80, 0xff, 0xff, 0, 0, 0, 160, 0, 0, 0x11, 0x11]
        );
        assert_eq!(&out[1].data[12..], &[1, 2, 3]);
        assert!(out[2].rtcp && out[2].to == w && out[2].data[1] == 200);
        assert_eq!(&out[2].data[16..20], &1800u32.to_be_bytes());
        assert_eq!(
            (out[3].to, &out[3].data[1..4]),
            (v, &[0x80 | 96, 0, 10][..])
        );
        // the audio sequence wrapped
        assert!(!out[4].rtcp);
        assert_eq!(&out[4].data[2..4], &[0, 0]);
        // sender reports to each track's RTCP port
        out.clear();
        viewer.sender_reports(now, SystemTime::now(), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|d| d.rtcp && d.data[1] == 200));
        assert_eq!((out[0].to, out[1].to), (b, w));
        // RTP time extrapolated from the last audio packet (8 kHz)
        assert_eq!(&out[0].data[16..20], &320u32.to_be_bytes());
        out.clear();
        viewer.sender_reports(
            now + Duration::from_millis(100),
            SystemTime::now(),
            &mut out,
        );
        assert!(out.is_empty(), "not due yet");
        drop(viewer);
        assert_eq!(feed.viewers(), 0);
    }

    #[test]
    fn interleaved_frames_carry_channel_and_length_and_overflow_waits_for_a_keyframe() {
        let now = Instant::now();
        let feed = StreamFeed::new();
        let mut viewer = PlainViewer::new(
            1,
            feed,
            Some(track(0, 1, 0, TrackDest::Interleaved { rtp: 0, rtcp: 1 })),
            Some(track(96, 2, 0, TrackDest::Interleaved { rtp: 2, rtcp: 3 })),
            None,
            now,
        );
        let mut out = Vec::new();
        let clock = (now, SystemTime::now());
        viewer.forward(
            &[packet(MediaKind::Audio, false, 0, now)],
            false,
            clock,
            &mut out,
        );
        assert!(out.is_empty());
        // the track's first sender report on its RTCP channel, then the packet
        let report = 4 + usize::from(u16::from_be_bytes([
            viewer.interleaved[2],
            viewer.interleaved[3],
        ]));
        assert_eq!(&viewer.interleaved[..2], &[b'$', 1]);
        assert_eq!(&viewer.interleaved[report..report + 4], &[b'$', 0, 0, 15]);
        assert_eq!(viewer.interleaved.len(), report + 4 + 15);
        viewer.interleaved.clear();
        viewer.forward(
            &[packet(MediaKind::Video, true, 0, now)],
            false,
            clock,
            &mut out,
        );
        assert_eq!(&viewer.interleaved[..2], &[b'$', 3]);
        assert_eq!(&viewer.interleaved[report..report + 2], &[b'$', 2]);
        viewer.interleaved.clear();
        let fb = viewer.forward(
            &[packet(MediaKind::Video, false, 0, now)],
            true,
            clock,
            &mut out,
        );
        assert!(fb.keyframe && viewer.waiting_keyframe() && viewer.interleaved.is_empty());
        viewer.sender_reports(now, SystemTime::now(), &mut out);
        assert_eq!(&viewer.interleaved[..2], &[b'$', 1]);
        // no TCP: flushing just drops the bytes
        assert!(viewer.flush_tcp().is_ok() && viewer.interleaved.is_empty());
    }

    #[test]
    fn a_backlog_compacts_and_frees() {
        let mut b = Backlog::default();
        b.push(&[1; 100]);
        b.consume(30);
        assert_eq!(b.len(), 70);
        b.consume(30);
        assert_eq!(b.pending(), &[1; 40][..]);
        b.consume(1000);
        assert!(b.is_empty());
    }

    #[test]
    fn a_client_that_stops_reading_is_cut_off() {
        use std::os::fd::FromRawFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = unsafe { OwnedFd::from_raw_fd(libc::dup(a.as_raw_fd())) };
        let mut tcp = TcpOut::new(fd, 64 * 1024);
        let mut result = Ok(());
        for _ in 0..1000 {
            tcp.backlog.push(&[0u8; 4096]);
            result = tcp.flush();
            if result.is_err() {
                break;
            }
        }
        assert!(result.unwrap_err().contains("slow client"));
    }

    #[test]
    fn client_reports_count_and_give_the_main_tracks_loss_and_jitter() {
        let now = Instant::now();
        let a: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let v: SocketAddr = "127.0.0.1:5003".parse().unwrap();
        let udp = |rtcp| TrackDest::Udp { rtp: rtcp, rtcp };
        let mut viewer = PlainViewer::new(
            1,
            StreamFeed::new(),
            Some(track(0, 0x1111, 0, udp(a))),
            Some(track(96, 0x2222, 0, udp(v))),
            None,
            now,
        );
        assert_eq!(viewer.udp_rtcp_sources(), vec![a, v]);
        let rr = |ssrc: u32| {
            let mut data = Vec::new();
            let block = crate::rtp::ReportBlock {
                ssrc,
                fraction_lost: 128,
                cumulative_lost: 3,
                extended_highest_seq: 0,
                jitter: 4500,
                last_sr: 0,
                delay_since_last_sr: 0,
            };
            crate::rtp::rtcp::write_receiver_report(&mut data, 9, &[block]);
            data
        };
        // a report on the audio only counts; on the video (the main track) it
        // gives loss and jitter (90 kHz); garbage is not a report
        viewer.receive_rtcp(&rr(0x1111));
        assert_eq!(
            viewer.reports,
            ClientReports {
                reports: 1,
                ..Default::default()
            }
        );
        viewer.receive_rtcp(&rr(0x2222));
        viewer.receive_rtcp(b"\x00garbage");
        assert_eq!(
            viewer.reports,
            ClientReports {
                reports: 2,
                lost: 3,
                loss: Some(0.5),
                jitter_ms: Some(50.0)
            }
        );
        // interleaved tracks have no UDP source
        let tcp = PlainViewer::new(
            2,
            StreamFeed::new(),
            Some(track(0, 1, 0, TrackDest::Interleaved { rtp: 0, rtcp: 1 })),
            None,
            None,
            now,
        );
        assert!(tcp.udp_rtcp_sources().is_empty());
    }

    #[test]
    fn a_sender_report_is_a_valid_compound_packet() {
        let r = sender_report(5, (1, 2), 3, 4, 5, "abc");
        // SDES: header, SSRC, CNAME item (2 + 3 bytes), a null, padded to 32 bits
        assert_eq!(r.len(), 28 + 16);
        assert_eq!(&r[28..30], &[0x81, 202]);
        assert_eq!(u16::from_be_bytes([r[30], r[31]]), 3); // words - 1
        assert_eq!(&r[36..44], &[1, 3, b'a', b'b', b'c', 0, 0, 0]);
    }
}
