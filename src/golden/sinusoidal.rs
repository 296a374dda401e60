//! `sinusoidal` files: the encoding table at listed positions, on the CPU and the GPU.

use serde::Deserialize;

use super::{compare_rows, positions_u32, Check, ComputePath, GoldenFile, Outcome, Quantity, Stop};
use crate::context::GpuContext;
use crate::error::{check_len, checked_product, Error};
use crate::sinusoidal::{self, Sinusoidal, SinusoidalFrequencies, SinusoidalLayout};
use crate::tensor::Positions;

#[derive(Deserialize)]
struct Params {
    dim: usize,
    base: f64,
    layout: String,
    variant: String,
}

#[derive(Deserialize)]
struct Inputs {
    positions: Vec<u64>,
}

#[derive(Deserialize)]
struct Outputs {
    pe: Vec<f64>,
}

/// Computes the table `[positions, dim]` on each path and compares it row by row.
pub(super) fn verify(file: &GoldenFile, gpu: Option<&GpuContext>) -> Outcome<Vec<Check>> {
    let params: Params = file.section("params", &file.params)?;
    let inputs: Inputs = file.section("inputs", &file.inputs)?;
    let outputs: Outputs = file.section("outputs", &file.outputs)?;
    let encoding = encoding(&params)?;
    encoding.validate()?;
    let ids = positions_u32(&inputs.positions)?;
    let rows = ids.len();
    if rows == 0 {
        // With no rows, no output length bounds dim, and a huge dim would be allocated.
        return Err(Error::shape("inputs.positions", 0, "list at least one position").into());
    }
    check_len(
        "outputs.pe",
        outputs.pe.len(),
        checked_product("pe", &[rows, encoding.dim])?,
    )?;
    file.tolerance.check_positions(rows)?;

    let compare = |path, got: &[f32]| {
        compare_rows(
            path,
            Quantity::Pe,
            got,
            &outputs.pe,
            encoding.dim,
            &file.tolerance,
        )
    };
    let cpu = sinusoidal::table_cpu(&encoding, Positions::Ids(&ids), rows)?;
    let mut checks = vec![compare(ComputePath::Cpu, &cpu)];
    if let Some(ctx) = gpu {
        let table = sinusoidal::gpu::table(ctx, &encoding, Positions::Ids(&ids), rows)?;
        checks.push(compare(ComputePath::Gpu, &table));
    }
    Ok(checks)
}

/// Maps the file's `layout` and `variant` names to the encoding.
fn encoding(params: &Params) -> Outcome<Sinusoidal> {
    let layout = match params.layout.as_str() {
        "interleaved" => SinusoidalLayout::Interleaved,
        "concat" => SinusoidalLayout::Concat,
        other => {
            return Err(Stop::Unsupported(format!(
                "sinusoidal layout {other:?} is not one of interleaved, concat"
            )))
        }
    };
    let frequencies = match params.variant.as_str() {
        "vaswani" => SinusoidalFrequencies::Vaswani,
        "tensor2tensor" => SinusoidalFrequencies::Tensor2Tensor,
        other => {
            return Err(Stop::Unsupported(format!(
                "sinusoidal variant {other:?} is not one of vaswani, tensor2tensor"
            )))
        }
    };
    Ok(Sinusoidal::new(params.dim)
        .with_base(params.base)
        .with_layout(layout)
        .with_frequencies(frequencies))
}
