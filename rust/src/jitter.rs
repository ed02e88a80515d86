//! Jitter buffer for one RTP source (`rtp_in_buffer`): puts packets back in
//! sequence order across the 16-bit wrap, waits a bounded time for holes
//! (reordering, NACK retransmissions), then declares them lost. Counts late
//! packets and duplicates. Sans-IO: time is passed in.

use crate::rtp::RtpPacket;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How the buffer trades latency for completeness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Off: holes are not waited for, so frames flow with minimum delay: a
    /// hole is given up as soon as a later packet is released, or, with
    /// [`JitterBuffer::set_frame_hold`] (video), as soon as a packet of a
    /// later frame is in hand. A frame reordered among its own packets is
    /// released the moment its last packet arrives; a frame with a missing
    /// packet is given up when the next one starts (at most `target_delay`).
    pub enabled: bool,
    /// How long a hole is waited for, measured from the arrival of the first
    /// packet after it. In-order packets are never delayed.
    pub target_delay: Duration,
    /// Upper bound on the wait when NACK retransmissions are expected
    /// (the wait grows with the RTT up to this).
    pub max_delay: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            enabled: true,
            target_delay: Duration::from_millis(80),
            max_delay: Duration::from_millis(500),
        }
    }
}

/// What the buffer releases, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// A packet and its arrival time.
    Packet(RtpPacket, Instant),
    /// This many sequence numbers were given up as lost.
    Lost(u64),
}

/// RFC 3550 A.1: a jump this far is a restart only if the next packet follows it.
const MAX_DROPOUT: i64 = 3000;
/// Packets this far behind the release point are from an old restart.
const MAX_MISORDER: i64 = 100;
/// Hard bound on buffered sequence span (memory): older holes are skipped.
const MAX_SPAN: u64 = 2048;
/// Remembered released sequence numbers, to tell duplicates from late packets.
const HISTORY: usize = 1024;
/// Sequence numbers asked for with NACK at most this many times.
const NACK_TRIES: u8 = 3;
/// At most this many sequence numbers are tracked for NACK.
const NACK_MAX: usize = 256;

#[derive(Debug)]
struct Slot {
    packet: RtpPacket,
    arrival: Instant,
}

#[derive(Debug, Clone, Copy)]
struct NackState {
    tries: u8,
    next: Instant,
}

/// Reorders the packets of one SSRC.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    /// `slots[0]` is extended sequence number `base`, the next to release.
    slots: VecDeque<Option<Slot>>,
    base: u64,
    /// Highest extended sequence number seen; `None` before the first packet.
    highest: Option<u64>,
    /// RFC 3550 A.1 restart probation: the sequence number that would confirm it.
    bad_seq: Option<u16>,
    history: Vec<u64>,
    nack: BTreeMap<u64, NackState>,
    /// Extra wait for retransmissions (set from the RTT by the session).
    nack_wait: Option<Duration>,
    /// Until the first release, packets from before the first one are
    /// still accepted (the stream's head may arrive reordered too).
    first_arrival: Option<Instant>,
    released_any: bool,
    /// Buffer off: hold packets after a hole while they are all of one frame.
    frame_hold: bool,
    pub late: u64,
    pub duplicates: u64,
    pub lost: u64,
    pub restarts: u64,
}

impl JitterBuffer {
    pub fn new(config: JitterConfig) -> Self {
        JitterBuffer {
            config,
            slots: VecDeque::new(),
            base: 0,
            highest: None,
            bad_seq: None,
            history: vec![u64::MAX; HISTORY],
            nack: BTreeMap::new(),
            nack_wait: None,
            first_arrival: None,
            released_any: false,
            frame_hold: false,
            late: 0,
            duplicates: 0,
            lost: 0,
            restarts: 0,
        }
    }

    pub fn config(&self) -> JitterConfig {
        self.config
    }

    /// Enable waiting for NACK retransmissions: holes are waited for up to
    /// `wait` (clamped to `[target_delay, max_delay]`).
    pub fn set_nack_wait(&mut self, wait: Option<Duration>) {
        self.nack_wait = wait.map(|w| {
            w.clamp(
                self.config.target_delay,
                self.config.max_delay.max(self.config.target_delay),
            )
        });
    }

