//! RTCP: demultiplexing (RFC 5761), sender/receiver reports with report
//! blocks, SDES CNAME and BYE (RFC 3550), generic NACK and PLI (RFC 4585),
//! FIR (RFC 5104), and compound-packet building and parsing.

use super::{be16, be32};
use crate::error::RtpError;

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
const FMT_NACK: u8 = 1;
const PT_RTPFB: u8 = 205;
const PT_PSFB: u8 = 206;
const FMT_PLI: u8 = 1;
const FMT_FIR: u8 = 4;

/// True for RTCP: version 2 and byte 1 (marker + payload type) in 192..=223.
pub fn is_rtcp(data: &[u8]) -> bool {
    match (data.first(), data.get(1)) {
        (Some(b0), Some(b1)) => b0 >> 6 == 2 && (192..=223).contains(b1),
        _ => false,
    }
}

/// Picture Loss Indication (RFC 4585 §6.3.1): 12 bytes.
pub fn build_pli(sender_ssrc: u32, media_ssrc: u32) -> Vec<u8> {
    let mut out = vec![0x80 | FMT_PLI, PT_PSFB, 0, 2];
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&media_ssrc.to_be_bytes());
    out
}

/// Full Intra Request (RFC 5104 §4.3.1): 20 bytes, one FCI entry. The
/// common header's media source is 0; the target SSRC is in the FCI.
pub fn build_fir(sender_ssrc: u32, media_ssrc: u32, seq_nr: u8) -> Vec<u8> {
    let mut out = vec![0x80 | FMT_FIR, PT_PSFB, 0, 4];
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&media_ssrc.to_be_bytes());
    out.extend_from_slice(&[seq_nr, 0, 0, 0]);
    out
}

/// Receiver report with no report blocks: 8 bytes.
pub fn build_receiver_report(sender_ssrc: u32) -> Vec<u8> {
    let mut out = vec![0x80, PT_RR, 0, 1];
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out
}

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpInfo {
    pub packet_type: u8,
    /// FMT for feedback packets (RC/SC for others).
    pub fmt: u8,
    /// Media source SSRC of a feedback packet (for FIR: the first FCI
    /// entry's SSRC, since the header field is 0); 0 for other packets.
    pub media_ssrc: u32,
}

/// Walk a compound RTCP packet: packet type, FMT and media SSRC of each
/// packet, without parsing their bodies (see [`parse_rtcp_compound`]).
pub fn parse_rtcp(data: &[u8]) -> Result<Vec<RtcpInfo>, RtpError> {
    walk_compound(data, |pt, fmt, pos, packet| {
        let media_ssrc = if pt == PT_RTPFB || pt == PT_PSFB {
            let header_ssrc = be32(packet, 8).ok_or(RtpError::TooShort {
                what: "RTCP feedback packet",
                need: pos + 12,
                have: pos + packet.len(),
            })?;
            if pt == PT_PSFB && fmt == FMT_FIR && header_ssrc == 0 {
                be32(packet, 12).unwrap_or(0)
            } else {
                header_ssrc
            }
        } else {
            0
        };
        Ok(RtcpInfo {
            packet_type: pt,
            fmt,
            media_ssrc,
        })
    })
}

/// NTP timestamp (RFC 3550 §4): seconds since 1900 in 32.32 fixed point.
pub type NtpTime = u64;

