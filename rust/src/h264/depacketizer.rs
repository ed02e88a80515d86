//! RFC 6184 depacketizer: single NAL unit, STAP-A and FU-A packets →
//! whole Annex-B access units. Never emits an access unit with a hole.

use super::{NAL_FU_A, NAL_IDR, NAL_STAP_A, START_CODE};

/// One complete access unit in Annex-B form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// NAL units, each preceded by `00 00 00 01`.
    pub data: Vec<u8>,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Contains an IDR slice (NAL type 5).
    pub keyframe: bool,
}

#[derive(Debug)]
struct Pending {
    timestamp: u32,
    data: Vec<u8>,
    keyframe: bool,
    broken: bool,
}

/// Sequence numbers further back than this are treated as a stream restart
/// rather than a late packet.
const MAX_REORDER: i16 = 512;

/// Reassembles access units from RTP payloads of one SSRC.
#[derive(Debug, Default)]
pub struct H264Depacketizer {
    /// Set when an access unit was dropped because of loss; cleared by the
    /// next complete access unit containing an IDR slice.
    pub needs_keyframe: bool,
    /// Access units dropped because of loss or broken fragmentation.
    pub dropped: u64,
    /// Packets of types we do not handle (STAP-B, MTAP16/24, FU-B, 0, 30, 31).
    pub ignored: u64,
    /// Packets too short for their type, or with bad STAP-A sizes.
    pub malformed: u64,
    /// FU-A fragments discarded because their start fragment was missing.
    pub orphan_fragments: u64,
    last_seq: Option<u16>,
    current: Option<Pending>,
    /// An FU-A NAL unit being reassembled in place, at the end of the
    /// current access unit: where its start code begins.
    fu: Option<usize>,
    /// Size of the last access unit: the next one's buffer starts that
    /// large (frames between keyframes are alike), which saves most of the
    /// reallocations of growing it packet by packet.
    size_hint: usize,
}

