//! ICE-TCP's RFC 4571 de-framer on arbitrary byte streams: it never panics,
//! never holds more than one frame, delivers only non-empty frames within
//! its limit, and how the stream is cut into reads does not change them.
//! The input is [max_frame (2 bytes), read sizes seed (1 byte), stream...].
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipstream_core::webrtc::tcp::Deframer;

fuzz_target!(|data: &[u8]| {
    let [hi, lo, seed, stream @ ..] = data else {
        return;
    };
    let max_frame = usize::from(u16::from_be_bytes([*hi, *lo]));
    let mut whole = Vec::new();
    Deframer::new(max_frame).push(stream, |f| whole.push(f.to_vec()));
    assert!(whole.iter().all(|f| !f.is_empty() && f.len() <= max_frame));

    // the same stream in reads of 1 to 256 bytes, sizes from the seed
    let mut d = Deframer::new(max_frame);
    let mut chunked = Vec::new();
    let mut size = usize::from(*seed);
    let mut rest = stream;
    while !rest.is_empty() {
        size = (size * 31 + 7) % 256;
        let (read, tail) = rest.split_at((size + 1).min(rest.len()));
        d.push(read, |f| chunked.push(f.to_vec()));
        assert!(d.buffered() <= max_frame);
        rest = tail;
    }
    assert_eq!(whole, chunked);
});