    /// With the buffer off, keep the packets after a hole while they all
    /// belong to one frame (one RTP timestamp): the hole may be a packet of
    /// that frame that was merely reordered (video, where a frame spans many
    /// packets sent back-to-back). The hole is given up once a packet of
    /// another frame is in hand, or `target_delay` after the first packet
    /// after it. No effect with the buffer on (holes are waited for anyway).
    pub fn set_frame_hold(&mut self, on: bool) {
        self.frame_hold = on;
    }

    /// Extended highest sequence number received (RFC 3550 A.3).
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    fn hole_wait(&self) -> Duration {
        if !self.config.enabled {
            return Duration::ZERO;
        }
        self.nack_wait.unwrap_or(self.config.target_delay)
    }

    fn extend(&self, seq: u16) -> i64 {
        let Some(h) = self.highest else {
            return i64::from(seq);
        };
        // reinterpreting the wrapped difference as signed is the point
        let diff = i64::from(seq.wrapping_sub(h as u16) as i16);
        // h < 2^63 in practice (it grows by at most 2^16 per wrap)
        h as i64 + diff
    }

    fn reset_to(&mut self, ext: u64) {
        let buffered = self.slots.iter().filter(|s| s.is_some()).count() as u64;
        self.lost += (self.slots.len() as u64).saturating_sub(buffered);
        self.slots.clear();
        self.nack.clear();
        self.base = ext;
        self.highest = Some(ext);
        self.restarts += 1;
    }

    /// Take one packet. Returns `false` when it was dropped (late or duplicate).
    pub fn insert(&mut self, now: Instant, packet: RtpPacket) -> bool {
        let seq = packet.sequence;
        let ext = self.extend(seq);
        let Some(highest) = self.highest else {
            // first packet: start from it; 2^16 headroom keeps ext positive
            let ext = u64::from(seq) + (1 << 16);
            self.first_arrival = Some(now);
            self.base = ext;
            self.highest = Some(ext);
            self.slots.push_back(Some(Slot {
                packet,
                arrival: now,
            }));
            return true;
        };
        let jump = ext - highest as i64;
        let behind = self.base as i64 - ext;
        if jump > MAX_DROPOUT || behind > MAX_MISORDER {
            // far away: a restart when confirmed by the next packet (A.1)
            if self.bad_seq == Some(seq) {
                self.bad_seq = None;
                // what is still buffered belongs to the old numbering: drop it
                let new = ((highest + (1 << 16)) & !0xffff) | u64::from(seq);
                self.reset_to(new);
                self.slots.push_back(Some(Slot {
                    packet,
                    arrival: now,
                }));
                return true;
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            self.late += 1;
            return false;
        }
        self.bad_seq = None;
        let Ok(ext) = u64::try_from(ext) else {
            self.late += 1;
            return false;
        };
        if ext < self.base && !self.released_any {
            // the head of the stream arrived after later packets
            for _ in ext..self.base {
                self.slots.push_front(None);
            }
            self.base = ext;
        }
        if ext < self.base {
            if self.history.get(ext as usize % HISTORY) == Some(&ext) {
                self.duplicates += 1;
            } else {
                self.late += 1;
            }
            return false;
        }
        let index = (ext - self.base) as usize;
        if index >= self.slots.len() {
            // packets between the old highest and this one are missing
            let first_missing = highest + 1;
            for missing in first_missing..ext {
                if self.nack.len() < NACK_MAX {
                    self.nack.insert(
                        missing,
                        NackState {
                            tries: 0,
                            next: now,
                        },
                    );
                }
            }
            self.slots.resize_with(index + 1, || None);
        }
        match self.slots.get_mut(index) {
            Some(slot @ None) => {
                *slot = Some(Slot {
                    packet,
                    arrival: now,
                });
            }
            _ => {
                self.duplicates += 1;
                return false;
            }
        }
        self.nack.remove(&ext);
        if ext > highest {
            self.highest = Some(ext);
        }
        // bound memory: give up the oldest holes
        while self.slots.len() as u64 > MAX_SPAN {
            match self.slots.front() {
                Some(Some(_)) | None => break,
                Some(None) => {
                    self.slots.pop_front();
                    self.nack.remove(&self.base);
                    self.base += 1;
                    self.lost += 1;
                }
            }
        }
        true
    }

    /// Arrival time of the first buffered packet after the front hole.
    fn first_after_hole(&self) -> Option<Instant> {
        self.slots.iter().flatten().next().map(|s| s.arrival)
    }

    /// Whether the hole at the front is given up at `now`.
    fn hole_due(&self, now: Instant) -> bool {
        let Some(arrival) = self.first_after_hole() else {
            return false;
        };
        if self.config.enabled || !self.frame_hold {
            return now >= arrival + self.hole_wait();
        }
        now >= arrival + self.config.target_delay || self.later_frame_in_hand()
    }

    /// The buffered packets (those after the front hole) span more than one frame.
    fn later_frame_in_hand(&self) -> bool {
        let mut held = self.slots.iter().flatten().map(|s| s.packet.timestamp);
        let first = held.next();
        held.any(|ts| Some(ts) != first)
    }

    /// Next packet (or given-up hole) in order, if it is due at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Released> {
        if !self.released_any {
            // startup: give a reordered head of the stream one wait
            if self
                .first_arrival
                .is_some_and(|t| now < t + self.hole_wait())
            {
                return None;
            }
            // buffer off, video: the first frame's head may arrive after
            // its other packets too; wait for it as for any hole
            if !self.config.enabled
                && self.frame_hold
                && self
                    .first_arrival
                    .is_some_and(|t| now < t + self.config.target_delay)
                && !self.later_frame_in_hand()
            {
                return None;
            }
            self.released_any = true;
        }
        match self.slots.front() {
            None => None,
            Some(Some(_)) => {
                let slot = self.slots.pop_front().flatten()?;
                if let Some(h) = self.history.get_mut(self.base as usize % HISTORY) {
                    *h = self.base;
                }
                self.base += 1;
                Some(Released::Packet(slot.packet, slot.arrival))
            }
            Some(None) => {
                if !self.hole_due(now) {
                    return None;
                }
                let mut n = 0;
                while let Some(None) = self.slots.front() {
                    self.slots.pop_front();
                    self.nack.remove(&self.base);
                    self.base += 1;
                    n += 1;
                }
                self.lost += n;
                Some(Released::Lost(n))
            }
        }
    }

