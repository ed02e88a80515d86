//! The stream hub: one stream's frames, counted and kept in Rust, and
//! packetized once for all its WebRTC viewers.
//!
//! The call's receive reactor pushes every frame it emits into the stream's
//! [`StreamFeed`], on its own thread, with no Python:
//! - the hub counts frames, notes the codecs and the picture size (from
//!   each keyframe's SPS) and keeps the latest group of pictures for
//!   snapshots; it says when any of that changed (the first frame, a new
//!   codec or size) so the control plane can publish the stream's status;
//! - while viewers are attached, it cuts each frame into RTP payloads (H.264
//!   FU-A once per stream, audio as it came) shared as `Arc<[u8]>`. The
//!   viewer engine takes the queued packets once per tick and writes them to
//!   each viewer, which only adds its own sequence numbers, SSRC and SRTP.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::h264::{h264_packetize, h264_sps_resolution, split_annex_b};
use crate::media::Frame;
use crate::session::MediaKind;

/// RTP payload size for H.264 fragments: fits a 1200-byte datagram with the
/// RTP header, SRTP tag and a few header extensions.
pub const PAYLOAD_MTU: usize = 1100;
/// Packets kept between two engine ticks at most (about 4 s of a 1 Mbit/s
/// stream). Beyond, the oldest go and viewers resume at the next keyframe.
const MAX_QUEUED: usize = 4096;

/// The group of pictures kept for snapshots: frames from the last keyframe
/// on, at most this many and this large (beyond, a snapshot shows a
/// slightly older picture; memory stays bounded per stream).
const GOP_FRAMES: usize = 300;
const GOP_BYTES: usize = 1 << 20;

static NEXT_FEED: AtomicU64 = AtomicU64::new(1);