/// Middle 32 bits of an NTP timestamp, as carried in LSR.
pub fn ntp_middle(ntp: NtpTime) -> u32 {
    // bits 16..48 of the 64-bit value; the cast keeps exactly those 32 bits
    (ntp >> 16) as u32
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// Source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp (0: none yet).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff);
        // two's complement 24-bit: keep the low three bytes
        let lost_bytes = lost.to_be_bytes();
        out.push(self.fraction_lost);
        out.extend_from_slice(lost_bytes.get(1..4).unwrap_or(&[0, 0, 0]));
        out.extend_from_slice(&self.extended_highest_seq.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.last_sr.to_be_bytes());
        out.extend_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }

    fn parse(b: &[u8]) -> Option<ReportBlock> {
        let lost_hi = *b.get(5)?;
        let raw = u32::from_be_bytes([0, lost_hi, *b.get(6)?, *b.get(7)?]);
        // sign-extend the 24-bit value
        let cumulative_lost = ((raw << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: be32(b, 0)?,
            fraction_lost: *b.get(4)?,
            cumulative_lost,
            extended_highest_seq: be32(b, 8)?,
            jitter: be32(b, 12)?,
            last_sr: be32(b, 16)?,
            delay_since_last_sr: be32(b, 20)?,
        })
    }

    /// Round-trip time from this block (RFC 3550 §6.4.1): `arrival` is our
    /// NTP time when the report arrived. `None` when no SR was echoed.
    pub fn round_trip(&self, arrival: NtpTime) -> Option<std::time::Duration> {
        if self.last_sr == 0 {
            return None;
        }
        let a = ntp_middle(arrival);
        let rtt = a
            .wrapping_sub(self.last_sr)
            .wrapping_sub(self.delay_since_last_sr);
        // a negative result (wrapped to a huge value) means clock trouble
        if rtt > 0x8000_0000 {
            return None;
        }
        Some(std::time::Duration::from_micros(
            u64::from(rtt) * 1_000_000 / 65_536,
        ))
    }
}

/// Sender info of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    pub ntp: NtpTime,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// One parsed packet of a compound RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        reports: Vec<ReportBlock>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    /// CNAME items of an SDES packet, per chunk.
    Sdes {
        cnames: Vec<(u32, String)>,
    },
    Bye {
        ssrcs: Vec<u32>,
        reason: Option<String>,
    },
    /// Generic NACK: the lost sequence numbers, expanded from PID/BLP.
    Nack {
        sender_ssrc: u32,
        media_ssrc: u32,
        lost: Vec<u16>,
    },
    Pli {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    Fir {
        sender_ssrc: u32,
        media_ssrc: u32,
        seq_nr: u8,
    },
    /// Anything else (APP, XR, other feedback), kept by type.
    Other {
        packet_type: u8,
        fmt: u8,
    },
}

fn header(count: u8, pt: u8, out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0x80 | (count & 0x1f), pt, 0, 0]);
    at
}

/// Write the length field of the packet starting at `at` (and pad to 32 bits).
fn finish(out: &mut Vec<u8>, at: usize) {
    while !(out.len() - at).is_multiple_of(4) {
        out.push(0);
    }
    let words = ((out.len() - at) / 4).saturating_sub(1);
    let words = u16::try_from(words).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(len) = out.get_mut(at + 2..at + 4) {
        len.copy_from_slice(&words);
    }
}

/// Receiver report with up to 31 report blocks, appended to `out`.
pub fn write_receiver_report(out: &mut Vec<u8>, sender_ssrc: u32, reports: &[ReportBlock]) {
    let reports = reports.get(..reports.len().min(31)).unwrap_or(&[]);
    // at most 31 blocks: fits in the 5-bit count
    let at = header(reports.len() as u8, PT_RR, out);
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    for r in reports {
        r.write(out);
    }
    finish(out, at);
}

/// Sender report with up to 31 report blocks, appended to `out`.
pub fn write_sender_report(
    out: &mut Vec<u8>,
    sender_ssrc: u32,
    info: &SenderInfo,
    reports: &[ReportBlock],
) {
    let reports = reports.get(..reports.len().min(31)).unwrap_or(&[]);
    // at most 31 blocks: fits in the 5-bit count
    let at = header(reports.len() as u8, PT_SR, out);
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&info.ntp.to_be_bytes());
    out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
    out.extend_from_slice(&info.packet_count.to_be_bytes());
    out.extend_from_slice(&info.octet_count.to_be_bytes());
    for r in reports {
        r.write(out);
    }
    finish(out, at);
}

/// SDES with one chunk carrying a CNAME (truncated to 255 bytes).
pub fn write_sdes_cname(out: &mut Vec<u8>, ssrc: u32, cname: &str) {
    let at = header(1, PT_SDES, out);
    out.extend_from_slice(&ssrc.to_be_bytes());
    let text = cname.as_bytes();
    let text = text.get(..text.len().min(255)).unwrap_or(&[]);
    out.push(1);
    // at most 255 bytes, checked above
    out.push(text.len() as u8);
    out.extend_from_slice(text);
    // the item list ends with at least one null byte, then pads to 32 bits
    out.push(0);
    finish(out, at);
}