    /// When `pop` may next release something without new input.
    pub fn next_timeout(&self) -> Option<Instant> {
        if !self.released_any {
            let wait = if !self.config.enabled && self.frame_hold {
                self.config.target_delay
            } else {
                self.hole_wait()
            };
            return self.first_arrival.map(|t| t + wait);
        }
        match self.slots.front() {
            Some(None) if !self.config.enabled && self.frame_hold => self
                .first_after_hole()
                .map(|a| a + self.config.target_delay),
            Some(None) => self.first_after_hole().map(|a| a + self.hole_wait()),
            _ => None,
        }
    }

    /// Sequence numbers to NACK now; each is asked for at most three times,
    /// `interval` apart. Holes already given up are never asked for.
    pub fn nacks_due(&mut self, now: Instant, interval: Duration) -> Vec<u16> {
        let mut out = Vec::new();
        self.nack.retain(|&ext, st| {
            if st.next <= now {
                // the wire carries the low 16 bits
                out.push(ext as u16);
                st.tries += 1;
                st.next = now + interval;
            }
            st.tries < NACK_TRIES
        });
        out
    }

    /// Earliest pending NACK retry.
    pub fn next_nack(&self) -> Option<Instant> {
        self.nack.values().map(|s| s.next).min()
    }

    /// Packets currently held.
    pub fn buffered(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> RtpPacket {
        RtpPacket {
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc: 1,
            csrcs: vec![],
            payload: vec![seq as u8],
        }
    }

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<Released> {
        std::iter::from_fn(|| jb.pop(now)).collect()
    }

    fn seqs(r: &[Released]) -> Vec<i64> {
        r.iter()
            .map(|x| match x {
                Released::Packet(p, _) => i64::from(p.sequence),
                Released::Lost(n) => -(*n as i64),
            })
            .collect()
    }

    #[test]
    fn reorders_within_the_target_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.insert(t0, pkt(2));
        jb.insert(t0, pkt(1));
        // startup: the head waits one target delay for reordered packets
        assert!(drain(&mut jb, t0).is_empty());
        let t1 = t0 + Duration::from_millis(80);
        assert_eq!(seqs(&drain(&mut jb, t1)), vec![1, 2]);
        jb.insert(t1, pkt(4));
        assert_eq!(jb.next_timeout(), Some(t1 + Duration::from_millis(80)));
        jb.insert(t1 + Duration::from_millis(10), pkt(3));
        assert_eq!(seqs(&drain(&mut jb, t1)), vec![3, 4]);
        assert_eq!((jb.lost, jb.late), (0, 0));
    }

