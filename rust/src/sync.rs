//! A/V sync: maps each track's RTP timestamps onto one session clock
//! (microseconds since the session started). Before the first RTCP SR a
//! track is anchored on arrival time; after it, on the sender's NTP clock,
//! which is common to its audio and video. Mapping changes (new SR, drift)
//! are slewed in, never jumped backwards, so `pts_us` is monotonic per track.

use crate::rtp::NtpTime;

/// 32-bit RTP timestamps → a 64-bit count following the signed difference
/// to the previous one (wraps and slightly reordered frames both work).
#[derive(Debug, Clone, Copy, Default)]
pub struct TimestampUnwrapper {
    last: Option<(u32, i64)>,
}

impl TimestampUnwrapper {
    pub fn unwrap(&mut self, ts: u32) -> i64 {
        let ext = match self.last {
            // reinterpreting the wrapped difference as signed is the point
            Some((raw, ext)) => ext + i64::from(ts.wrapping_sub(raw) as i32),
            None => i64::from(ts),
        };
        self.last = Some((ts, ext));
        ext
    }

    /// Unwrap without remembering (for a timestamp seen in an SR).
    pub fn peek(&self, ts: u32) -> i64 {
        match self.last {
            Some((raw, ext)) => ext + i64::from(ts.wrapping_sub(raw) as i32),
            None => i64::from(ts),
        }
    }
}

/// NTP 32.32 → microseconds (as f64; exact enough for sync).
pub fn ntp_to_us(ntp: NtpTime) -> f64 {
    let secs = (ntp >> 32) as f64;
    let frac = (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0;
    (secs + frac) * 1e6
}

/// How fast a mapping change is absorbed: this fraction of elapsed media
/// time (10%: a 50 ms correction is spread over 0.5 s of media).
const SLEW: f64 = 0.1;
/// Corrections larger than this are not slewed (a restart, a bogus SR):
/// the new mapping applies at once, clamped to stay monotonic.
const MAX_SLEW_US: f64 = 2_000_000.0;

#[derive(Debug, Clone, Copy)]
struct SrPoint {
    ext_ts: i64,
    ntp_us: f64,
}

/// The media clock of one track (kind), across SSRC changes.
#[derive(Debug, Clone)]
pub struct TrackClock {
    clock_rate: f64,
    unwrap: TimestampUnwrapper,
    /// Arrival anchor: (extended RTP ts, session µs).
    anchor: Option<(i64, f64)>,
    sr: Option<SrPoint>,
    /// Added to the mapping; slewed towards 0.
    correction: f64,
    last_ext: Option<i64>,
    last_pts: Option<i64>,
}

impl TrackClock {
    pub fn new(clock_rate: u32) -> Self {
        TrackClock {
            clock_rate: f64::from(clock_rate.max(1)),
            unwrap: TimestampUnwrapper::default(),
            anchor: None,
            sr: None,
            correction: 0.0,
            last_ext: None,
            last_pts: None,
        }
    }

    fn target(&self, ext: i64, ntp_offset_us: Option<f64>) -> Option<f64> {
        if let (Some(sr), Some(off)) = (self.sr, ntp_offset_us) {
            return Some(sr.ntp_us + off + (ext - sr.ext_ts) as f64 * 1e6 / self.clock_rate);
        }
        let (a_ts, a_us) = self.anchor?;
        Some(a_us + (ext - a_ts) as f64 * 1e6 / self.clock_rate)
    }

    /// A new source (SSRC change, or a clock-rate change): its timestamps
    /// start over, so anchor it again on arrival. The output stays monotonic.
    pub fn restart(&mut self, clock_rate: u32) {
        self.clock_rate = f64::from(clock_rate.max(1));
        self.unwrap = TimestampUnwrapper::default();
        self.anchor = None;
        self.sr = None;
        self.correction = 0.0;
        self.last_ext = None;
    }

    /// An RTCP SR for this track's current source: `ntp` is the sender's
    /// wall clock at `rtp_ts`. `ntp_offset_us` is the session's sender-NTP
    /// → session-clock offset (already set by the caller for the first SR).
    pub fn on_sender_report(&mut self, ntp: NtpTime, rtp_ts: u32, ntp_offset_us: Option<f64>) {
        let point = SrPoint {
            ext_ts: self.unwrap.peek(rtp_ts),
            ntp_us: ntp_to_us(ntp),
        };
        let before = self.last_ext.and_then(|e| {
            self.target(e, ntp_offset_us)
                .map(|t| (e, t + self.correction))
        });
        self.sr = Some(point);
        if let Some((e, old)) = before {
            if let Some(new) = self.target(e, ntp_offset_us) {
                self.correction = old - new;
                if self.correction.abs() > MAX_SLEW_US {
                    self.correction = 0.0;
                }
            }
        }
    }

    /// Presentation time of a frame with RTP timestamp `ts` arriving at
    /// `arrival_us` on the session clock.
    pub fn pts(&mut self, ts: u32, arrival_us: f64, ntp_offset_us: Option<f64>) -> i64 {
        let ext = self.unwrap.unwrap(ts);
        if self.anchor.is_none() {
            // continue after the previous source / generated frames
            let start = self
                .last_pts
                .map_or(arrival_us, |p| arrival_us.max(p as f64 + 1.0));
            self.anchor = Some((ext, start));
        }
        if let Some(last) = self.last_ext {
            let elapsed = (ext - last) as f64 * 1e6 / self.clock_rate;
            if elapsed > 0.0 {
                let step = elapsed * SLEW;
                self.correction -= self.correction.clamp(-step, step);
            }
        }
        if self.last_ext.is_none_or(|l| ext > l) {
            self.last_ext = Some(ext);
        }
        let target = self.target(ext, ntp_offset_us).unwrap_or(arrival_us);
        let mut pts = (target + self.correction).round() as i64;
        if let Some(last) = self.last_pts {
            if pts <= last {
                pts = last + 1;
            }
        }
        self.last_pts = Some(pts);
        pts
    }

    /// A generated frame took `pts`: later frames must not go before it.
    pub fn note_generated(&mut self, pts: i64) {
        if self.last_pts.is_none_or(|l| pts > l) {
            self.last_pts = Some(pts);
        }
    }

    pub fn last_pts(&self) -> Option<i64> {
        self.last_pts
    }

    pub fn has_sender_report(&self) -> bool {
        self.sr.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwrapper_follows_wrap_both_ways() {
        let mut u = TimestampUnwrapper::default();
        assert_eq!(u.unwrap(u32::MAX - 10), i64::from(u32::MAX) - 10);
        assert_eq!(u.unwrap(5), i64::from(u32::MAX) + 6);
        assert_eq!(u.unwrap(u32::MAX), i64::from(u32::MAX));
    }

    #[test]
    fn arrival_anchor_then_sr_is_slewed_and_monotonic() {
        let mut c = TrackClock::new(8000);
        assert_eq!(c.pts(1000, 5_000.0, None), 5_000);
        assert_eq!(c.pts(1160, 25_000.0, None), 25_000);
        // SR says ts 1160 was at NTP 10 s; offset maps NTP 10 s to 0.1 s
        c.on_sender_report(10 << 32, 1160, Some(100_000.0 - 10e6));
        let mut last = 25_000;
        for k in 2..200u32 {
            let p = c.pts(1000 + 160 * k, 0.0, Some(100_000.0 - 10e6));
            assert!(p > last);
            last = p;
        }
        // converged to the SR mapping: ts 1000+160*199 → 0.1 s + 198*20 ms
        assert!((last - (100_000 + 198 * 20_000)).abs() < 1_000, "{last}");
    }
}
