//! Frequencies as fixed-point fractions of a turn, the form the GPU kernels take them in.
//!
//! For an integer position `p` and a frequency `w` radians per position, the angle modulo
//! one turn is `frac(p * frac(w / 2pi))` turns. Storing `frac(w / 2pi)` as a 64-bit binary
//! fraction lets `shaders/angle.wgsl` reduce `p * w` exactly with integer arithmetic, so the
//! GPU result does not lose accuracy as positions grow (an f32 angle is off by about
//! `p * 2^-24` radians).

use std::f64::consts::TAU;

/// Converts a frequency in radians per position to `[high word, low word]` of the 64-bit
/// fixed-point fraction `frac(w / 2pi)`.
///
/// The f64 quotient carries a relative error near 2^-53, so at position 2^24 the angle is
/// off by about 2^-29 * w radians: far below f32 resolution.
pub(crate) fn turns_fixed_point(frequency: f64) -> [u32; 2] {
    let turns = (frequency / TAU).rem_euclid(1.0);
    // Split into two 32-bit halves in f64 to keep all 53 significant bits.
    let scaled_high = turns * 4_294_967_296.0;
    let high = scaled_high.floor();
    let low = ((scaled_high - high) * 4_294_967_296.0).round();
    let (mut high, mut low) = (high as u64, low as u64);
    if low >= 1 << 32 {
        low -= 1 << 32;
        high += 1;
    }
    [(high & 0xffff_ffff) as u32, low as u32]
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
}