/// BYE for one SSRC with an optional reason.
pub fn write_bye(out: &mut Vec<u8>, ssrc: u32, reason: Option<&str>) {
    let at = header(1, PT_BYE, out);
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(reason) = reason {
        let text = reason.as_bytes();
        let text = text.get(..text.len().min(255)).unwrap_or(&[]);
        // at most 255 bytes, checked above
        out.push(text.len() as u8);
        out.extend_from_slice(text);
    }
    finish(out, at);
}

/// Generic NACK (RFC 4585 §6.2.1): sequence numbers packed into PID/BLP
/// pairs. Empty `lost` writes nothing.
pub fn write_nack(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32, lost: &[u16]) {
    if lost.is_empty() {
        return;
    }
    let mut sorted = lost.to_vec();
    // sort in wrap-aware order relative to the first one
    let first = sorted.first().copied().unwrap_or(0);
    sorted.sort_by_key(|s| s.wrapping_sub(first));
    sorted.dedup();
    let at = header(FMT_NACK, PT_RTPFB, out);
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&media_ssrc.to_be_bytes());
    let mut i = 0;
    while let Some(&pid) = sorted.get(i) {
        let mut blp = 0u16;
        i += 1;
        while let Some(&s) = sorted.get(i) {
            let d = s.wrapping_sub(pid);
            if d == 0 || d > 16 {
                break;
            }
            blp |= 1 << (d - 1);
            i += 1;
        }
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(&blp.to_be_bytes());
    }
    finish(out, at);
}

/// PLI appended to `out`.
pub fn write_pli(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32) {
    out.extend_from_slice(&build_pli(sender_ssrc, media_ssrc));
}

/// FIR appended to `out`.
pub fn write_fir(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32, seq_nr: u8) {
    out.extend_from_slice(&build_fir(sender_ssrc, media_ssrc, seq_nr));
}

fn parse_blocks(body: &[u8], count: usize) -> Vec<ReportBlock> {
    (0..count)
        .map_while(|k| body.get(k * 24..k * 24 + 24).and_then(ReportBlock::parse))
        .collect()
}

