//! RTCP sender reports of the engine's viewers, WebRTC and plain RTP alike:
//! a player maps each track's RTP time onto one clock with them (A/V sync).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_EPOCH: u64 = 2_208_988_800;

/// `wall` as NTP (seconds, fraction), RFC 3550 §4.
pub fn ntp_time(wall: SystemTime) -> (u32, u32) {
    let wall = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = (wall.as_secs() + NTP_EPOCH) as u32;
    let frac = ((u64::from(wall.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    (secs, frac)
}

/// A track's RTP time now: its last packet's timestamp, extrapolated by the
/// time since that packet entered the hub (the call's receive path already
/// put both tracks on its common A/V clock).
pub fn rtp_time_at((timestamp, arrival): (u32, Instant), now: Instant, clock: u32) -> u32 {
    let since = now.saturating_duration_since(arrival).as_secs_f64();
    timestamp.wrapping_add((since * f64::from(clock)) as u32)
}

/// An RTCP compound packet: a sender report with no report block, and an
/// SDES with the CNAME (RFC 3550 §6.4.1, §6.5).
pub fn sender_report(
    ssrc: u32,
    (ntp_secs, ntp_frac): (u32, u32),
    rtp_time: u32,
    packets: u32,
    octets: u32,
    cname: &str,
) -> Vec<u8> {
    let mut rtcp = Vec::with_capacity(64);
    // SR: V=2, RC=0, PT=200, length 6 words
    rtcp.extend([0x80, 200, 0, 6]);
    rtcp.extend(ssrc.to_be_bytes());
    rtcp.extend(ntp_secs.to_be_bytes());
    rtcp.extend(ntp_frac.to_be_bytes());
    rtcp.extend(rtp_time.to_be_bytes());
    rtcp.extend(packets.to_be_bytes());
    rtcp.extend(octets.to_be_bytes());
    // SDES: one chunk, CNAME, null-terminated, padded to 32 bits
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = 4 + 2 + cname.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    rtcp.extend([0x81, 202]);
    rtcp.extend(((padded / 4) as u16).to_be_bytes());
    rtcp.extend(ssrc.to_be_bytes());
    rtcp.extend([1, cname.len() as u8]);
    rtcp.extend(cname);
    rtcp.extend(std::iter::repeat_n(0, padded - chunk + 1));
    rtcp
}
