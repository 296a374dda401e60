//! Shared test helpers: the GPU context, seeded inputs and tolerance checks.
#![allow(dead_code)]

use std::sync::OnceLock;

use posenc::GpuContext;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The GPU context for GPU tests, or `None` with a printed reason.
///
/// Panics when no adapter is found and `POSENC_REQUIRE_GPU=1`, so CI cannot pass by skipping.
pub fn gpu() -> Option<&'static GpuContext> {
    static CONTEXT: OnceLock<Result<GpuContext, String>> = OnceLock::new();
    let context = CONTEXT.get_or_init(|| GpuContext::new_headless().map_err(|e| e.to_string()));
    match context {
        Ok(ctx) => Some(ctx),
        Err(reason) if std::env::var("POSENC_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("POSENC_REQUIRE_GPU=1 but no GPU adapter is available: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping GPU check: {reason}");
            None
        }
    }
}

/// `n` values uniform in [-1, 1) from a fixed seed.
pub fn random_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A tolerance `abs + rel * |expected|`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// Asserts `|got - want| <= abs + rel * |want|` element-wise, naming the first failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: Tolerance) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (index, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (f64::from(g), f64::from(w));
        let bound = tolerance.abs + tolerance.rel * w.abs();
        assert!(
            (g - w).abs() <= bound && g.is_finite(),
            "{what}[{index}]: got {g}, want {w}, |diff| {} > {bound}",
            (g - w).abs()
        );
    }
}

/// Asserts two slices are bit-identical.
pub fn assert_bits_equal(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (index, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}[{index}]: got {g}, want {w}"
        );
    }
}