    #[test]
    fn hole_is_given_up_after_the_wait_and_late_packet_counted() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.insert(t0, pkt(65534));
        jb.insert(t0, pkt(0));
        let t1 = t0 + Duration::from_millis(80);
        assert_eq!(seqs(&drain(&mut jb, t1)), vec![65534, -1, 0]);
        assert!(!jb.insert(t1, pkt(65535)));
        assert_eq!((jb.lost, jb.late, jb.duplicates), (1, 1, 0));
        assert!(!jb.insert(t1, pkt(0)));
        assert_eq!(jb.duplicates, 1);
    }

    #[test]
    fn disabled_buffer_never_waits() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            enabled: false,
            ..JitterConfig::default()
        });
        jb.insert(t0, pkt(10));
        jb.insert(t0, pkt(12));
        assert_eq!(seqs(&drain(&mut jb, t0)), vec![10, -1, 12]);
    }

    #[test]
    fn disabled_buffer_with_frame_hold_takes_a_frame_reordered_within_itself() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            enabled: false,
            ..JitterConfig::default()
        });
        jb.set_frame_hold(true);
        let frame = |seq: u16, ts: u32| RtpPacket {
            timestamp: ts,
            ..pkt(seq)
        };
        jb.insert(t0, frame(10, 1));
        jb.insert(t0, frame(11, 1));
        // startup: waits for the next frame (or the target delay)
        assert!(drain(&mut jb, t0).is_empty());
        jb.insert(t0, frame(12, 2));
        assert_eq!(seqs(&drain(&mut jb, t0)), vec![10, 11, 12]);
        // 14 before 13, same frame: held, then released at once
        jb.insert(t0, frame(14, 3));
        assert!(drain(&mut jb, t0).is_empty());
        assert_eq!(jb.next_timeout(), Some(t0 + Duration::from_millis(80)));
        jb.insert(t0, frame(13, 3));
        assert_eq!(seqs(&drain(&mut jb, t0)), vec![13, 14]);
        // 15 lost: given up when the next frame begins
        jb.insert(t0, frame(16, 4));
        assert!(drain(&mut jb, t0).is_empty());
        jb.insert(t0, frame(17, 5));
        assert_eq!(seqs(&drain(&mut jb, t0)), vec![-1, 16, 17]);
        assert_eq!((jb.lost, jb.late), (1, 0));
    }

    #[test]
    fn nack_list_retries_three_times_then_stops() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.insert(t0, pkt(1));
        jb.insert(t0, pkt(4));
        let iv = Duration::from_millis(20);
        assert_eq!(jb.nacks_due(t0, iv), vec![2, 3]);
        assert!(jb.nacks_due(t0, iv).is_empty());
        jb.insert(t0, pkt(2));
        assert_eq!(jb.nacks_due(t0 + iv, iv), vec![3]);
        assert_eq!(jb.nacks_due(t0 + iv * 2, iv), vec![3]);
        assert!(jb.nacks_due(t0 + iv * 3, iv).is_empty());
    }

    #[test]
    fn confirmed_big_jump_restarts_the_sequence() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.insert(t0, pkt(100));
        drain(&mut jb, t0 + Duration::from_secs(1));
        assert!(!jb.insert(t0, pkt(30000)));
        assert!(jb.insert(t0, pkt(30001)));
        assert!(jb.insert(t0, pkt(30002)));
        assert_eq!(
            seqs(&drain(&mut jb, t0 + Duration::from_secs(1))),
            vec![30001, 30002]
        );
        assert_eq!(jb.restarts, 1);
    }
}
