//! Annex-B access unit → RTP payloads (single NAL unit or FU-A).

use super::NAL_FU_A;

/// Split an Annex-B byte stream into NAL units (start codes and trailing
/// zero bytes removed). Input without any start code is one NAL unit.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // offsets just after each 00 00 01
    let mut i = 0;
    while i + 3 <= data.len() {
        if data.get(i..i + 3) == Some(&[0, 0, 1]) {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    if starts.is_empty() {
        return if data.is_empty() {
            Vec::new()
        } else {
            vec![data]
        };
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        let mut nal = data.get(s..end).unwrap_or(&[]);
        while let Some((&0, rest)) = nal.split_last() {
            nal = rest;
        }
        if !nal.is_empty() {
            out.push(nal);
        }
    }
    out
}

/// RTP payloads for one access unit, in order: a NAL unit that fits in
/// `mtu` bytes is sent whole, a larger one as FU-A fragments of at most
/// `mtu` bytes. The caller sets the marker bit on the last payload.
pub fn h264_packetize(access_unit: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let mtu = mtu.max(3); // an FU-A needs 2 header bytes + 1 data byte
    let mut out = Vec::new();
    for nal in split_annex_b(access_unit) {
        if nal.len() <= mtu {
            out.push(nal.to_vec());
            continue;
        }
        let Some((&header, body)) = nal.split_first() else {
            continue;
        };
        let indicator = (header & 0xe0) | NAL_FU_A;
        let typ = header & 0x1f;
        let chunks: Vec<&[u8]> = body.chunks(mtu - 2).collect();
        let last = chunks.len().saturating_sub(1);
        for (k, chunk) in chunks.into_iter().enumerate() {
            let mut fu_header = typ;
            if k == 0 {
                fu_header |= 0x80;
            }
            if k == last {
                fu_header |= 0x40;
            }
            let mut p = Vec::with_capacity(chunk.len() + 2);
            p.push(indicator);
            p.push(fu_header);
            p.extend_from_slice(chunk);
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let d = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 4,
        ];
        assert_eq!(
            split_annex_b(&d),
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4][..]]
        );
        assert_eq!(split_annex_b(&[0x41, 9]), vec![&[0x41, 9][..]]);
        assert!(split_annex_b(&[]).is_empty());
        assert!(split_annex_b(&[0, 0, 1]).is_empty());
    }

    #[test]
    fn small_nals_are_single_and_large_ones_fragmented() {
        let mut au = vec![0, 0, 0, 1, 0x67, 0x42];
        au.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        au.extend((0..2500u32).map(|i| (i % 251) as u8 + 1));
        let p = h264_packetize(&au, 1200);
        assert_eq!(p[0], vec![0x67, 0x42]);
        assert_eq!(p.len(), 1 + 3);
        assert_eq!(&p[1][..2], &[0x7c, 0x85]);
        assert_eq!(&p[2][..2], &[0x7c, 0x05]);
        assert_eq!(&p[3][..2], &[0x7c, 0x45]);
        assert!(p.iter().all(|x| x.len() <= 1200));
        assert_eq!(p[1..].iter().map(|x| x.len() - 2).sum::<usize>(), 2500);
    }

    #[test]
    fn tiny_mtu_is_clamped() {
        let p = h264_packetize(&[0, 0, 1, 0x65, 1, 2, 3], 0);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|x| x.len() == 3));
    }
}

/// The first NAL unit of type `nal_type` among those before the access
/// unit's first slice (parameter sets and SEI precede slices, RFC 6184 /
/// H.264 §7.4.1.2.3), without scanning the slice data.
pub fn find_leading_nal(data: &[u8], nal_type: u8) -> Option<&[u8]> {
    let mut pos = next_nal_start(data, 0)?;
    loop {
        let next = next_nal_start(data, pos);
        let header = *data.get(pos)?;
        let kind = header & 0x1f;
        if kind == nal_type {
            let end = next.map_or(data.len(), |n| n - 3);
            let mut nal = data.get(pos..end)?;
            while let Some((&0, rest)) = nal.split_last() {
                nal = rest;
            }
            return Some(nal);
        }
        if (1..=5).contains(&kind) {
            return None;
        }
        pos = next?;
    }
}

/// Offset just after the next `00 00 01` at or after `from`.
fn next_nal_start(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(k) = data.get(i..)?.iter().position(|&b| b == 1) {
        let one = i + k;
        if one >= 2 && data.get(one - 2..one) == Some(&[0, 0]) {
            return Some(one + 1);
        }
        i = one + 1;
    }
    None
}

#[cfg(test)]
mod leading_nal_tests {
    use super::*;

    #[test]
    fn finds_the_sps_before_the_slice_and_stops_at_the_slice() {
        let au = [
            0, 0, 0, 1, 0x67, 0x42, 0, 0x1e, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88, 0, 0, 1,
            0x67, 9,
        ];
        assert_eq!(find_leading_nal(&au, 7), Some(&[0x67, 0x42, 0, 0x1e][..]));
        assert_eq!(find_leading_nal(&au, 8), Some(&[0x68, 0xce][..]));
        // the 0x67 after the slice is slice data, not an SPS of this AU
        assert_eq!(find_leading_nal(&au[12..], 7), None);
        assert_eq!(find_leading_nal(&[0, 0, 1, 0x41, 1, 2], 7), None);
        assert_eq!(find_leading_nal(&[], 7), None);
        assert_eq!(find_leading_nal(&[1, 1, 0, 1], 7), None);
        assert_eq!(find_leading_nal(&[0, 0, 1], 7), None);
    }
}