impl H264Depacketizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one RTP payload; returns the access units it completed. An
    /// access unit ends on the marker bit or on a timestamp change.
    pub fn push(
        &mut self,
        payload: &[u8],
        sequence: u16,
        timestamp: u32,
        marker: bool,
    ) -> Vec<AccessUnit> {
        let mut out = Vec::new();
        let mut gap = false;
        if let Some(last) = self.last_seq {
            // reinterpreting the wrapped difference as signed is the point
            let diff = sequence.wrapping_sub(last) as i16;
            if diff == 0 || (diff < 0 && diff > -MAX_REORDER) {
                return out; // duplicate or late packet: already accounted as loss
            }
            gap = diff != 1;
        }
        self.last_seq = Some(sequence);

        if gap {
            if let Some(cur) = self.current.as_mut() {
                cur.broken = true;
            }
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.timestamp != timestamp)
        {
            self.finish(&mut out);
        }
        if self.current.is_none() {
            // after a gap the lost packets may have been this AU's head
            self.current = Some(Pending {
                timestamp,
                data: Vec::with_capacity(self.size_hint),
                keyframe: false,
                broken: gap,
            });
        }

        self.depacketize(payload);
        if marker {
            self.finish(&mut out);
        }
        out
    }

    fn mark_broken(&mut self) {
        if let Some(cur) = self.current.as_mut() {
            cur.broken = true;
        }
    }

    /// An FU-A in progress that will never see its end fragment: its
    /// partial NAL unit goes, and the access unit is broken.
    fn abort_fu(&mut self) {
        if let Some(start) = self.fu.take() {
            if let Some(cur) = self.current.as_mut() {
                cur.data.truncate(start);
            }
            self.mark_broken();
        }
    }

    fn add_nal(&mut self, nal: &[u8]) {
        let Some(&header) = nal.first() else {
            return;
        };
        if let Some(cur) = self.current.as_mut() {
            cur.data.extend_from_slice(&START_CODE);
            cur.data.extend_from_slice(nal);
            if header & 0x1f == NAL_IDR {
                cur.keyframe = true;
            }
        }
    }

    fn malformed(&mut self) {
        self.malformed += 1;
        self.mark_broken();
    }

    fn depacketize(&mut self, payload: &[u8]) {
        let Some(&header) = payload.first() else {
            self.malformed();
            return;
        };
        match header & 0x1f {
            1..=23 => {
                self.abort_fu();
                self.add_nal(payload);
            }
            NAL_STAP_A => {
                self.abort_fu();
                let mut pos = 1;
                while pos < payload.len() {
                    let size = match payload.get(pos..pos + 2) {
                        Some(&[a, b]) => usize::from(u16::from_be_bytes([a, b])),
                        _ => {
                            self.malformed();
                            return;
                        }
                    };
                    pos += 2;
                    match payload.get(pos..pos + size) {
                        Some(nal) if size > 0 => self.add_nal(nal),
                        _ => {
                            self.malformed();
                            return;
                        }
                    }
                    pos += size;
                }
            }
            NAL_FU_A => {
                let Some(&fu_header) = payload.get(1) else {
                    self.malformed();
                    return;
                };
                let start = fu_header & 0x80 != 0;
                let end = fu_header & 0x40 != 0;
                let data = payload.get(2..).unwrap_or(&[]);
                let Some(cur) = self.current.as_mut() else {
                    return;
                };
                if start {
                    self.abort_fu();
                    let Some(cur) = self.current.as_mut() else {
                        return;
                    };
                    // the fragments are appended where the NAL unit belongs
                    self.fu = Some(cur.data.len());
                    let nal_header = (header & 0xe0) | (fu_header & 0x1f);
                    cur.data.extend_from_slice(&START_CODE);
                    cur.data.push(nal_header);
                    cur.data.extend_from_slice(data);
                    if nal_header & 0x1f == NAL_IDR {
                        cur.keyframe = true;
                    }
                    if end {
                        self.fu = None;
                    }
                } else if self.fu.is_some() {
                    cur.data.extend_from_slice(data);
                    if end {
                        self.fu = None;
                    }
                } else {
                    // no start fragment: the NAL unit cannot be rebuilt
                    self.orphan_fragments += 1;
                    self.mark_broken();
                }
            }
            _ => self.ignored += 1,
        }
    }

    fn finish(&mut self, out: &mut Vec<AccessUnit>) {
        self.abort_fu();
        let Some(cur) = self.current.take() else {
            return;
        };
        if cur.broken {
            self.dropped += 1;
            self.needs_keyframe = true;
            return;
        }
        if cur.data.is_empty() {
            return;
        }
        if cur.keyframe {
            self.needs_keyframe = false;
        }
        self.size_hint = cur.data.len().min(1 << 20);
        out.push(AccessUnit {
            data: cur.data,
            timestamp: cur.timestamp,
            keyframe: cur.keyframe,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::h264_packetize;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x3d, 0xa1];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&START_CODE);
            v.extend_from_slice(n);
        }
        v
    }

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![0x78];
        for n in nals {
            v.extend_from_slice(&(n.len() as u16).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    fn idr(len: usize) -> Vec<u8> {
        let mut v = vec![0x65];
        v.extend((0..len).map(|i| (i % 200) as u8 + 1));
        v
    }

    fn fu(nal: &[u8], pieces: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let size = body.len().div_ceil(pieces);
        let chunks: Vec<&[u8]> = body.chunks(size).collect();
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(k, c)| {
                let mut fh = nal[0] & 0x1f;
                if k == 0 {
                    fh |= 0x80;
                }
                if k == n - 1 {
                    fh |= 0x40;
                }
                let mut p = vec![(nal[0] & 0xe0) | 28, fh];
                p.extend_from_slice(c);
                p
            })
            .collect()
    }

    #[test]
    fn single_nal_with_marker_is_one_access_unit() {
        let mut d = H264Depacketizer::new();
        let aus = d.push(&[0x41, 0x9a, 0x02], 10, 3000, true);
        assert_eq!(
            aus,
            vec![AccessUnit {
                data: vec![0, 0, 0, 1, 0x41, 0x9a, 0x02],
                timestamp: 3000,
                keyframe: false
            }]
        );
        assert!(!d.needs_keyframe);
    }

    #[test]
    fn stap_a_with_sps_pps_then_idr_is_a_keyframe() {
        let mut d = H264Depacketizer::new();
        assert!(d.push(&stap_a(&[SPS, PPS]), 1, 90, false).is_empty());
        let i = idr(50);
        let aus = d.push(&i, 2, 90, true);
        assert_eq!(aus.len(), 1);
        assert!(aus[0].keyframe);
        assert_eq!(aus[0].data, annexb(&[SPS, PPS, &i]));
    }

    #[test]
    fn fu_a_across_packets_is_reassembled() {
        let mut d = H264Depacketizer::new();
        let i = idr(3000);
        let parts = fu(&i, 3);
        assert!(d.push(&parts[0], 100, 1, false).is_empty());
        assert!(d.push(&parts[1], 101, 1, false).is_empty());
        let aus = d.push(&parts[2], 102, 1, true);
        assert_eq!(aus.len(), 1);
        assert_eq!(aus[0].data, annexb(&[&i]));
        assert!(aus[0].keyframe);
    }

    #[test]
    fn lost_fu_a_middle_fragment_drops_the_au_until_next_idr() {
        let mut d = H264Depacketizer::new();
        let p_slice = {
            let mut v = vec![0x41];
            v.extend([7u8; 2000]);
            v
        };
        let parts = fu(&p_slice, 3);
        assert!(d.push(&parts[0], 1, 3000, false).is_empty());
        // parts[1] (seq 2) lost
        assert!(d.push(&parts[2], 3, 3000, true).is_empty());
        assert_eq!(d.dropped, 1);
        assert!(d.needs_keyframe);
        // next non-IDR frame arrives intact: emitted, still needs a keyframe
        let aus = d.push(&[0x41, 1, 2], 4, 6000, true);
        assert_eq!(aus.len(), 1);
        assert!(d.needs_keyframe);
        // IDR clears it
        let aus = d.push(&stap_a(&[SPS, PPS, &idr(10)]), 5, 9000, true);
        assert_eq!(aus.len(), 1);
        assert!(aus[0].keyframe);
        assert!(!d.needs_keyframe);
    }

    #[test]
    fn sequence_wrap_inside_fu_a_is_not_loss() {
        let mut d = H264Depacketizer::new();
        let i = idr(2500);
        let parts = fu(&i, 3);
        assert!(d.push(&parts[0], 65534, 7, false).is_empty());
        assert!(d.push(&parts[1], 65535, 7, false).is_empty());
        let aus = d.push(&parts[2], 0, 7, true);
        assert_eq!(aus.len(), 1);
        assert_eq!(aus[0].data, annexb(&[&i]));
        assert_eq!(d.dropped, 0);
    }

    #[test]
    fn loss_across_wrap_is_detected() {
        let mut d = H264Depacketizer::new();
        let parts = fu(&idr(2500), 3);
        d.push(&parts[0], 65535, 7, false);
        assert!(d.push(&parts[2], 1, 7, true).is_empty());
        assert_eq!(d.dropped, 1);
        assert!(d.needs_keyframe);
    }

    #[test]
    fn fu_a_without_start_fragment_is_discarded() {
        let mut d = H264Depacketizer::new();
        let parts = fu(&idr(2500), 3);
        assert!(d.push(&parts[1], 50, 7, false).is_empty());
        assert!(d.push(&parts[2], 51, 7, true).is_empty());
        assert_eq!(d.orphan_fragments, 2);
        assert_eq!(d.dropped, 1);
        // the next whole AU comes through
        assert_eq!(d.push(&[0x65, 1], 52, 8, true).len(), 1);
        assert!(!d.needs_keyframe);
    }

    #[test]
    fn timestamp_change_ends_an_au_without_marker() {
        let mut d = H264Depacketizer::new();
        assert!(d.push(&[0x41, 1], 1, 100, false).is_empty());
        let aus = d.push(&[0x41, 2], 2, 200, false);
        assert_eq!(aus.len(), 1);
        assert_eq!(aus[0].timestamp, 100);
        let aus = d.push(&[0x41, 3], 3, 200, true);
        assert_eq!(aus[0].data, annexb(&[&[0x41, 2], &[0x41, 3]]));
    }

    #[test]
    fn duplicates_are_ignored_and_restarts_resync() {
        let mut d = H264Depacketizer::new();
        assert_eq!(d.push(&[0x41, 1], 1000, 1, true).len(), 1);
        assert!(d.push(&[0x41, 1], 1000, 1, true).is_empty());
        assert!(d.push(&[0x41, 1], 999, 1, true).is_empty());
        // a far-back sequence number is a new stream: counted as a gap
        assert!(d.push(&[0x65, 1], 10, 5, true).is_empty());
        assert_eq!(d.push(&[0x65, 2], 11, 6, true).len(), 1);
    }

    #[test]
    fn unsupported_packet_types_are_ignored_and_counted() {
        let mut d = H264Depacketizer::new();
        for (seq, t) in [25u8, 26, 27, 29, 30, 31, 0].into_iter().enumerate() {
            d.push(&[0x60 | t, 0x80, 1, 2, 3], seq as u16, 1, false);
        }
        assert_eq!(d.ignored, 7);
        assert_eq!(d.push(&[0x41, 1], 7, 1, true).len(), 1);
    }

    #[test]
    fn packetize_then_depacketize_round_trips_a_large_au() {
        let i = idr(100_000);
        let au = annexb(&[SPS, PPS, &i]);
        let payloads = h264_packetize(&au, 1200);
        assert!(payloads.len() > 80);
        let mut d = H264Depacketizer::new();
        let mut got = Vec::new();
        let n = payloads.len();
        for (k, p) in payloads.iter().enumerate() {
            got.extend(d.push(p, 65500u16.wrapping_add(k as u16), 42, k == n - 1));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, au);
        assert!(got[0].keyframe);
    }

    #[test]
    fn malformed_and_random_payloads_never_panic() {
        let mut d = H264Depacketizer::new();
        d.push(&[], 1, 1, true);
        d.push(&[0x7c], 2, 1, true);
        d.push(&[0x78, 0, 9, 1], 3, 1, true);
        d.push(&[0x78, 0, 0], 4, 1, true);
        d.push(&[0x78, 0], 5, 1, true);
        assert_eq!(d.malformed, 5);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for seq in 0..50_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let p: Vec<u8> = (0..len)
                .map(|i| (x >> (i % 8 * 8)) as u8 ^ (i as u8))
                .collect();
            d.push(
                &p,
                (x >> 40) as u16 % 4 + seq as u16,
                (x >> 20) as u32 % 3,
                x & 1 == 0,
            );
        }
    }
}
