//! A/V sync over RTCP SR: with a 100 ppm audio clock drift, a 100 ppm sender
//! NTP drift and different network delays, audio and video captured at the
//! same instant get pts within 20 ms of each other for 10 minutes.
mod common;
use common::*;
use sipstream_core::rtp::build_rtp;
use sipstream_core::session::*;
use std::time::{Duration, Instant};

#[derive(Debug)]
enum Ev {
    Audio(u64),
    Video(u64),
    SrAudio(f64),
    SrVideo(f64),
}

#[test]
fn sr_based_sync_keeps_av_offset_within_20ms_over_10_minutes_with_100ppm_drift() {
    const DRIFT: f64 = 100e-6;
    const SECONDS: f64 = 600.0;
    let audio_delay = 0.020;
    let video_delay = 0.070;
    let ntp_base = 3_900_000_000.0;
    let ntp_at = |w: f64| -> u64 {
        let t = ntp_base + w * (1.0 + DRIFT);
        ((t * 4_294_967_296.0) as u128 & u128::from(u64::MAX)) as u64
    };
    // audio sample clock runs 100 ppm fast against the sender's wall clock
    let audio_ts_at = |w: f64| -> u32 { (7_000_000.0 + w * 8000.0 * (1.0 + DRIFT)) as u64 as u32 };
    let video_ts_at =
        |w: f64| -> u32 { (u64::from(u32::MAX - 900_000) + (w * 90_000.0) as u64) as u32 };

    // (arrival time, event); capture time w is recoverable from each
    let mut evs: Vec<(f64, Ev)> = Vec::new();
    let audio_packets = (SECONDS / 0.02) as u64;
    for k in 0..audio_packets {
        let w = k as f64 * 0.02 / (1.0 + DRIFT);
        evs.push((w + audio_delay + (k % 7) as f64 * 0.001, Ev::Audio(k)));
    }
    for k in 0..(SECONDS * 30.0) as u64 {
        let w = k as f64 / 30.0;
        evs.push((w + video_delay + (k % 5) as f64 * 0.002, Ev::Video(k)));
    }
    let mut w = 1.3;
    while w < SECONDS {
        evs.push((w + audio_delay, Ev::SrAudio(w)));
        evs.push((w + 0.4 + video_delay, Ev::SrVideo(w + 0.4)));
        w += 5.0;
    }
    evs.sort_by(|a, b| a.0.total_cmp(&b.0));

    let t0 = Instant::now();
    let mut cfg = config(Feedback::default());
    cfg.jitter.enabled = false;
    let mut s = MediaSession::new(t0, cfg);
    let mut audio_offset: Option<f64> = None;
    let mut worst_after_settle: f64 = 0.0;
    let mut checks = 0;
    for (arrival, ev) in evs {
        let now = t0 + Duration::from_secs_f64(arrival);
        match ev {
            Ev::Audio(k) => {
                let p = build_rtp(
                    0,
                    k as u16,
                    7_000_000u32.wrapping_add((k * 160) as u32),
                    0xaaaa,
                    false,
                    &[0xff; 160],
                );
                s.handle_receive(now, LocalSocket::AUDIO_RTP, far(), &p);
            }
            Ev::Video(k) => {
                let w = k as f64 / 30.0;
                let nal: &[u8] = if k % 30 == 0 {
                    &[0x65, 0x88, 0x80]
                } else {
                    &[0x41, 0x9a, 0x02]
                };
                let p = build_rtp(96, k as u16, video_ts_at(w), 0xbbbb, true, nal);
                s.handle_receive(now, video_rtp(), far_video(), &p);
            }
            Ev::SrAudio(w) => {
                s.handle_receive(
                    now,
                    LocalSocket {
                        kind: MediaKind::Audio,
                        rtcp: true,
                    },
                    far(),
                    &sender_report(0xaaaa, ntp_at(w), audio_ts_at(w)),
                );
            }
            Ev::SrVideo(w) => {
                s.handle_receive(
                    now,
                    video_rtcp(),
                    far_video(),
                    &sender_report(0xbbbb, ntp_at(w), video_ts_at(w)),
                );
            }
        }
        s.handle_timeout(now);
        for f in frames(&drain(&mut s)) {
            // capture instant from the RTP timestamp (sender truth)
            let capture = if f.kind == "audio" {
                f64::from(f.timestamp.wrapping_sub(7_000_000)) / (8000.0 * (1.0 + DRIFT))
            } else {
                f64::from(f.timestamp.wrapping_sub(u32::MAX - 900_000)) / 90_000.0
            };
            let offset = f.pts_us as f64 / 1e6 - capture;
            if f.kind == "audio" {
                audio_offset = Some(offset);
            } else if let Some(a) = audio_offset {
                if capture > 10.0 {
                    worst_after_settle = worst_after_settle.max((offset - a).abs());
                    checks += 1;
                }
            }
        }
    }
    assert!(checks > 15_000, "{checks}");
    assert!(
        worst_after_settle <= 0.020,
        "worst A/V offset {worst_after_settle} s"
    );
}

