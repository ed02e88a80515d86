//! Placeholder media: after `generate_av_start_delay` without media a track
//! gets 20 ms silence / black keyframes (flagged `generated`); real media
//! replaces it with continuous pts; generation resumes when media stops.
mod common;
use common::*;
use sipstream_core::generator::{GeneratorConfig, BLACK_IDR_320X240};
use sipstream_core::h264::{h264_sps_resolution, split_annex_b};
use sipstream_core::session::*;
use std::time::Instant;

fn session(t0: Instant) -> MediaSession {
    let mut cfg = config(Feedback::default());
    cfg.generator = Some(GeneratorConfig {
        start_delay: ms(500),
        video_interval: ms(1000),
    });
    MediaSession::new(t0, cfg)
}

#[test]
fn generator_starts_after_the_delay_and_stops_when_real_media_arrives() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let mut now = t0;
    let before = run_until(&mut s, &mut now, t0 + ms(490), ms(10));
    assert!(frames(&before).is_empty());
    let gen = frames(&run_until(&mut s, &mut now, t0 + ms(2000), ms(10)));
    let audio: Vec<_> = gen.iter().filter(|f| f.kind == "audio").collect();
    let video: Vec<_> = gen.iter().filter(|f| f.kind == "video").collect();
    assert_eq!(audio.len(), 76, "500..=2000 ms every 20 ms");
    assert!(audio
        .iter()
        .all(|f| f.generated && f.codec == "PCMU" && f.data == vec![0xff; 160]));
    assert_eq!(audio[0].pts_us, 500_000);
    assert!(audio
        .windows(2)
        .all(|w| w[1].pts_us - w[0].pts_us == 20_000));
    assert_eq!(video.len(), 2, "at 0.5 s and 1.5 s");
    assert!(video
        .iter()
        .all(|f| f.generated && f.keyframe && f.data == BLACK_IDR_320X240));

    // real audio arrives at 2.0 s: generated audio stops, pts continue
    let mut a = AudioSender {
        ssrc: 1,
        seq: 0,
        ts: 0,
    };
    let mut real = Vec::new();
    let mut gen_after = 0;
    for _ in 0..50 {
        s.handle_receive(now, LocalSocket::AUDIO_RTP, far(), &a.next());
        let next = now + ms(20);
        for f in frames(&run_until(&mut s, &mut now, next, ms(10))) {
            if f.kind == "audio" {
                if f.generated {
                    gen_after += 1
                } else {
                    real.push(f)
                }
            }
        }
    }
    assert!(gen_after <= 1, "{gen_after}");
    let last_gen = audio.last().unwrap().pts_us;
    assert!(
        real[0].pts_us > last_gen && real[0].pts_us - last_gen <= 40_000,
        "{} {}",
        real[0].pts_us,
        last_gen
    );
    assert!(real.windows(2).all(|w| w[1].pts_us - w[0].pts_us == 20_000));
    // media stops: generation resumes after the delay, pts still increasing
    let last_real = real.last().unwrap().pts_us;
    let until = now + ms(1000);
    let resumed = frames(&run_until(&mut s, &mut now, until, ms(10)));
    let resumed_audio: Vec<_> = resumed.iter().filter(|f| f.kind == "audio").collect();
    assert!(!resumed_audio.is_empty() && resumed_audio.iter().all(|f| f.generated));
    assert!(resumed_audio[0].pts_us > last_real);
    assert!(s.stats().audio.unwrap().generated_frames >= 76);
}

#[test]
fn black_keyframe_is_a_valid_320x240_idr() {
    let nals = split_annex_b(BLACK_IDR_320X240);
    let types: Vec<u8> = nals.iter().map(|n| n[0] & 0x1f).collect();
    assert_eq!(types, vec![7, 8, 5]);
    assert_eq!(h264_sps_resolution(nals[0]), Some((320, 240)));
}
