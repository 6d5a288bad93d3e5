//! G.711 mu-law and A-law (ITU-T G.711), decoded to 16-bit linear PCM.

/// Decodes one mu-law byte to a 16-bit linear sample.
pub fn mulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let t = ((i32::from(u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// Decodes one A-law byte to a 16-bit linear sample.
pub fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = i32::from(a & 0x0f) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}
