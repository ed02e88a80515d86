//! Placeholder media for a negotiated track that has not started or has
//! stopped: 20 ms silence frames for audio and a black H.264 keyframe at a
//! low rate for video, flagged `generated`.

use std::time::Duration;

/// A black 320x240 H.264 constrained-baseline IDR access unit (SPS, PPS,
/// IDR slice; Annex-B), encoded once with x264 via PyAV; FFmpeg decodes it.
pub const BLACK_IDR_320X240: &[u8] = include_bytes!("black_320x240.h264");

/// Opus TOC 0xF8 (CELT FB 20 ms, mono, one frame) with a minimal body: a
/// silence frame decoders accept.
pub const OPUS_SILENCE: &[u8] = &[0xf8, 0xff, 0xfe];

/// Audio frame period of generated audio.
pub const AUDIO_PERIOD: Duration = Duration::from_millis(20);

/// When and how fast to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// `generate_av_start_delay`: a track silent this long gets generated frames.
    pub start_delay: Duration,
    /// Interval between generated black keyframes.
    pub video_interval: Duration,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            start_delay: Duration::from_millis(1000),
            video_interval: Duration::from_millis(1000),
        }
    }
}

/// 20 ms of silence for an audio codec; `None` when we cannot make one.
pub fn silence_frame(codec: &str, clock_rate: u32) -> Option<Vec<u8>> {
    let samples = (clock_rate / 50) as usize;
    match codec {
        "PCMU" => Some(vec![0xff; samples]),
        "PCMA" => Some(vec![0xd5; samples]),
        "opus" => Some(OPUS_SILENCE.to_vec()),
        "L16" => Some(vec![0; samples * 2]),
        _ => None,
    }
}