/// What the hub knows of its stream (index 0: audio, 1: video).
#[derive(Clone, Debug, Default)]
pub struct HubStats {
    pub frames: [u64; 2],
    /// Of which placeholders from the generator.
    pub generated: [u64; 2],
    pub keyframes: u64,
    pub codecs: [Option<&'static str>; 2],
    /// From the latest keyframe's SPS; 0 before one.
    pub width: u32,
    pub height: u32,
}

#[derive(Default)]
struct Hub {
    stats: HubStats,
    gop: Vec<Arc<[u8]>>,
    gop_bytes: usize,
}

impl Hub {
    /// Count `frame`; true when something shown of the stream changed.
    fn note(&mut self, frame: &Frame) -> bool {
        if frame.codec == "telephone-event" {
            return false;
        }
        let i = usize::from(frame.kind == "video");
        let s = &mut self.stats;
        let mut changed = s.frames == [0, 0] || s.codecs[i] != Some(frame.codec);
        s.frames[i] += 1;
        s.generated[i] += u64::from(frame.generated);
        s.codecs[i] = Some(frame.codec);
        if i == 0 {
            return changed;
        }
        if frame.keyframe {
            s.keyframes += 1;
            let size = split_annex_b(&frame.data)
                .into_iter()
                .find(|nal| nal.first().is_some_and(|h| h & 0x1f == 7))
                .and_then(h264_sps_resolution);
            if let Some((w, h)) = size {
                changed |= (w, h) != (s.width, s.height);
                (s.width, s.height) = (w, h);
            }
            self.gop.clear();
            self.gop_bytes = 0;
        } else if self.gop.is_empty()
            || self.gop.len() >= GOP_FRAMES
            || self.gop_bytes + frame.data.len() > GOP_BYTES
        {
            return changed;
        }
        self.gop_bytes += frame.data.len();
        self.gop.push(Arc::from(&frame.data[..]));
        changed
    }
}

/// One RTP payload of a stream, shared by every viewer.
#[derive(Clone, Debug)]
pub struct FeedPacket {
    pub kind: MediaKind,
    /// The stream's own sequence number of this kind's packets (NACKs of a
    /// viewer map back to it).
    pub seq: u64,
    pub codec: &'static str,
    /// The source's RTP timestamp (its clock rate).
    pub timestamp: u32,
    /// Last packet of a video access unit; set on every audio packet.
    pub marker: bool,
    /// First packet of a video keyframe: a viewer waiting for a picture
    /// starts here.
    pub keyframe_start: bool,
    pub payload: Arc<[u8]>,
    /// When the frame's last packet was read from the call's socket, or when
    /// the frame entered the feed (generated frames): the engine's latency
    /// is measured from here to the viewer's socket.
    pub arrival: Instant,
    /// A placeholder from the generator (black picture, silence).
    pub generated: bool,
}

#[derive(Default)]
struct Queue {
    packets: Vec<FeedPacket>,
    /// Packets were dropped since the engine last took them: viewers must
    /// wait for the next keyframe.
    overflowed: bool,
    /// The next sequence number of each kind (audio, video).
    next_seq: [u64; 2],
}

/// The packetized media of one stream, between its call and its viewers.
pub struct StreamFeed {
    id: u64,
    queue: Mutex<Queue>,
    hub: Mutex<Hub>,
    /// Viewers attached by the engine; nothing is queued while it is zero.
    viewers: AtomicUsize,
    closed: AtomicBool,
    /// Frames pushed, packets produced (for stats and tests).
    frames: AtomicU64,
    packets: AtomicU64,
}

impl Default for StreamFeed {
    fn default() -> Self {
        StreamFeed {
            id: NEXT_FEED.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::new(Queue::default()),
            hub: Mutex::new(Hub::default()),
            viewers: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            packets: AtomicU64::new(0),
        }
    }
}

/// What the engine takes from a feed in one tick.
pub struct Taken {
    pub packets: Vec<FeedPacket>,
    pub overflowed: bool,
}

impl StreamFeed {
    pub fn new() -> Arc<StreamFeed> {
        Arc::new(StreamFeed::default())
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a call's new frames: count them, and packetize and queue them
    /// for the viewers (if any). True when something shown of the stream
    /// changed (see [`StreamFeed::stats`]).
    pub fn push_frames(&self, frames: &[Frame]) -> bool {
        let mut changed = false;
        {
            let mut hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
            for frame in frames {
                changed |= hub.note(frame);
            }
        }
        if self.viewers.load(Ordering::Relaxed) == 0 || self.is_closed() {
            return changed;
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for frame in frames {
            packetize(frame, frame.received.unwrap_or(now), &mut out);
        }
        if out.is_empty() {
            return changed;
        }
        self.frames
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        self.packets.fetch_add(out.len() as u64, Ordering::Relaxed);
        let mut q = self.lock();
        for p in &mut out {
            let next = &mut q.next_seq[usize::from(p.kind == MediaKind::Video)];
            p.seq = *next;
            *next += 1;
        }
        q.packets.append(&mut out);
        if q.packets.len() > MAX_QUEUED {
            let excess = q.packets.len() - MAX_QUEUED;
            q.packets.drain(..excess);
            q.overflowed = true;
        }
        changed
    }

    /// Frame counters, codecs and picture size.
    pub fn stats(&self) -> HubStats {
        self.hub
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
            .clone()
    }

    /// The access units from the latest keyframe on (empty before one).
    pub fn gop(&self) -> Vec<Arc<[u8]>> {
        self.hub
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gop
            .clone()
    }

    /// The packets queued since the last call.
    pub fn take(&self) -> Taken {
        let mut q = self.lock();
        Taken {
            packets: std::mem::take(&mut q.packets),
            overflowed: std::mem::take(&mut q.overflowed),
        }
    }

    pub fn add_viewer(&self) {
        self.viewers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn remove_viewer(&self) {
        let _ = self
            .viewers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// The stream ended: the engine ends its viewers.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.lock().packets.clear();
        let mut hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
        hub.gop = Vec::new();
        hub.gop_bytes = 0;
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// (frames, packets) pushed while viewers were attached.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.frames.load(Ordering::Relaxed),
            self.packets.load(Ordering::Relaxed),
        )
    }
}

/// Cut one frame into RTP payloads. Telephone events are not media for a
/// viewer; an access unit with no NAL unit gives nothing.
pub fn packetize(frame: &Frame, arrival: Instant, out: &mut Vec<FeedPacket>) {
    let kind = if frame.kind == "video" {
        MediaKind::Video
    } else {
        MediaKind::Audio
    };
    if frame.codec == "telephone-event" {
        return;
    }
    let packet = |payload: Arc<[u8]>, marker: bool, keyframe_start: bool| FeedPacket {
        kind,
        seq: 0,
        codec: frame.codec,
        timestamp: frame.timestamp,
        marker,
        keyframe_start,
        payload,
        arrival,
        generated: frame.generated,
    };
    match kind {
        MediaKind::Audio => out.push(packet(Arc::from(&frame.data[..]), true, false)),
        MediaKind::Video => {
            if frame.codec != "H264" {
                return;
            }
            let payloads = h264_packetize(&frame.data, PAYLOAD_MTU);
            let last = payloads.len().saturating_sub(1);
            for (i, p) in payloads.into_iter().enumerate() {
                out.push(packet(Arc::from(p), i == last, i == 0 && frame.keyframe));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &'static str, codec: &'static str, data: Vec<u8>, keyframe: bool) -> Frame {
        Frame {
            kind,
            codec,
            payload_type: 96,
            clock_rate: 90_000,
            data,
            timestamp: 1234,
            keyframe,
            ssrc: 1,
            pts_us: 0,
            generated: false,
            received: None,
        }
    }

    #[test]
    fn nothing_is_queued_without_viewers() {
        let feed = StreamFeed::new();
        feed.push_frames(&[frame("audio", "PCMU", vec![0xff; 160], true)]);
        assert!(feed.take().packets.is_empty());
        feed.add_viewer();
        feed.push_frames(&[frame("audio", "PCMU", vec![0xff; 160], true)]);
        let taken = feed.take().packets;
        assert_eq!(taken.len(), 1);
        assert!(taken[0].marker && taken[0].payload[..] == [0xff; 160][..]);
    }

    #[test]
    fn a_large_keyframe_is_fragmented_once_with_marker_and_start() {
        let feed = StreamFeed::new();
        feed.add_viewer();
        let mut au = vec![0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x65];
        au.extend(std::iter::repeat_n(0xab, 3000));
        feed.push_frames(&[frame("video", "H264", au, true)]);
        let packets = feed.take().packets;
        assert_eq!(packets.len(), 1 + 3); // SPS whole, the IDR in three FU-As
        assert!(packets[0].keyframe_start && !packets[1].keyframe_start);
        assert!(packets.iter().rev().skip(1).all(|p| !p.marker) && packets[3].marker);
        assert!(packets.iter().all(|p| p.payload.len() <= PAYLOAD_MTU));
    }

    #[test]
    fn the_hub_counts_frames_notes_codecs_and_size_and_keeps_the_gop() {
        let feed = StreamFeed::new();
        // the first frame changes the stream (PENDING -> PUBLISHING)
        assert!(feed.push_frames(&[frame("audio", "PCMU", vec![0xff; 160], true)]));
        assert!(!feed.push_frames(&[frame("audio", "PCMU", vec![0xff; 160], true)]));
        // an SPS of 640x480 (x264): the size is news; the P frames are not
        let sps = [
            0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x3d, 0xa1, 0x00, 0x00, 0x03, 0x00, 0x01,
            0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
        ];
        let mut key = vec![0, 0, 0, 1];
        key.extend(sps);
        key.extend([0, 0, 0, 1, 0x65, 0x88]);
        assert!(feed.push_frames(&[frame("video", "H264", key.clone(), true)]));
        assert!(!feed.push_frames(&[frame("video", "H264", vec![0, 0, 0, 1, 0x41, 1], false)]));
        let stats = feed.stats();
        assert_eq!((stats.frames, stats.keyframes), ([2, 2], 1));
        assert_eq!((stats.width, stats.height), (640, 480));
        assert_eq!(stats.codecs, [Some("PCMU"), Some("H264")]);
        assert_eq!(feed.gop().len(), 2);
        assert_eq!(&feed.gop()[0][..], &key[..]);
        // nothing was packetized: no viewer
        assert!(feed.take().packets.is_empty());
        feed.close();
        assert!(feed.gop().is_empty());
    }

    #[test]
    fn telephone_events_are_not_forwarded_and_overflow_is_reported() {
        let feed = StreamFeed::new();
        feed.add_viewer();
        feed.push_frames(&[frame("audio", "telephone-event", vec![1, 2, 3, 4], true)]);
        assert!(feed.take().packets.is_empty());
        let frames: Vec<Frame> = (0..MAX_QUEUED + 10)
            .map(|_| frame("audio", "PCMU", vec![0xff; 160], true))
            .collect();
        feed.push_frames(&frames);
        let taken = feed.take();
        assert!(taken.overflowed && taken.packets.len() == MAX_QUEUED);
        assert!(!feed.take().overflowed);
    }
}
