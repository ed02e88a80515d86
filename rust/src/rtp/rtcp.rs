//! RTCP: demultiplexing (RFC 5761), PLI (RFC 4585), FIR (RFC 5104), empty
//! receiver reports, and a compound-packet walker.

use super::{be16, be32};
use crate::error::RtpError;

const PT_RR: u8 = 201;
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

/// Walk a compound RTCP packet.
pub fn parse_rtcp(data: &[u8]) -> Result<Vec<RtcpInfo>, RtpError> {
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
        let pt = data.get(pos + 1).copied().ok_or(RtpError::TooShort {
            what: "RTCP header",
            need: pos + 4,
            have: data.len(),
        })?;
        let words = be16(data, pos + 2).ok_or(RtpError::TooShort {
            what: "RTCP header",
            need: pos + 4,
            have: data.len(),
        })?;
        let size = (usize::from(words) + 1) * 4;
        let end = pos + size;
        if end > data.len() {
            return Err(RtpError::TooShort {
                what: "RTCP packet",
                need: end,
                have: data.len(),
            });
        }
        let packet = data.get(pos..end).unwrap_or(&[]);
        let fmt = b0 & 0x1f;
        let media_ssrc = if pt == PT_RTPFB || pt == PT_PSFB {
            let header_ssrc = be32(packet, 8).ok_or(RtpError::TooShort {
                what: "RTCP feedback packet",
                need: pos + 12,
                have: end,
            })?;
            if pt == PT_PSFB && fmt == FMT_FIR && header_ssrc == 0 {
                be32(packet, 12).unwrap_or(0)
            } else {
                header_ssrc
            }
        } else {
            0
        };
        out.push(RtcpInfo {
            packet_type: pt,
            fmt,
            media_ssrc,
        });
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
}
