//! sipstream core: sans-IO SIP, digest auth, SDP, RTP/RTCP, H.264 and the
//! media receive path. Plain Rust; the optional `python` feature adds the
//! PyO3 bindings (`sipstream._core`).

pub mod auth;
pub mod error;
pub mod g711;
pub mod generator;
pub mod h264;
pub mod io;
pub mod jitter;
pub mod media;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod sip;
pub mod sync;
pub mod webrtc;

#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
mod python_webrtc;

pub use error::{AuthError, RtpError, SdpError, SipError};
pub use h264::{h264_packetize, h264_sps_resolution, AccessUnit, H264Depacketizer};
pub use media::{Frame, MediaReceiver};
pub use rtp::{
    build_fir, build_pli, build_receiver_report, build_rtp, is_rtcp, parse_rtcp, RtcpInfo,
    RtpPacket,
};
pub use sdp::{Codec, MediaDescription, SessionDescription};
pub use session::{
    Event, Feedback, LocalSocket, MediaKind, MediaSession, Output, PayloadType, SessionConfig,
    SessionStats, TrackConfig, TrackStats, Transmit,
};
pub use sip::{NameAddr, SipMessage, SipUri, StartLine, Via};

/// Crate version, exported to Python as `__version__`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
