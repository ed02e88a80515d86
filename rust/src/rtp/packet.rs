//! RTP header parsing and building.

use super::{be16, be32};
use crate::error::RtpError;

/// A parsed RTP packet: CSRCs kept, header extension skipped, padding removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrcs: Vec<u32>,
    pub payload: Vec<u8>,
}

fn short(what: &'static str, need: usize, have: usize) -> RtpError {
    RtpError::TooShort { what, need, have }
}

impl RtpPacket {
    pub fn parse(data: &[u8]) -> Result<RtpPacket, RtpError> {
        Self::parse_into(data, Vec::new())
    }

    /// [`parse`](Self::parse) with the payload copied into `buffer` (cleared
    /// first): a receive loop hands back buffers of packets it is done with,
    /// so that it does not allocate per packet.
    pub fn parse_into(data: &[u8], mut buffer: Vec<u8>) -> Result<RtpPacket, RtpError> {
        let len = data.len();
        if len == 0 {
            return Err(RtpError::Empty);
        }
        let b0 = data.first().copied().unwrap_or(0);
        let b1 = data
            .get(1)
            .copied()
            .ok_or_else(|| short("RTP header", 12, len))?;
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion { offset: 0, version });
        }
        let padding = b0 & 0x20 != 0;
        let extension = b0 & 0x10 != 0;
        let cc = usize::from(b0 & 0x0f);
        let sequence = be16(data, 2).ok_or_else(|| short("RTP header", 12, len))?;
        let timestamp = be32(data, 4).ok_or_else(|| short("RTP header", 12, len))?;
        let ssrc = be32(data, 8).ok_or_else(|| short("RTP header", 12, len))?;
        let mut pos = 12;
        let mut csrcs = Vec::with_capacity(cc);
        for _ in 0..cc {
            csrcs.push(be32(data, pos).ok_or_else(|| short("RTP CSRC list", pos + 4, len))?);
            pos += 4;
        }
        if extension {
            let words =
                be16(data, pos + 2).ok_or_else(|| short("RTP header extension", pos + 4, len))?;
            pos += 4 + usize::from(words) * 4;
            if pos > len {
                return Err(short("RTP header extension", pos, len));
            }
        }
        let mut end = len;
        if padding {
            let pad = usize::from(data.last().copied().unwrap_or(0));
            let available = len - pos;
            if pad == 0 || pad > available {
                return Err(RtpError::BadPadding {
                    padding: pad,
                    available,
                });
            }
            end = len - pad;
        }
        Ok(RtpPacket {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7f,
            sequence,
            timestamp,
            ssrc,
            csrcs,
            payload: {
                buffer.clear();
                buffer.extend_from_slice(data.get(pos..end).unwrap_or(&[]));
                buffer
            },
        })
    }

    /// Serialize (no extension, no padding).
    pub fn to_bytes(&self) -> Vec<u8> {
        let cc = self.csrcs.len().min(15);
        let mut out = Vec::with_capacity(12 + cc * 4 + self.payload.len());
        // cc <= 15 so it fits in the low nibble
        out.push(0x80 | cc as u8);
        out.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for c in self.csrcs.iter().take(cc) {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }
}

/// An RTP packet with a 12-byte header.
pub fn build_rtp(
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    payload: &[u8],
) -> Vec<u8> {
    RtpPacket {
        marker,
        payload_type,
        sequence,
        timestamp,
        ssrc,
        csrcs: Vec::new(),
        payload: payload.to_vec(),
    }
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse_round_trip() {
        let data = build_rtp(96, 65535, 0xdead_beef, 0x1234_5678, true, b"\x65\x88");
        assert_eq!(&data[..2], &[0x80, 0xe0]);
        let p = RtpPacket::parse(&data).unwrap();
        assert_eq!((p.marker, p.payload_type, p.sequence), (true, 96, 65535));
        assert_eq!((p.timestamp, p.ssrc), (0xdead_beef, 0x1234_5678));
        assert_eq!(p.payload, b"\x65\x88");
        assert_eq!(p.to_bytes(), data);
    }

    #[test]
    fn csrcs_extension_and_padding_are_handled() {
        let mut d = vec![0xb2, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        d.extend_from_slice(&[0, 0, 0, 0xa, 0, 0, 0, 0xb]); // 2 CSRCs
        d.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one-byte ext, 1 word
        d.extend_from_slice(b"payload");
        d.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
        let p = RtpPacket::parse(&d).unwrap();
        assert_eq!(p.csrcs, vec![0xa, 0xb]);
        assert_eq!(p.payload, b"payload");
        assert_eq!(p.payload_type, 0);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(RtpPacket::parse(&[]), Err(RtpError::Empty));
        assert!(matches!(
            RtpPacket::parse(&[0x80, 0, 0]),
            Err(RtpError::TooShort { .. })
        ));
        assert!(matches!(
            RtpPacket::parse(&[0x40; 12]),
            Err(RtpError::BadVersion { version: 1, .. })
        ));
        assert!(matches!(
            RtpPacket::parse(&[0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RtpError::TooShort { .. })
        ));
        let mut ext = vec![0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0, 9];
        ext.extend_from_slice(&[0; 8]);
        assert!(matches!(
            RtpPacket::parse(&ext),
            Err(RtpError::TooShort { .. })
        ));
        let mut pad = vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 9];
        assert!(matches!(
            RtpPacket::parse(&pad),
            Err(RtpError::BadPadding { .. })
        ));
        pad[13] = 0;
        assert!(matches!(
            RtpPacket::parse(&pad),
            Err(RtpError::BadPadding { .. })
        ));
    }

    #[test]
    fn every_truncation_and_random_bytes_never_panic() {
        let mut d = vec![0xbf, 0x60];
        d.extend_from_slice(&[7; 100]);
        for cut in 0..d.len() {
            let _ = RtpPacket::parse(&d[..cut]);
        }
        let mut x: u64 = 88172645463325252;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            let _ = RtpPacket::parse(&bytes);
        }
    }
}
