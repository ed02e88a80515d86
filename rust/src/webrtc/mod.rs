//! WebRTC playback in the Rust core: each stream's frames are packetized
//! once ([`feed`]) and sent to all its viewers by one engine thread on one
//! UDP port ([`engine`]), each viewer a str0m `Rtc` ([`viewer`]).

pub mod engine;
pub mod feed;
pub mod plain;
pub mod sr;
pub mod srtp;
pub mod tcp;
pub mod viewer;

pub use engine::{
    demux, Demuxed, Engine, EngineEvent, EngineStats, Route, Routes, Timeouts, ViewerInfo,
};
pub use feed::{FeedPacket, HubStats, StreamFeed};
pub use viewer::StreamCodecs;
