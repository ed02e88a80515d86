//! Sequence parameter set → picture size (ITU-T H.264 §7.3.2.1.1).

/// Reads bits MSB first from an RBSP (emulation prevention already removed).
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Unsigned exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0u32;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        // zeros <= 31, so (1 << zeros) - 1 + rest fits in u64; reject > u32
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    /// Signed exp-Golomb.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Remove emulation prevention bytes (00 00 03 → 00 00).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
    let mut last = 8i64;
    let mut next = 8i64;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// `(width, height)` from an SPS NAL unit (with its header byte), cropping
/// applied; `None` when it is not an SPS or cannot be parsed.
pub fn h264_sps_resolution(sps: &[u8]) -> Option<(u32, u32)> {
    if sps.first()? & 0x1f != super::NAL_SPS {
        return None;
    }
    let rbsp = unescape(sps.get(1..)?);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)?;
    let _constraints = r.bits(8)?;
    let _level = r.bits(8)?;
    let _sps_id = r.ue()?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()? == 1;
        }
        let _bit_depth_luma = r.ue()?;
        let _bit_depth_chroma = r.ue()?;
        let _qpprime_y_zero_transform_bypass = r.bit()?;
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let _log2_max_frame_num = r.ue()?;
    match r.ue()? {
        0 => {
            let _log2_max_poc_lsb = r.ue()?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.bit()?;
            let _offset_for_non_ref_pic = r.se()?;
            let _offset_for_top_to_bottom_field = r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps_allowed = r.bit()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        let _mb_adaptive_frame_field = r.bit()?;
    }
    let _direct_8x8_inference = r.bit()?;
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        crop_l = u64::from(r.ue()?);
        crop_r = u64::from(r.ue()?);
        crop_t = u64::from(r.ue()?);
        crop_b = u64::from(r.ue()?);
    }
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (sub_w, sub_h) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (crop_unit_x, crop_unit_y) = if chroma_array_type == 0 {
        (1, 2 - frame_mbs_only)
    } else {
        (sub_w, sub_h * (2 - frame_mbs_only))
    };
    let width = (width_mbs * 16).checked_sub(crop_unit_x * (crop_l + crop_r))?;
    let height = ((2 - frame_mbs_only) * height_map_units * 16)
        .checked_sub(crop_unit_y * (crop_t + crop_b))?;
    if width == 0 || height == 0 {
        return None;
    }
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // SPS NAL units produced by x264 (via FFmpeg) for the given sizes.
    #[test]
    fn x264_baseline_640x480() {
        assert_eq!(
            h264_sps_resolution(&hex("6742c01ed900a03da10000030001000003003c0f162e48")),
            Some((640, 480))
        );
    }

    #[test]
    fn x264_high_1920x1080_is_cropped_from_1088() {
        assert_eq!(
            h264_sps_resolution(&hex("67640028acd940780227e584000003000400000300f03c60c658")),
            Some((1920, 1080))
        );
    }

    #[test]
    fn x264_main_1280x720() {
        assert_eq!(
            h264_sps_resolution(&hex("674d401feca02802dd08000003000800000301e078c18cb0")),
            Some((1280, 720))
        );
    }

    #[test]
    fn x264_high_odd_size_1918x1078_crops_both_axes() {
        assert_eq!(
            h264_sps_resolution(&hex("67640028acd940780227a9a10000030001000003003c0f183196")),
            Some((1918, 1078))
        );
    }

    #[test]
    fn x264_high444_chroma_format_3() {
        assert_eq!(
            h264_sps_resolution(&hex("67f4000d919b282c12d080000003008000001e078a14cb")),
            Some((352, 288))
        );
    }

    #[test]
    fn x264_interlaced_720x576_uses_field_map_units() {
        assert_eq!(
            h264_sps_resolution(&hex("6764001facd940b424d080000003008000001e0f8b16cb")),
            Some((720, 576))
        );
    }

    /// MSB-first bit writer for synthetic SPS.
    struct W {
        bytes: Vec<u8>,
        n: usize,
    }
    impl W {
        fn bit(&mut self, b: u32) {
            if self.n.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if b != 0 {
                *self.bytes.last_mut().unwrap() |= 0x80 >> (self.n % 8);
            }
            self.n += 1;
        }
        fn bits(&mut self, v: u32, n: u32) {
            for i in (0..n).rev() {
                self.bit((v >> i) & 1);
            }
        }
        fn ue(&mut self, v: u32) {
            let x = v + 1;
            let len = 32 - x.leading_zeros();
            self.bits(0, len - 1);
            self.bits(x, len);
        }
        fn se(&mut self, v: i32) {
            self.ue(if v > 0 {
                (2 * v - 1) as u32
            } else {
                (-2 * v) as u32
            });
        }
    }

    #[test]
    fn high_profile_with_explicit_scaling_lists_and_poc_type_1() {
        let mut w = W {
            bytes: vec![],
            n: 0,
        };
        w.bits(100, 8);
        w.bits(0, 8);
        w.bits(40, 8);
        w.ue(0); // sps id
        w.ue(1); // chroma 4:2:0
        w.ue(0);
        w.ue(0);
        w.bit(0);
        w.bit(1); // seq_scaling_matrix_present
        for i in 0..8 {
            w.bit(1);
            let size = if i < 6 { 16 } else { 64 };
            for k in 0..size {
                w.se(if k % 3 == 0 { 5 } else { -2 });
            }
        }
        w.ue(4); // log2_max_frame_num
        w.ue(1); // poc type 1
        w.bit(0);
        w.se(-3);
        w.se(2);
        w.ue(2);
        w.se(1);
        w.se(-1);
        w.ue(4); // ref frames
        w.bit(0);
        w.ue(79); // 1280
        w.ue(44); // 720
        w.bit(1);
        w.bit(1);
        w.bit(0); // no cropping
        w.bit(0); // no vui
        w.bit(1); // stop bit
        let mut nal = vec![0x67];
        // add emulation prevention where needed
        let mut zeros = 0;
        for &b in &w.bytes {
            if zeros >= 2 && b <= 3 {
                nal.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            nal.push(b);
        }
        assert_eq!(h264_sps_resolution(&nal), Some((1280, 720)));
    }

    #[test]
    fn non_sps_and_garbage_return_none() {
        assert_eq!(h264_sps_resolution(&[]), None);
        assert_eq!(h264_sps_resolution(&[0x68, 0xce, 0x3c, 0x80]), None);
        assert_eq!(h264_sps_resolution(&[0x67]), None);
        assert_eq!(
            h264_sps_resolution(&[0x67, 0x42, 0, 0x1e, 0, 0, 0, 0, 0, 0]),
            None
        );
        let good = hex("67640028acd940780227e584000003000400000300f03c60c658");
        for cut in 0..good.len() {
            let _ = h264_sps_resolution(&good[..cut]);
        }
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut v: Vec<u8> = (0..(x % 30) as usize)
                .map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            if let Some(f) = v.first_mut() {
                *f = 0x67;
            }
            let _ = h264_sps_resolution(&v);
        }
    }
}
