//! Frequencies as fixed-point fractions of a turn, the form the GPU kernels take them in.
//!
//! For an integer position `p` and a frequency `w` radians per position, the angle modulo
//! one turn is `frac(p * frac(w / 2pi))` turns. Storing `frac(w / 2pi)` as a 64-bit binary
//! fraction lets `shaders/angle.wgsl` reduce `p * w` exactly with integer arithmetic, so the
//! GPU result does not lose accuracy as positions grow (an f32 angle is off by about
//! `p * 2^-24` radians).

use std::f64::consts::TAU;

/// 2π minus [`TAU`]: `TAU + TAU_LOW` is 2π to about 2^-107 relative.
const TAU_LOW: f64 = 2.449_293_598_294_706_4e-16;

/// 2^64, the scale of the fixed-point fraction.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Converts a frequency in radians per position to `[high word, low word]` of the 64-bit
/// fixed-point fraction `frac(w / 2pi)`, rounded to nearest.
///
/// A plain f64 quotient `w / TAU` is off by up to 2^-53 of itself, which position 2^32
/// turns into 5e-7 radians at `w = 1` (8 f32 ulps of a value near 1). So the quotient is
/// formed as the double-double `q + q_low`: the division's remainder is exact with an FMA,
/// and [`TAU_LOW`] corrects for 2π not being an f64. Every bit of the 64-bit fraction is
/// then right, and the GPU angle stays within 2^-64 turns times the position.
pub(crate) fn turns_fixed_point(frequency: f64) -> [u32; 2] {
    let q = frequency / TAU;
    let remainder = (-q).mul_add(TAU, frequency);
    let q_low = (remainder - q * TAU_LOW) / TAU;

    // frac(q), its scaling by 2^64 and the whole part of that (below 2^64) are exact. The
    // rest and q_low are rounded together to the nearest 2^-64 turn.
    let scaled = (q - q.floor()) * TWO_POW_64;
    let whole = scaled.floor();
    let rest = (scaled - whole) + q_low * TWO_POW_64;
    let fixed = (whole as i128 + rest.round() as i128).rem_euclid(1 << 64) as u64;
    [(fixed >> 32) as u32, fixed as u32]
}

/// `(sin, cos)` of the exact product `position * frequency`, in f64.
///
/// The rounded f64 product is off by up to 2^-53 of itself, 5e-7 radians at position 2^32
/// and frequency 1. Its rounding error `low` is exact with an FMA, and one first-order step
/// `sin(a + low) = sin(a) + low cos(a)` adds it back (the next term is below 2^-40).
pub(crate) fn sin_cos_of_product(position: f64, frequency: f64) -> (f64, f64) {
    let angle = position * frequency;
    let low = position.mul_add(frequency, -angle);
    let (sin, cos) = angle.sin_cos();
    (sin + low * cos, cos - low * sin)
}

/// Converts a list of frequencies for upload: `[high, low]` per frequency.
pub(crate) fn turns_table(frequencies: &[f64]) -> Vec<[u32; 2]> {
    frequencies.iter().map(|&w| turns_fixed_point(w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates the fixed-point reduction on the host with u128 arithmetic, as the shader
    /// does with 32-bit words, and returns the angle in turns.
    fn reduce(position: u32, turns: [u32; 2]) -> f64 {
        let fraction = (u128::from(turns[0]) << 32) | u128::from(turns[1]);
        let product = (u128::from(position) * fraction) & ((1u128 << 64) - 1);
        product as f64 / 18_446_744_073_709_551_616.0
    }

    #[test]
    fn fixed_point_turns_match_f64_angles() {
        for &w in &[1.0, 0.1, 1e-4, 2.5e-7, 3.0, 7.0] {
            for &p in &[0u32, 1, 48_039, 131_071, 1_048_575, 16_777_215] {
                let got = reduce(p, turns_fixed_point(w)) * TAU;
                let want = (f64::from(p) * w).rem_euclid(TAU);
                let diff = (got - want).abs();
                let wrapped = diff.min(TAU - diff);
                // The f64 reference rounds p * w (half an ulp of up to 5e7), the fixed point
                // inherits the rounding of w / 2pi, and its last bit is 2^-64 turns, which p
                // multiplies. Together they stay far below the f32 resolution needed.
                let quantization = f64::from(p) * TAU / 18_446_744_073_709_551_616.0;
                let bound = 4.0 * f64::EPSILON * (f64::from(p) * w).max(1.0) + quantization;
                assert!(wrapped <= bound, "w={w} p={p}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn fixed_point_handles_full_turn_rounding() {
        // A frequency one ulp below a whole turn must not overflow the high word.
        let w = TAU * (1.0 - f64::EPSILON);
        let [high, low] = turns_fixed_point(w);
        assert!(
            high == u32::MAX || (high == 0 && low < 4096),
            "{high:#x} {low:#x}"
        );
    }

    #[test]
    fn fixed_point_is_exact_at_the_largest_positions() {
        // At p = 2^32 - 1 a 2^-53 error in w / 2pi would move the angle by up to 5e-7
        // radians; the double-double quotient keeps it within the fixed point's last bit.
        for &w in &[1.0, 0.794_328_234_724_281_5, 3.0, 7.0, 1e-4] {
            let p = u32::MAX;
            let got = reduce(p, turns_fixed_point(w)) * TAU;
            // p * w exactly (double-double), reduced by 2pi in double-double.
            let (hi, lo) = (f64::from(p) * w, f64::from(p).mul_add(w, -f64::from(p) * w));
            let turns = (hi / TAU).floor();
            let want = (-turns).mul_add(TAU, hi) - turns * TAU_LOW + lo;
            let diff = (got - want.rem_euclid(TAU)).abs();
            let wrapped = diff.min(TAU - diff);
            assert!(wrapped < 4e-9, "w={w}: {got} vs {want}, off by {wrapped}");
        }
    }

    #[test]
    fn sin_cos_of_product_matches_reduced_angle() {
        // sin(4294967277 * 0.7943282347242815) by a 300-bit evaluation (mpmath).
        let (sin, cos) = sin_cos_of_product(4_294_967_277.0, 0.794_328_234_724_281_5);
        let want_cos = -0.096_859_520_487_149_44;
        assert!((cos - want_cos).abs() < 1e-12, "{cos} vs {want_cos}");
        assert!((sin * sin + cos * cos - 1.0).abs() < 1e-12);
    }
}