#[test]
fn without_sender_reports_pts_follow_arrival_anchored_rtp_time() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = AudioSender {
        ssrc: 1,
        seq: 0,
        ts: 123,
    };
    s.handle_receive(t0 + ms(500), LocalSocket::AUDIO_RTP, far(), &a.next());
    s.handle_timeout(t0 + ms(580));
    let f = frames(&drain(&mut s));
    // anchored on the arrival time (release happens after the startup wait)
    assert_eq!(f[0].pts_us, 500_000);
}

#[test]
fn sender_reports_before_the_first_rtp_put_the_first_frames_in_sync() {
    // Video leaves 150 ms after capture, audio 20 ms; both senders report
    // (SR) before their first RTP packet. Every frame, the first included,
    // is on the common clock: no arrival-anchored start to slew away.
    let t0 = Instant::now();
    let mut cfg = config(Feedback::default());
    cfg.jitter.enabled = false;
    let mut s = MediaSession::new(t0, cfg);
    let ntp_base = 3_900_000_000.0;
    let ntp_at = |w: f64| -> u64 { ((ntp_base + w) * 4_294_967_296.0) as u64 };
    let audio_ts_at = |w: f64| -> u32 { (1_000 + (w * 8000.0) as u64) as u32 };
    let video_ts_at = |w: f64| -> u32 { (5_000 + (w * 90_000.0) as u64) as u32 };
    let at = |w: f64| t0 + Duration::from_secs_f64(w);
    s.handle_receive(
        at(0.02),
        LocalSocket {
            kind: MediaKind::Audio,
            rtcp: true,
        },
        far(),
        &sender_report(0xaaaa, ntp_at(0.0), audio_ts_at(0.0)),
    );
    s.handle_receive(
        at(0.15),
        video_rtcp(),
        far_video(),
        &sender_report(0xbbbb, ntp_at(0.0), video_ts_at(0.0)),
    );
    let mut audio_pts: Vec<(f64, i64)> = Vec::new();
    let mut video_pts: Vec<(f64, i64)> = Vec::new();
    for k in 0..100u64 {
        let w = k as f64 * 0.04;
        // two audio frames per video frame
        for j in 0..2u64 {
            let wa = w + j as f64 * 0.02;
            let p = build_rtp(
                0,
                (k * 2 + j) as u16,
                audio_ts_at(wa),
                0xaaaa,
                false,
                &[0xff; 160],
            );
            s.handle_receive(at(wa + 0.02), LocalSocket::AUDIO_RTP, far(), &p);
        }
        let nal: &[u8] = if k % 25 == 0 {
            &[0x65, 0x88, 0x80]
        } else {
            &[0x41, 0x9a, 0x02]
        };
        let p = build_rtp(96, k as u16, video_ts_at(w), 0xbbbb, true, nal);
        s.handle_receive(at(w + 0.15), video_rtp(), far_video(), &p);
        s.handle_timeout(at(w + 0.15));
        for f in frames(&drain(&mut s)) {
            if f.kind == "audio" {
                let capture = f64::from(f.timestamp - 1_000) / 8000.0;
                audio_pts.push((capture, f.pts_us));
            } else {
                let capture = f64::from(f.timestamp - 5_000) / 90_000.0;
                video_pts.push((capture, f.pts_us));
            }
        }
    }
    assert!(audio_pts.len() > 150 && video_pts.len() > 90);
    // pts - capture is the same constant for both tracks, from the first frame
    let base = audio_pts[0].1 as f64 / 1e6 - audio_pts[0].0;
    for (capture, pts) in audio_pts.iter().chain(video_pts.iter()) {
        let offset = *pts as f64 / 1e6 - capture - base;
        assert!(offset.abs() < 0.001, "capture {capture}: {offset} s off");
    }
    let stats = s.stats();
    assert_eq!(stats.audio.map(|t| t.sender_reports), Some(1));
    assert_eq!(stats.video.map(|t| t.sender_reports), Some(1));
}
