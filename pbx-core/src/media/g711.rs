//! G.711 mu-law and A-law (ITU-T G.711) to and from 16-bit linear PCM.
//!
//! Decoding is a lookup in the standard 256-entry tables ([`MULAW_TO_LINEAR`],
//! [`ALAW_TO_LINEAR`]), built at compile time from the expansion of Sun's public-domain
//! `g711.c` (the one CPython's `audioop`, SoX and most telephony stacks share). The
//! decoded value of a code is the midpoint of its quantisation interval; mu-law
//! peaks at ±32124, A-law at ±32256.
//!
//! Encoding follows `g711.c` too:
//! - mu-law on the 16-bit magnitude with bias `0x84` and clip 32635
//!   ([`linear_to_mulaw`]), so it is sign-symmetric: `-x` encodes as `x` with the sign
//!   bit cleared. `audioop.lin2ulaw` instead floors the sample to 14 bits first
//!   (`x >> 2`), which for a negative sample that is not a multiple of 4 can pick the
//!   next larger magnitude: it equals `linear_to_mulaw(x & !3)`.
//! - A-law on the 13-bit sample (`x >> 3`, one's complement for negatives), with a
//!   segment search ([`linear_to_alaw`]); identical to `audioop.lin2alaw` (and ITU-T
//!   G.191's reference) for every `i16`.
//!
//! Both laws round-trip every code (`encode(decode(c)) == c`) except mu-law's
//! negative zero `0x7F`, which decodes to 0 like `0xFF` and so encodes back as `0xFF`.

/// Sun `g711.c` `ulaw2linear`: the table's generator.
const fn mulaw_expand(code: u8) -> i16 {
    let u = !code;
    let t = (((u & 0x0f) as i32) << 3) + 0x84;
    let t = t << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// Sun `g711.c` `alaw2linear`: the table's generator.
const fn alaw_expand(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// The 256-entry decoding table of A-law (`alaw`) or mu-law.
const fn table(alaw: bool) -> [i16; 256] {
    let mut out = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        out[code] = if alaw { alaw_expand(code as u8) } else { mulaw_expand(code as u8) };
        code += 1;
    }
    out
}

/// Every mu-law code's linear value, indexed by the code.
pub static MULAW_TO_LINEAR: [i16; 256] = table(false);

/// Every A-law code's linear value, indexed by the code.
pub static ALAW_TO_LINEAR: [i16; 256] = table(true);

/// Decodes one mu-law byte to a 16-bit linear sample.
#[inline]
pub fn mulaw_to_linear(code: u8) -> i16 {
    MULAW_TO_LINEAR[usize::from(code)]
}

/// Decodes one A-law byte to a 16-bit linear sample.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// mu-law's bias: added to the magnitude so that segment boundaries are powers of 2.
const MULAW_BIAS: i32 = 0x84;
/// The largest magnitude mu-law encodes; above it, the top code.
const MULAW_CLIP: i32 = 32635;
/// The upper end of each mu-law segment, of the biased magnitude.
const MULAW_SEG_END: [i32; 8] = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF];
/// The upper end of each A-law segment, of the 13-bit magnitude.
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// The first segment whose upper end is at least `value`, or 8.
#[inline]
fn segment(value: i32, ends: &[i32; 8]) -> u8 {
    ends.iter().position(|&end| value <= end).unwrap_or(8) as u8
}

/// Encodes a 16-bit linear sample as mu-law (Sun `g711.c` `linear2ulaw`).
pub fn linear_to_mulaw(sample: i16) -> u8 {
    let sample = i32::from(sample);
    let (magnitude, mask) = if sample < 0 { (-sample, 0x7F) } else { (sample, 0xFF) };
    let biased = magnitude.min(MULAW_CLIP) + MULAW_BIAS; // 0x84 ..= 0x7FFF: segments 0 ..= 7
    let seg = segment(biased, &MULAW_SEG_END);
    let code = (seg << 4) | ((biased >> (seg + 3)) & 0x0F) as u8;
    code ^ mask
}

