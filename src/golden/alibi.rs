//! `alibi_slopes` files: the slope of each head, checked on the host.

use serde::Deserialize;

use super::{compare_elements, Check, ComputePath, GoldenFile, Outcome, Quantity};
use crate::alibi::Alibi;
use crate::error::check_len;

#[derive(Deserialize)]
struct Params {
    num_heads: usize,
}

#[derive(Deserialize)]
struct Outputs {
    slopes: Vec<f64>,
}

/// Compares [`Alibi::slopes`] with the ALiBi authors' `get_slopes` values of the file.
pub(super) fn verify(file: &GoldenFile) -> Outcome<Vec<Check>> {
    let params: Params = file.section("params", &file.params)?;
    let outputs: Outputs = file.section("outputs", &file.outputs)?;
    // Checked first, so a huge num_heads is rejected before any allocation.
    check_len("outputs.slopes", outputs.slopes.len(), params.num_heads)?;
    let slopes = Alibi::new(params.num_heads).slopes()?;

    Ok(vec![compare_elements(
        ComputePath::Host,
        Quantity::Slopes,
        &slopes,
        &outputs.slopes,
        &file.tolerance,
    )])
}
