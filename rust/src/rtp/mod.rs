//! RTP (RFC 3550) packets and the RTCP feedback messages a receiver sends.

mod packet;
pub mod rtcp;

pub use packet::{build_rtp, RtpPacket};
pub use rtcp::{
    build_fir, build_pli, build_receiver_report, is_rtcp, parse_rtcp, parse_rtcp_compound, NtpTime,
    ReportBlock, RtcpInfo, RtcpPacket, SenderInfo,
};

/// Big-endian u16 at `at`, `None` when out of range.
pub(crate) fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at + 2)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// Big-endian u32 at `at`, `None` when out of range.
pub(crate) fn be32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}
