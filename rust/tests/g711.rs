//! G.711 tables against known values (ITU-T G.711; identical to FFmpeg's
//! pcm_mulaw / pcm_alaw decoders, checked with PyAV when the tables were written).
use sipstream_core::g711::*;

#[test]
fn ulaw_known_values() {
    assert_eq!(ULAW_TABLE[0x00], -32124);
    assert_eq!(ULAW_TABLE[0x01], -31100);
    assert_eq!(ULAW_TABLE[0x7f], 0);
    assert_eq!(ULAW_TABLE[0x80], 32124);
    assert_eq!(ULAW_TABLE[0xff], 0);
    assert_eq!(ULAW_TABLE[0x55], -716);
    assert_eq!(ULAW_TABLE[0xd5], 716);
    let weighted: i64 = ULAW_TABLE
        .iter()
        .enumerate()
        .map(|(i, &v)| i as i64 * i64::from(v))
        .sum();
    assert_eq!(weighted, 98_107_392, "whole table matches FFmpeg");
}

#[test]
fn alaw_known_values() {
    assert_eq!(ALAW_TABLE[0x00], -5504);
    assert_eq!(ALAW_TABLE[0x01], -5248);
    assert_eq!(ALAW_TABLE[0x02], -6016);
    assert_eq!(ALAW_TABLE[0x55], -8);
    assert_eq!(ALAW_TABLE[0xd5], 8);
    assert_eq!(ALAW_TABLE[0x2a], -32256);
    assert_eq!(ALAW_TABLE[0xaa], 32256);
    assert_eq!(ALAW_TABLE[0x7f], -848);
    let weighted: i64 = ALAW_TABLE
        .iter()
        .enumerate()
        .map(|(i, &v)| i as i64 * i64::from(v))
        .sum();
    assert_eq!(weighted, 100_139_008, "whole table matches FFmpeg");
}

#[test]
fn decode_to_little_endian_bytes() {
    assert_eq!(
        decode_to_le_bytes(&[0x80, 0xff], false),
        vec![0x7c, 0x7d, 0, 0]
    );
    assert_eq!(decode_ulaw(&[0x00]), vec![-32124]);
    assert_eq!(decode_alaw(&[0xd5, 0x55]), vec![8, -8]);
    // silence frames decode to (near) zero
    assert!(decode_ulaw(&[0xff; 160]).iter().all(|&v| v == 0));
    assert!(decode_alaw(&[0xd5; 160]).iter().all(|&v| v == 8));
}
