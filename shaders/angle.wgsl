// Exact sin and cos of position * frequency, shared by the sinusoidal and RoPE kernels.
//
// An f32 angle position * frequency carries an error of about position * 2^-24 radians, and
// WGSL bounds the built-in sin/cos only to 2^-11 absolute, on [-pi, pi]. Instead the host
// gives each frequency as a 64-bit fixed-point fraction of a turn, frac(frequency / 2pi), and
// the kernel reduces with integer arithmetic, which is exact modulo one turn for any u32
// position: frac(p * f) = frac(p * frac(f)). The remainder within a quarter turn goes
// through f32 polynomials, so the result is within a few f32 ulps at every position.

// High 32 bits of the 64-bit product a * b, from 16-bit halves (WGSL has no mul-high).
fn mul_hi_u32(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    // Each term is below 2^16, so the sum of three cannot overflow.
    let middle = (lo_lo >> 16u) + (hi_lo & 0xffffu) + (lo_hi & 0xffffu);
    return a_hi * b_hi + (hi_lo >> 16u) + (lo_hi >> 16u) + (middle >> 16u);
}

// Fraction of a turn of position * turns, as a 32-bit fixed-point number (2^32 = one turn),
// rounded to nearest. `turns` is (high word, low word) of a 64-bit fraction of a turn.
fn turn_fraction(position: u32, turns: vec2<u32>) -> u32 {
    let low = position * turns.y;
    // Wrapping arithmetic is the reduction modulo one turn.
    return position * turns.x + mul_hi_u32(position, turns.y) + (low >> 31u);
}

// (cos, sin) of the angle 2pi * r / 2^32.
fn cos_sin_of_turn(r: u32) -> vec2<f32> {
    // Nearest quarter turn q (0..3) and the remainder d in [-2^29, 2^29), i.e. |x| <= pi/4.
    let quarter = (r + 0x20000000u) >> 30u;
    let d = bitcast<i32>(r - (quarter << 30u));
    let x = f32(d) * 1.4629180792671596e-9; // 2pi / 2^32
    let x2 = x * x;

    // Taylor series to x^9 (sin) and x^10 (cos): the first omitted terms are below 2e-9 on
    // [-pi/4, pi/4], far under the f32 rounding of the result.
    let s = x * (1.0 + x2 * (-1.6666666666666666e-1 + x2 * (8.333333333333333e-3
        + x2 * (-1.984126984126984e-4 + x2 * 2.7557319223985893e-6))));
    let c = 1.0 + x2 * (-0.5 + x2 * (4.1666666666666664e-2 + x2 * (-1.388888888888889e-3
        + x2 * (2.48015873015873e-5 + x2 * -2.755731922398589e-7))));

    switch quarter & 3u {
        case 0u: { return vec2<f32>(c, s); }
        case 1u: { return vec2<f32>(-s, c); }
        case 2u: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

// (cos, sin) of position * frequency, with the frequency given as fixed-point turns.
fn cos_sin(position: u32, turns: vec2<u32>) -> vec2<f32> {
    return cos_sin_of_turn(turn_fraction(position, turns));
}