/// Encodes a 16-bit linear sample as A-law (`g711.c` `linear2alaw`, 13-bit form).
pub fn linear_to_alaw(sample: i16) -> u8 {
    let v = i32::from(sample) >> 3; // -4096 ..= 4095
    let (magnitude, mask) = if v >= 0 { (v, 0xD5) } else { (!v, 0x55) }; // 0 ..= 4095
    let seg = segment(magnitude, &ALAW_SEG_END); // never 8: the magnitude fits 12 bits
    let quant = if seg < 2 { magnitude >> 1 } else { magnitude >> seg };
    let code = (seg << 4) | (quant & 0x0F) as u8;
    code ^ mask
}

/// Appends the linear samples of mu-law `codes` to `out`.
pub fn decode_mulaw(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| mulaw_to_linear(c)));
}

/// Appends the linear samples of A-law `codes` to `out`.
pub fn decode_alaw(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| alaw_to_linear(c)));
}

/// Appends the mu-law codes of `samples` to `out`.
pub fn encode_mulaw(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| linear_to_mulaw(s)));
}

/// Appends the A-law codes of `samples` to `out`.
pub fn encode_alaw(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| linear_to_alaw(s)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Independent references, from CPython 3.11's `audioop` (C code of its own, not this
    // file's). Generated with:
    //   python3 -c "import audioop, struct; print(struct.unpack('<256h', audioop.ulaw2lin(bytes(range(256)), 2)))"
    // (and `alaw2lin` for A-law); AUDIOOP_ENCODE is (sample, lin2ulaw, lin2alaw) of 26
    // edge samples, 274 `random.randint(-32768, 32767)` and 100 `randint(-300, 300)`
    // (seed 711), each encoded with `audioop.lin2ulaw(struct.pack('<h', s), 2)` etc.
    #[rustfmt::skip]
    const AUDIOOP_ULAW: [i16; 256] = [
        -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956, -23932, -22908, -21884, -20860, -19836, -18812, -17788, -16764,
        -15996, -15484, -14972, -14460, -13948, -13436, -12924, -12412, -11900, -11388, -10876, -10364, -9852, -9340, -8828, -8316,
        -7932, -7676, -7420, -7164, -6908, -6652, -6396, -6140, -5884, -5628, -5372, -5116, -4860, -4604, -4348, -4092,
        -3900, -3772, -3644, -3516, -3388, -3260, -3132, -3004, -2876, -2748, -2620, -2492, -2364, -2236, -2108, -1980,
        -1884, -1820, -1756, -1692, -1628, -1564, -1500, -1436, -1372, -1308, -1244, -1180, -1116, -1052, -988, -924,
        -876, -844, -812, -780, -748, -716, -684, -652, -620, -588, -556, -524, -492, -460, -428, -396,
        -372, -356, -340, -324, -308, -292, -276, -260, -244, -228, -212, -196, -180, -164, -148, -132,
        -120, -112, -104, -96, -88, -80, -72, -64, -56, -48, -40, -32, -24, -16, -8, 0,
        32124, 31100, 30076, 29052, 28028, 27004, 25980, 24956, 23932, 22908, 21884, 20860, 19836, 18812, 17788, 16764,
        15996, 15484, 14972, 14460, 13948, 13436, 12924, 12412, 11900, 11388, 10876, 10364, 9852, 9340, 8828, 8316,
        7932, 7676, 7420, 7164, 6908, 6652, 6396, 6140, 5884, 5628, 5372, 5116, 4860, 4604, 4348, 4092,
        3900, 3772, 3644, 3516, 3388, 3260, 3132, 3004, 2876, 2748, 2620, 2492, 2364, 2236, 2108, 1980,
        1884, 1820, 1756, 1692, 1628, 1564, 1500, 1436, 1372, 1308, 1244, 1180, 1116, 1052, 988, 924,
        876, 844, 812, 780, 748, 716, 684, 652, 620, 588, 556, 524, 492, 460, 428, 396,
        372, 356, 340, 324, 308, 292, 276, 260, 244, 228, 212, 196, 180, 164, 148, 132,
        120, 112, 104, 96, 88, 80, 72, 64, 56, 48, 40, 32, 24, 16, 8, 0,
    ];

    #[rustfmt::skip]
    const AUDIOOP_ALAW: [i16; 256] = [
        -5504, -5248, -6016, -5760, -4480, -4224, -4992, -4736, -7552, -7296, -8064, -7808, -6528, -6272, -7040, -6784,
        -2752, -2624, -3008, -2880, -2240, -2112, -2496, -2368, -3776, -3648, -4032, -3904, -3264, -3136, -3520, -3392,
        -22016, -20992, -24064, -23040, -17920, -16896, -19968, -18944, -30208, -29184, -32256, -31232, -26112, -25088, -28160, -27136,
        -11008, -10496, -12032, -11520, -8960, -8448, -9984, -9472, -15104, -14592, -16128, -15616, -13056, -12544, -14080, -13568,
        -344, -328, -376, -360, -280, -264, -312, -296, -472, -456, -504, -488, -408, -392, -440, -424,
        -88, -72, -120, -104, -24, -8, -56, -40, -216, -200, -248, -232, -152, -136, -184, -168,
        -1376, -1312, -1504, -1440, -1120, -1056, -1248, -1184, -1888, -1824, -2016, -1952, -1632, -1568, -1760, -1696,
        -688, -656, -752, -720, -560, -528, -624, -592, -944, -912, -1008, -976, -816, -784, -880, -848,
        5504, 5248, 6016, 5760, 4480, 4224, 4992, 4736, 7552, 7296, 8064, 7808, 6528, 6272, 7040, 6784,
        2752, 2624, 3008, 2880, 2240, 2112, 2496, 2368, 3776, 3648, 4032, 3904, 3264, 3136, 3520, 3392,
        22016, 20992, 24064, 23040, 17920, 16896, 19968, 18944, 30208, 29184, 32256, 31232, 26112, 25088, 28160, 27136,
        11008, 10496, 12032, 11520, 8960, 8448, 9984, 9472, 15104, 14592, 16128, 15616, 13056, 12544, 14080, 13568,
        344, 328, 376, 360, 280, 264, 312, 296, 472, 456, 504, 488, 408, 392, 440, 424,
        88, 72, 120, 104, 24, 8, 56, 40, 216, 200, 248, 232, 152, 136, 184, 168,
        1376, 1312, 1504, 1440, 1120, 1056, 1248, 1184, 1888, 1824, 2016, 1952, 1632, 1568, 1760, 1696,
        688, 656, 752, 720, 560, 528, 624, 592, 944, 912, 1008, 976, 816, 784, 880, 848,
    ];

    #[rustfmt::skip]
    const AUDIOOP_ENCODE: [(i16, u8, u8); 400] = [
        (-32768, 0x00, 0x2A), (-32767, 0x00, 0x2A), (-32636, 0x00, 0x2A), (-32635, 0x00, 0x2A), (-32634, 0x00, 0x2A),
        (-32124, 0x00, 0x2A), (-8, 0x7E, 0x55), (-5, 0x7E, 0x55), (-4, 0x7E, 0x55), (-3, 0x7E, 0x55),
        (-2, 0x7E, 0x55), (-1, 0x7E, 0x55), (0, 0xFF, 0xD5), (1, 0xFF, 0xD5), (2, 0xFF, 0xD5),
        (3, 0xFF, 0xD5), (4, 0xFE, 0xD5), (7, 0xFE, 0xD5), (8, 0xFE, 0xD5), (132, 0xEF, 0xDD),
        (32124, 0x80, 0xAA), (32256, 0x80, 0xAA), (32634, 0x80, 0xAA), (32635, 0x80, 0xAA), (32636, 0x80, 0xAA),
        (32767, 0x80, 0xAA), (30829, 0x81, 0xAB), (18713, 0x8D, 0xA7), (22936, 0x89, 0xA3), (13405, 0x95, 0xBF),
        (-3063, 0x37, 0x12), (23585, 0x88, 0xA2), (-479, 0x5C, 0x48), (-3617, 0x32, 0x19), (2744, 0xB9, 0x90),
        (30598, 0x81, 0xA8), (10670, 0x9A, 0xB1), (-13032, 0x16, 0x3C), (-20078, 0x0C, 0x26), (-27015, 0x05, 0x2F),
        (20126, 0x8C, 0xA6), (-32334, 0x00, 0x2A), (25958, 0x86, 0xAC), (23591, 0x88, 0xA2), (-13733, 0x14, 0x3F),
        (-1813, 0x41, 0x69), (-9366, 0x1D, 0x37), (-7807, 0x20, 0x0B), (2537, 0xBB, 0x96), (-9286, 0x1D, 0x37),
        (13999, 0x94, 0xBE), (-21603, 0x0A, 0x20), (23375, 0x89, 0xA3), (24870, 0x87, 0xAD), (28621, 0x83, 0xAE),
        (18026, 0x8E, 0xA4), (-12276, 0x17, 0x32), (17049, 0x8F, 0xA5), (17662, 0x8E, 0xA4), (-5364, 0x2A, 0x01),
        (4783, 0xAC, 0x87), (7709, 0xA1, 0x8B), (28660, 0x83, 0xAE), (-7060, 0x23, 0x0E), (-3083, 0x36, 0x1D),
        (-9717, 0x1C, 0x37), (-15269, 0x11, 0x38), (883, 0xD0, 0xFE), (4689, 0xAD, 0x87), (14566, 0x93, 0xB9),
        (-30868, 0x01, 0x2B), (28818, 0x83, 0xA9), (6088, 0xA7, 0x82), (-4334, 0x2E, 0x05), (20860, 0x8B, 0xA1),
        (-19745, 0x0C, 0x26), (3869, 0xB0, 0x9B), (-30469, 0x02, 0x28), (-27194, 0x05, 0x2F), (-21906, 0x0A, 0x20),
        (19277, 0x8D, 0xA7), (3830, 0xB1, 0x98), (8281, 0x9F, 0xB5), (27200, 0x85, 0xAF), (7794, 0xA1, 0x8B),
        (24053, 0x88, 0xA2), (26941, 0x85, 0xAF), (-5784, 0x28, 0x03), (-7642, 0x21, 0x08), (31893, 0x80, 0xAA),
        (3802, 0xB1, 0x98), (10098, 0x9C, 0xB6), (32151, 0x80, 0xAA), (14457, 0x93, 0xB9), (-224, 0x69, 0x58),
        (10657, 0x9A, 0xB1), (-5993, 0x28, 0x02), (741, 0xD4, 0xF2), (-11626, 0x19, 0x33), (27883, 0x84, 0xAE),
        (-29945, 0x02, 0x28), (-32267, 0x00, 0x2A), (-27094, 0x05, 0x2F), (25288, 0x87, 0xAD), (15365, 0x91, 0xBB),
        (13576, 0x95, 0xBF), (25733, 0x86, 0xAC), (4101, 0xAF, 0x85), (-4634, 0x2D, 0x07), (31630, 0x80, 0xAB),
        (-15292, 0x11, 0x38), (14833, 0x92, 0xB9), (2610, 0xBA, 0x91), (28725, 0x83, 0xA9), (31412, 0x81, 0xAB),
        (22061, 0x8A, 0xA0), (23181, 0x89, 0xA3), (-5532, 0x29, 0x00), (-29561, 0x02, 0x29), (31594, 0x81, 0xAB),
        (-16714, 0x0F, 0x25), (-28753, 0x03, 0x29), (-19989, 0x0C, 0x26), (2600, 0xBA, 0x91), (-29934, 0x02, 0x28),
        (30669, 0x81, 0xA8), (-20987, 0x0B, 0x21), (20925, 0x8B, 0xA1), (1054, 0xCD, 0xE5), (18442, 0x8D, 0xA7),
        (-18011, 0x0E, 0x24), (-4321, 0x2E, 0x05), (11226, 0x99, 0xB0), (26904, 0x85, 0xAF), (-15975, 0x10, 0x3A),
        (18763, 0x8D, 0xA7), (24136, 0x88, 0xA2), (16213, 0x90, 0xBA), (-17389, 0x0E, 0x25), (-15722, 0x11, 0x3B),
        (-32542, 0x00, 0x2A), (-3059, 0x37, 0x12), (-24554, 0x07, 0x22), (9365, 0x9D, 0xB7), (-14142, 0x14, 0x3E),
        (15087, 0x92, 0xB8), (16220, 0x90, 0xBA), (-11297, 0x19, 0x33), (-1224, 0x4A, 0x66), (22099, 0x8A, 0xA0),
        (-2516, 0x3B, 0x16), (19623, 0x8C, 0xA6), (26667, 0x85, 0xAF), (-30420, 0x02, 0x28), (5039, 0xAB, 0x86),
        (12591, 0x97, 0xBD), (-26461, 0x06, 0x2C), (15152, 0x92, 0xB8), (-25757, 0x06, 0x2C), (-27412, 0x05, 0x2F),
        (20374, 0x8B, 0xA6), (32254, 0x80, 0xAA), (-19320, 0x0D, 0x27), (-2483, 0x3B, 0x16), (6474, 0xA6, 0x8C),
        (-8584, 0x1E, 0x35), (19304, 0x8D, 0xA7), (-24383, 0x08, 0x22), (15329, 0x91, 0xB8), (-9900, 0x1C, 0x36),
        (-23636, 0x08, 0x22), (-29673, 0x02, 0x29), (-24397, 0x08, 0x22), (32663, 0x80, 0xAA), (16321, 0x8F, 0xBA),
        (29876, 0x82, 0xA8), (31578, 0x81, 0xAB), (8025, 0xA0, 0x8A), (19130, 0x8D, 0xA7), (-7592, 0x21, 0x08),
        (29198, 0x83, 0xA9), (29916, 0x82, 0xA8), (-17989, 0x0E, 0x24), (-22031, 0x0A, 0x20), (8262, 0x9F, 0xB5),
        (6997, 0xA4, 0x8E), (2755, 0xB9, 0x90), (-18815, 0x0D, 0x27), (-15719, 0x11, 0x3B), (12848, 0x96, 0xBC),
        (-14239, 0x13, 0x3E), (-18531, 0x0D, 0x27), (13793, 0x94, 0xBF), (1901, 0xC0, 0xE8), (19197, 0x8D, 0xA7),
        (-17897, 0x0E, 0x24), (595, 0xD9, 0xF7), (-28105, 0x04, 0x2E), (-2658, 0x3A, 0x11), (-32633, 0x00, 0x2A),
        (28933, 0x83, 0xA9), (-25726, 0x06, 0x2C), (6349, 0xA6, 0x8D), (-13805, 0x14, 0x3F), (29079, 0x83, 0xA9),
        (5464, 0xAA, 0x80), (-14385, 0x13, 0x39), (28135, 0x84, 0xAE), (-6054, 0x27, 0x02), (-800, 0x52, 0x7D),
        (-18320, 0x0D, 0x24), (29635, 0x82, 0xA9), (-25910, 0x06, 0x2C), (28456, 0x84, 0xAE), (-29929, 0x02, 0x28),
        (3628, 0xB2, 0x99), (-28294, 0x04, 0x2E), (-25764, 0x06, 0x2C), (-5403, 0x2A, 0x00), (29200, 0x83, 0xA9),
        (3237, 0xB5, 0x9C), (-1127, 0x4C, 0x64), (-4134, 0x2F, 0x05), (25008, 0x87, 0xAD), (-21565, 0x0A, 0x20),
        (13648, 0x95, 0xBF), (-18183, 0x0E, 0x24), (26250, 0x86, 0xAC), (21134, 0x8B, 0xA1), (5232, 0xAB, 0x81),
        (-7884, 0x20, 0x0B), (-14307, 0x13, 0x3E), (-6369, 0x26, 0x0D), (15184, 0x92, 0xB8), (9809, 0x9C, 0xB6),
        (13, 0xFD, 0xD5), (7548, 0xA1, 0x88), (28132, 0x84, 0xAE), (-32452, 0x00, 0x2A), (-5540, 0x29, 0x00),
        (16858, 0x8F, 0xA5), (-3981, 0x2F, 0x1A), (-14947, 0x12, 0x38), (22567, 0x89, 0xA3), (30819, 0x81, 0xAB),
        (-18551, 0x0D, 0x27), (-17420, 0x0E, 0x24), (17255, 0x8F, 0xA5), (2963, 0xB7, 0x92), (-22944, 0x09, 0x23),
        (17440, 0x8E, 0xA4), (-12788, 0x16, 0x3D), (-3521, 0x33, 0x1E), (10287, 0x9B, 0xB1), (-19874, 0x0C, 0x26),
        (-14663, 0x13, 0x39), (-32346, 0x00, 0x2A), (16270, 0x8F, 0xBA), (4962, 0xAC, 0x86), (-27764, 0x04, 0x2E),
        (13652, 0x95, 0xBF), (-26845, 0x05, 0x2F), (-8818, 0x1E, 0x34), (-12403, 0x17, 0x3D), (5350, 0xAA, 0x81),
        (-23575, 0x08, 0x22), (-13133, 0x16, 0x3C), (-25667, 0x06, 0x2C), (-23305, 0x09, 0x23), (13435, 0x95, 0xBF),
        (-9253, 0x1D, 0x37), (-16465, 0x0F, 0x25), (7983, 0xA0, 0x8A), (-7618, 0x21, 0x08), (-17107, 0x0F, 0x25),
        (21970, 0x8A, 0xA0), (24901, 0x87, 0xAD), (3032, 0xB7, 0x92), (11340, 0x99, 0xB3), (19801, 0x8C, 0xA6),
        (-27401, 0x05, 0x2F), (21321, 0x8B, 0xA1), (-4162, 0x2F, 0x05), (-7713, 0x21, 0x0B), (24237, 0x88, 0xA2),
        (-32216, 0x00, 0x2A), (-6503, 0x26, 0x0C), (-18268, 0x0E, 0x24), (7865, 0xA0, 0x8B), (-32335, 0x00, 0x2A),
        (-11244, 0x19, 0x30), (-29428, 0x03, 0x29), (5182, 0xAB, 0x81), (-25247, 0x07, 0x2D), (199, 0xEB, 0xD9),
        (15950, 0x90, 0xBA), (-8102, 0x1F, 0x0A), (-29397, 0x03, 0x29), (22148, 0x8A, 0xA0), (16427, 0x8F, 0xA5),
        (152, 0xEE, 0xDC), (150, 0xEE, 0xDC), (-259, 0x67, 0x45), (-12, 0x7D, 0x55), (299, 0xE5, 0xC7),
        (273, 0xE6, 0xC4), (-36, 0x7A, 0x57), (-86, 0x74, 0x50), (-109, 0x71, 0x53), (-283, 0x65, 0x44),
        (-91, 0x73, 0x50), (180, 0xEC, 0xDE), (-166, 0x6D, 0x5F), (-237, 0x68, 0x5B), (-72, 0x76, 0x51),
        (-275, 0x66, 0x44), (293, 0xE5, 0xC7), (234, 0xE9, 0xDB), (-259, 0x67, 0x45), (152, 0xEE, 0xDC),
        (99, 0xF3, 0xD3), (119, 0xF0, 0xD2), (-273, 0x66, 0x44), (-169, 0x6C, 0x5F), (12, 0xFD, 0xD5),
        (132, 0xEF, 0xDD), (243, 0xE8, 0xDA), (-221, 0x69, 0x58), (-262, 0x67, 0x45), (275, 0xE6, 0xC4),
        (-45, 0x79, 0x57), (223, 0xE9, 0xD8), (121, 0xF0, 0xD2), (249, 0xE8, 0xDA), (255, 0xE7, 0xDA),
        (-176, 0x6C, 0x5F), (33, 0xFB, 0xD7), (-28, 0x7B, 0x54), (57, 0xF8, 0xD6), (-9, 0x7D, 0x55),
        (117, 0xF0, 0xD2), (-284, 0x65, 0x44), (83, 0xF5, 0xD0), (-237, 0x68, 0x5B), (-125, 0x6F, 0x52),
        (213, 0xEA, 0xD8), (72, 0xF6, 0xD1), (-41, 0x79, 0x57), (-221, 0x69, 0x58), (-33, 0x7A, 0x57),
        (94, 0xF3, 0xD0), (102, 0xF2, 0xD3), (101, 0xF2, 0xD3), (258, 0xE7, 0xC5), (36, 0xFA, 0xD7),
        (-168, 0x6D, 0x5F), (-17, 0x7C, 0x54), (-251, 0x67, 0x5A), (-56, 0x78, 0x56), (104, 0xF2, 0xD3),
        (112, 0xF1, 0xD2), (105, 0xF2, 0xD3), (223, 0xE9, 0xD8), (-188, 0x6B, 0x5E), (-259, 0x67, 0x45),
        (-143, 0x6E, 0x5D), (-237, 0x68, 0x5B), (121, 0xF0, 0xD2), (-111, 0x71, 0x53), (-184, 0x6C, 0x5E),
        (5, 0xFE, 0xD5), (-123, 0x6F, 0x52), (-67, 0x76, 0x51), (-29, 0x7B, 0x54), (-3, 0x7E, 0x55),
        (193, 0xEB, 0xD9), (26, 0xFC, 0xD4), (-208, 0x6A, 0x59), (-129, 0x6F, 0x5D), (123, 0xF0, 0xD2),
        (-167, 0x6D, 0x5F), (-199, 0x6B, 0x59), (137, 0xEF, 0xDD), (87, 0xF4, 0xD0), (6, 0xFE, 0xD5),
        (-187, 0x6B, 0x5E), (151, 0xEE, 0xDC), (-8, 0x7E, 0x55), (180, 0xEC, 0xDE), (-77, 0x75, 0x51),
        (-298, 0x64, 0x47), (106, 0xF2, 0xD3), (158, 0xED, 0xDC), (126, 0xEF, 0xD2), (71, 0xF6, 0xD1),
        (168, 0xED, 0xDF), (51, 0xF9, 0xD6), (-122, 0x6F, 0x52), (-95, 0x73, 0x50), (-7, 0x7E, 0x55),
    ];

    /// The quantisation step of the segment a mu-law code lies in.
    fn mulaw_step(code: u8) -> i32 {
        8 << ((!code & 0x70) >> 4)
    }

    /// The quantisation step of the segment an A-law code lies in.
    fn alaw_step(code: u8) -> i32 {
        let seg = ((code ^ 0x55) & 0x70) >> 4;
        16 << seg.saturating_sub(1)
    }

    #[test]
    fn decode_tables_match_audioop_for_every_code() {
        for code in 0..=255u8 {
            assert_eq!(mulaw_to_linear(code), AUDIOOP_ULAW[usize::from(code)], "mu-law {code:#04x}");
            assert_eq!(alaw_to_linear(code), AUDIOOP_ALAW[usize::from(code)], "A-law {code:#04x}");
        }
        assert_eq!((MULAW_TO_LINEAR[0x00], MULAW_TO_LINEAR[0x80], MULAW_TO_LINEAR[0xFF]), (-32124, 32124, 0));
        assert_eq!((ALAW_TO_LINEAR[0x2A], ALAW_TO_LINEAR[0xAA], ALAW_TO_LINEAR[0xD5]), (-32256, 32256, 8));
    }

    #[test]
    fn decode_slices() {
        let mut out = vec![7];
        decode_mulaw(&[0xFF, 0x80, 0x00], &mut out);
        decode_alaw(&[0xD5, 0x55], &mut out);
        assert_eq!(out, [7, 0, 32124, -32124, 8, -8]);
        let mut codes = Vec::new();
        encode_mulaw(&[0, 32124, -32124], &mut codes);
        encode_alaw(&[8, -8], &mut codes);
        assert_eq!(codes, [0xFF, 0x80, 0x00, 0xD5, 0x55]);
    }

    #[test]
    fn every_code_round_trips_but_mulaw_negative_zero() {
        let mut mulaw_aliases = Vec::new();
        for code in 0..=255u8 {
            let (m, a) = (mulaw_to_linear(code), alaw_to_linear(code));
            assert_eq!(mulaw_to_linear(linear_to_mulaw(m)), m, "mu-law {code:#04x}");
            assert_eq!(alaw_to_linear(linear_to_alaw(a)), a, "A-law {code:#04x}");
            assert_eq!(linear_to_alaw(a), code, "A-law {code:#04x} encodes back to itself");
            if linear_to_mulaw(m) != code {
                mulaw_aliases.push((code, linear_to_mulaw(m)));
            }
        }
        // 0x7F is mu-law's "negative zero": it decodes to 0, which encodes as 0xFF.
        assert_eq!(mulaw_aliases, [(0x7F, 0xFF)]);
        // The decoded values are otherwise all distinct.
        let mut m: Vec<i16> = MULAW_TO_LINEAR.to_vec();
        let mut a: Vec<i16> = ALAW_TO_LINEAR.to_vec();
        m.sort_unstable();
        m.dedup();
        a.sort_unstable();
        a.dedup();
        assert_eq!((m.len(), a.len()), (255, 256));
    }

    #[test]
    fn encoders_match_audioop_samples() {
        let mut mulaw_differs = 0;
        for &(sample, ulaw, alaw) in &AUDIOOP_ENCODE {
            assert_eq!(linear_to_alaw(sample), alaw, "A-law of {sample}");
            // audioop floors to 14 bits first; on such a sample the two agree exactly.
            assert_eq!(linear_to_mulaw(sample & !3), ulaw, "mu-law of {sample}");
            if sample >= 0 || sample % 4 == 0 {
                assert_eq!(linear_to_mulaw(sample), ulaw, "mu-law of {sample}");
            } else if linear_to_mulaw(sample) != ulaw {
                // One step apart, never more: the next larger magnitude.
                assert_eq!(linear_to_mulaw(sample), ulaw + 1, "mu-law of {sample}");
                mulaw_differs += 1;
            }
        }
        // -1, -2, -3 among them: audioop gives 0x7E (-8), g711.c's magnitude form 0x7F (0).
        assert!(mulaw_differs >= 3, "{mulaw_differs}");
        assert_eq!(linear_to_mulaw(-1), 0x7F);
    }

    #[test]
    fn encoding_is_monotonic_and_symmetric_over_all_samples() {
        let (mut last_m, mut last_a) = (i16::MIN, i16::MIN);
        for sample in i16::MIN..=i16::MAX {
            let m = mulaw_to_linear(linear_to_mulaw(sample));
            let a = alaw_to_linear(linear_to_alaw(sample));
            assert!(m >= last_m && a >= last_a, "not monotonic at {sample}");
            (last_m, last_a) = (m, a);
            // mu-law is sign-symmetric (0 is +0, 0xFF).
            if sample != 0 && sample != i16::MIN {
                assert_eq!(linear_to_mulaw(-sample), linear_to_mulaw(sample) ^ 0x80, "mu-law of ±{sample}");
            }
        }
    }

    proptest! {
        #[test]
        fn encode_decode_error_is_within_the_step(sample in any::<i16>()) {
            let s = i32::from(sample);
            let code = linear_to_mulaw(sample);
            let err = (s - i32::from(mulaw_to_linear(code))).abs();
            // Half a step inside the range; the clipped top (|s| > 32635) is at most
            // 32767 - 32124 = 643 from the peak, under a whole step (1024).
            let bound = if s.abs() <= MULAW_CLIP { mulaw_step(code) / 2 } else { mulaw_step(code) };
            prop_assert!(err <= bound, "mu-law {} -> {:#04x}: error {} > {}", sample, code, err, bound);
            let code = linear_to_alaw(sample);
            let err = (s - i32::from(alaw_to_linear(code))).abs();
            prop_assert!(err <= alaw_step(code) / 2, "A-law {} -> {:#04x}: error {}", sample, code, err);
        }

        #[test]
        fn decode_encode_decode_is_stable(code in any::<u8>(), sample in any::<i16>()) {
            prop_assert_eq!(mulaw_to_linear(linear_to_mulaw(mulaw_to_linear(code))), mulaw_to_linear(code));
            prop_assert_eq!(alaw_to_linear(linear_to_alaw(alaw_to_linear(code))), alaw_to_linear(code));
            // Encoding a decoded sample again is idempotent.
            let m = linear_to_mulaw(sample);
            prop_assert_eq!(linear_to_mulaw(mulaw_to_linear(m)), if m == 0x7F { 0xFF } else { m });
            let a = linear_to_alaw(sample);
            prop_assert_eq!(linear_to_alaw(alaw_to_linear(a)), a);
        }
    }
}