fn parse_one(pt: u8, fmt: u8, packet: &[u8]) -> Result<RtcpPacket, RtpError> {
    let need = |n: usize| RtpError::TooShort {
        what: "RTCP packet body",
        need: n,
        have: packet.len(),
    };
    let count = usize::from(fmt);
    Ok(match pt {
        PT_SR => {
            let ssrc = be32(packet, 4).ok_or_else(|| need(8))?;
            let hi = be32(packet, 8).ok_or_else(|| need(28))?;
            let lo = be32(packet, 12).ok_or_else(|| need(28))?;
            let info = SenderInfo {
                ntp: (u64::from(hi) << 32) | u64::from(lo),
                rtp_timestamp: be32(packet, 16).ok_or_else(|| need(28))?,
                packet_count: be32(packet, 20).ok_or_else(|| need(28))?,
                octet_count: be32(packet, 24).ok_or_else(|| need(28))?,
            };
            let blocks = packet.get(28..).unwrap_or(&[]);
            if blocks.len() < count * 24 {
                return Err(need(28 + count * 24));
            }
            RtcpPacket::SenderReport {
                ssrc,
                info,
                reports: parse_blocks(blocks, count),
            }
        }
        PT_RR => {
            let ssrc = be32(packet, 4).ok_or_else(|| need(8))?;
            let blocks = packet.get(8..).unwrap_or(&[]);
            if blocks.len() < count * 24 {
                return Err(need(8 + count * 24));
            }
            RtcpPacket::ReceiverReport {
                ssrc,
                reports: parse_blocks(blocks, count),
            }
        }
        PT_SDES => {
            let mut cnames = Vec::new();
            let mut pos = 4;
            for _ in 0..count {
                let Some(ssrc) = be32(packet, pos) else {
                    break;
                };
                pos += 4;
                while let Some(&item) = packet.get(pos) {
                    if item == 0 {
                        // end of chunk: skip to the next 32-bit boundary
                        pos = (pos + 4) & !3;
                        break;
                    }
                    let len = usize::from(packet.get(pos + 1).copied().unwrap_or(0));
                    let text = packet
                        .get(pos + 2..pos + 2 + len)
                        .ok_or_else(|| need(pos + 2 + len))?;
                    if item == 1 {
                        cnames.push((ssrc, String::from_utf8_lossy(text).into_owned()));
                    }
                    pos += 2 + len;
                }
            }
            RtcpPacket::Sdes { cnames }
        }
        PT_BYE => {
            let mut ssrcs = Vec::with_capacity(count);
            for k in 0..count {
                ssrcs.push(be32(packet, 4 + 4 * k).ok_or_else(|| need(8 + 4 * k))?);
            }
            let at = 4 + 4 * count;
            let reason = packet.get(at).and_then(|&len| {
                packet
                    .get(at + 1..at + 1 + usize::from(len))
                    .map(|t| String::from_utf8_lossy(t).into_owned())
            });
            RtcpPacket::Bye { ssrcs, reason }
        }
        PT_RTPFB | PT_PSFB => {
            let sender_ssrc = be32(packet, 4).ok_or_else(|| need(12))?;
            let media_ssrc = be32(packet, 8).ok_or_else(|| need(12))?;
            match (pt, fmt) {
                (PT_RTPFB, FMT_NACK) => {
                    let mut lost = Vec::new();
                    let mut pos = 12;
                    while let (Some(pid), Some(blp)) = (be16(packet, pos), be16(packet, pos + 2)) {
                        lost.push(pid);
                        for bit in 0..16u16 {
                            if blp & (1 << bit) != 0 {
                                lost.push(pid.wrapping_add(bit + 1));
                            }
                        }
                        pos += 4;
                    }
                    RtcpPacket::Nack {
                        sender_ssrc,
                        media_ssrc,
                        lost,
                    }
                }
                (PT_PSFB, FMT_PLI) => RtcpPacket::Pli {
                    sender_ssrc,
                    media_ssrc,
                },
                (PT_PSFB, FMT_FIR) => RtcpPacket::Fir {
                    sender_ssrc,
                    media_ssrc: be32(packet, 12).ok_or_else(|| need(20))?,
                    seq_nr: packet.get(16).copied().ok_or_else(|| need(20))?,
                },
                _ => RtcpPacket::Other {
                    packet_type: pt,
                    fmt,
                },
            }
        }
        _ => RtcpPacket::Other {
            packet_type: pt,
            fmt,
        },
    })
}

/// Parse every packet of a compound RTCP packet. The walk stops with an
/// error at the first packet whose header or length is bad.
pub fn parse_rtcp_compound(data: &[u8]) -> Result<Vec<RtcpPacket>, RtpError> {
    walk_compound(data, |pt, fmt, _, packet| parse_one(pt, fmt, packet))
}

