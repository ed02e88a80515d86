//! G.711 decoding (ITU-T G.711): µ-law and A-law bytes → 16-bit linear PCM.
//! The tables are computed at compile time with the reference expansion
//! and match FFmpeg's `pcm_mulaw`/`pcm_alaw` decoders bit for bit.

const fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    // magnitude <= 32124, fits i16
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    // magnitude <= 32256, fits i16
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        // i < 256 so the cast is exact
        t[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    t
}

/// µ-law byte → linear sample.
pub static ULAW_TABLE: [i16; 256] = table(false);
/// A-law byte → linear sample.
pub static ALAW_TABLE: [i16; 256] = table(true);

/// Decode µ-law (PCMU) to samples.
pub fn decode_ulaw(data: &[u8]) -> Vec<i16> {
    data.iter().map(|&b| ULAW_TABLE[usize::from(b)]).collect()
}

/// Decode A-law (PCMA) to samples.
pub fn decode_alaw(data: &[u8]) -> Vec<i16> {
    data.iter().map(|&b| ALAW_TABLE[usize::from(b)]).collect()
}

/// Decode to little-endian i16 bytes (what `numpy.frombuffer(b, "<i2")` reads).
pub fn decode_to_le_bytes(data: &[u8], alaw: bool) -> Vec<u8> {
    let t = if alaw { &ALAW_TABLE } else { &ULAW_TABLE };
    let mut out = Vec::with_capacity(data.len() * 2);
    for &b in data {
        out.extend_from_slice(&t[usize::from(b)].to_le_bytes());
    }
    out
}
