//! H.264 over RTP (RFC 6184): depacketizer to Annex-B access units,
//! packetizer from Annex-B, and SPS resolution parsing.

mod depacketizer;
mod packetizer;
mod sps;

pub use depacketizer::{AccessUnit, H264Depacketizer};
pub use packetizer::{find_leading_nal, h264_packetize, split_annex_b};
pub use sps::h264_sps_resolution;

/// NAL unit types used here.
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_STAP_A: u8 = 24;
pub const NAL_FU_A: u8 = 28;

/// Annex-B start code written before every NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];