/// The one walk over the packets of a compound RTCP packet: `each` gets the
/// packet type, FMT (or count), offset and bytes (header included) of every
/// packet in turn. Stops with an error at an empty input, at the first
/// packet whose version is not 2, whose header is cut or whose length runs
/// past the data, or at the first error of `each`.
fn walk_compound<T>(
    data: &[u8],
    mut each: impl FnMut(u8, u8, usize, &[u8]) -> Result<T, RtpError>,
) -> Result<Vec<T>, RtpError> {
    if data.is_empty() {
        return Err(RtpError::Empty);
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let b0 = data.get(pos).copied().unwrap_or(0);
        if b0 >> 6 != 2 {
            return Err(RtpError::BadVersion {
                offset: pos,
                version: b0 >> 6,
            });
        }
        let too_short = RtpError::TooShort {
            what: "RTCP header",
            need: pos + 4,
            have: data.len(),
        };
        let pt = data.get(pos + 1).copied().ok_or(too_short.clone())?;
        let words = be16(data, pos + 2).ok_or(too_short)?;
        let end = pos + (usize::from(words) + 1) * 4;
        let packet = data.get(pos..end).ok_or(RtpError::TooShort {
            what: "RTCP packet",
            need: end,
            have: data.len(),
        })?;
        out.push(each(pt, b0 & 0x1f, pos, packet)?);
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pli_layout_follows_rfc4585() {
        let p = build_pli(0x0102_0304, 0xaabb_ccdd);
        assert_eq!(p, vec![0x81, 206, 0, 2, 1, 2, 3, 4, 0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(is_rtcp(&p));
    }

    #[test]
    fn fir_layout_follows_rfc5104() {
        let f = build_fir(1, 0xaabb_ccdd, 7);
        assert_eq!(
            f,
            vec![0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 7, 0, 0, 0]
        );
    }

    #[test]
    fn compound_rr_pli_fir_parses() {
        let mut c = build_receiver_report(9);
        assert_eq!(c, vec![0x80, 201, 0, 1, 0, 0, 0, 9]);
        c.extend(build_pli(9, 0x55));
        c.extend(build_fir(9, 0x66, 1));
        let info = parse_rtcp(&c).unwrap();
        let tuples: Vec<(u8, u8, u32)> = info
            .iter()
            .map(|i| (i.packet_type, i.fmt, i.media_ssrc))
            .collect();
        assert_eq!(tuples, vec![(201, 0, 0), (206, 1, 0x55), (206, 4, 0x66)]);
    }

    #[test]
    fn rtp_and_rtcp_are_demultiplexed() {
        assert!(!is_rtcp(&crate::rtp::build_rtp(96, 1, 1, 1, true, b"x")));
        assert!(!is_rtcp(&crate::rtp::build_rtp(0, 1, 1, 1, false, b"x")));
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_rtcp(&[]));
    }

    #[test]
    fn summary_and_full_parse_walk_the_same_packets_and_header_errors() {
        let mut c = Vec::new();
        write_receiver_report(&mut c, 1, &[]);
        write_pli(&mut c, 1, 2);
        write_fir(&mut c, 1, 3, 4);
        write_nack(&mut c, 1, 2, &[5, 6]);
        write_bye(&mut c, 1, None);
        let info = parse_rtcp(&c).unwrap();
        let full = parse_rtcp_compound(&c).unwrap();
        assert_eq!(info.len(), full.len());
        assert_eq!(
            info.iter().map(|i| i.media_ssrc).collect::<Vec<_>>(),
            vec![0, 2, 3, 2, 0]
        );
        // Header and length errors come from the one walk, word for word.
        for bad in [
            &[][..],
            &[0x40, 201, 0, 1, 0, 0, 0, 0],
            &[0x80, 201, 0],
            &[0x80, 201, 0, 5, 0, 0, 0, 0],
        ] {
            let summary = parse_rtcp(bad).unwrap_err();
            assert_eq!(parse_rtcp_compound(bad).unwrap_err(), summary, "{bad:?}");
        }
        // A second packet with a bad version: the offset is its own.
        let mut two = c[..8].to_vec();
        two.extend_from_slice(&[0x40, 201, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            parse_rtcp(&two),
            Err(RtpError::BadVersion {
                offset: 8,
                version: 1
            })
        );
        // A feedback packet too short for its media SSRC: only the summary
        // looks there, and says where.
        assert_eq!(
            parse_rtcp(&[0x80, 201, 0, 1, 0, 0, 0, 1, 0x81, 206, 0, 1, 0, 0, 0, 1]),
            Err(RtpError::TooShort {
                what: "RTCP feedback packet",
                need: 20,
                have: 16
            })
        );
    }

    #[test]
    fn malformed_compound_is_an_error_and_never_panics() {
        assert_eq!(parse_rtcp(&[]), Err(RtpError::Empty));
        assert!(parse_rtcp(&[0x80, 201, 0, 5, 0, 0, 0, 0]).is_err());
        assert!(parse_rtcp(&[0x40, 201, 0, 1, 0, 0, 0, 0]).is_err());
        assert!(parse_rtcp(&[0x81, 206, 0, 1, 0, 0, 0, 0, 0]).is_err());
        let mut c = build_receiver_report(1);
        c.extend(build_fir(1, 2, 3));
        for cut in 0..c.len() {
            let _ = parse_rtcp(&c[..cut]);
        }
    }

    #[test]
    fn rr_sr_sdes_bye_nack_round_trip() {
        let block = ReportBlock {
            ssrc: 0x1111,
            fraction_lost: 25,
            cumulative_lost: -3,
            extended_highest_seq: 0x0001_0005,
            jitter: 77,
            last_sr: 0xabcd_0000,
            delay_since_last_sr: 65536,
        };
        let mut c = Vec::new();
        write_sender_report(
            &mut c,
            9,
            &SenderInfo {
                ntp: 0x0102_0304_0506_0708,
                rtp_timestamp: 160,
                packet_count: 5,
                octet_count: 800,
            },
            &[block],
        );
        assert_eq!(c.len(), 28 + 24);
        write_receiver_report(&mut c, 9, &[block, block]);
        write_sdes_cname(&mut c, 9, "sipstream@host");
        write_nack(&mut c, 9, 0x2222, &[65535, 0, 3, 40]);
        write_bye(&mut c, 9, Some("done"));
        assert!(c.len().is_multiple_of(4));
        let p = parse_rtcp_compound(&c).unwrap();
        assert_eq!(p.len(), 5);
        assert!(
            matches!(&p[0], RtcpPacket::SenderReport { ssrc: 9, info, reports }
            if info.ntp == 0x0102_0304_0506_0708 && reports == &vec![block])
        );
        assert!(matches!(&p[1], RtcpPacket::ReceiverReport { reports, .. } if reports.len() == 2));
        assert_eq!(
            p[2],
            RtcpPacket::Sdes {
                cnames: vec![(9, "sipstream@host".into())]
            }
        );
        assert_eq!(
            p[3],
            RtcpPacket::Nack {
                sender_ssrc: 9,
                media_ssrc: 0x2222,
                lost: vec![65535, 0, 3, 40]
            }
        );
        assert_eq!(
            p[4],
            RtcpPacket::Bye {
                ssrcs: vec![9],
                reason: Some("done".into())
            }
        );
        // the old walker agrees on the types
        let types: Vec<u8> = parse_rtcp(&c)
            .unwrap()
            .iter()
            .map(|i| i.packet_type)
            .collect();
        assert_eq!(types, vec![200, 201, 202, 205, 203]);
    }

    #[test]
    fn nack_packs_pid_and_blp_per_rfc4585() {
        let mut c = Vec::new();
        write_nack(&mut c, 1, 2, &[100, 101, 116, 117]);
        // PID 100, BLP bits for 101 (bit 0) and 116 (bit 15); then PID 117
        assert_eq!(&c[12..], &[0, 100, 0x80, 0x01, 0, 117, 0, 0]);
        assert_eq!(&c[..4], &[0x81, 205, 0, 4]);
    }

    #[test]
    fn round_trip_time_from_lsr_and_dlsr() {
        let b = ReportBlock {
            last_sr: 0x0001_0000,             // 1 s
            delay_since_last_sr: 0x0000_8000, // 0.5 s
            ..ReportBlock::default()
        };
        let arrival: NtpTime = 0x0000_0001_c000_0000; // 1.75 s
        let rtt = b.round_trip(arrival).unwrap();
        assert_eq!(rtt.as_millis(), 250);
        assert!(ReportBlock::default().round_trip(arrival).is_none());
    }

    #[test]
    fn compound_parser_never_panics_on_truncations() {
        let mut c = Vec::new();
        write_sender_report(&mut c, 1, &SenderInfo::default(), &[ReportBlock::default()]);
        write_sdes_cname(&mut c, 1, "x");
        write_nack(&mut c, 1, 2, &[5]);
        write_bye(&mut c, 1, Some("r"));
        for cut in 0..c.len() {
            let _ = parse_rtcp_compound(&c[..cut]);
        }
        for i in 0..c.len() {
            let mut d = c.clone();
            d[i] ^= 0xff;
            let _ = parse_rtcp_compound(&d);
        }
    }
}
