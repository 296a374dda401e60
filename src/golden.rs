//! Golden-file verification: recomputes the outputs of a golden test vector with posenc's own
//! code and compares them with the values that a peer library produced.
//!
//! A golden file is one JSON object with `kind`, `tolerance`, `params`, `inputs` and `outputs`
//! (the format is described in `tests/data/golden/FORMAT.md` of the posenc repository). The
//! verifier computes from `params` and `inputs` alone and uses `outputs` only as expected
//! values. Each computed quantity becomes a [`Check`] for the path that produced it:
//!
//! | kind | host (f64, device-independent) | CPU and GPU |
//! |---|---|---|
//! | `rope` | `inv_freq`, `attention_scaling` | `cos`, `sin` tables and the rotated `y` |
//! | `alibi_slopes` | `slopes` | none |
//! | `sinusoidal` | none | the table `pe` |
//! | `attention` | none | `probs`, `out` and the fully masked rows |
//!
//! ```no_run
//! # fn main() -> posenc::Result<()> {
//! let file = posenc::golden::load("tests/data/golden/rope_llama3_31_d128.json")?;
//! let ctx = posenc::GpuContext::new_headless().ok();
//! match posenc::golden::verify(&file, ctx.as_ref())? {
//!     posenc::golden::Verification::Checked(checks) => {
//!         assert!(checks.iter().all(|check| check.passed));
//!     }
//!     posenc::golden::Verification::Unsupported { reason } => println!("skipped: {reason}"),
//! }
//! # Ok(())
//! # }
//! ```

mod alibi;
mod attention;
mod rope;
mod sinusoidal;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::context::GpuContext;
use crate::error::{check_len, Error, Result};

/// Relative tolerance for `inv_freq` and `attention_scaling`.
///
/// The peers computed both in f32 arithmetic (a power of an f32 exponent, then the scaling
/// rule) while posenc computes them in f64, so the peer's value can be a few f32 ulps off the
/// exact one. 1e-6 is 8 to 17 f32 ulps, since an ulp is 2^-24 to 2^-23 of the value. The
/// file's own `tolerance.abs` is not used here because it is sized for cos/sin rows at large
/// positions.
pub const FREQUENCY_REL_TOLERANCE: f64 = 1e-6;

/// One golden file: its kind and tolerance, with the kind-specific sections kept as JSON
/// until [`verify`] parses them for that kind.
#[derive(Clone, Debug, Deserialize)]
pub struct GoldenFile {
    /// File name used in messages (the path given to [`load`], or the name given to [`parse`]).
    #[serde(skip)]
    pub name: String,
    /// `rope`, `alibi_slopes`, `sinusoidal` or `attention`.
    pub kind: String,
    /// Allowed error of every output element.
    pub tolerance: Tolerance,
    /// Kind-specific configuration.
    pub params: serde_json::Value,
    /// Kind-specific inputs.
    pub inputs: serde_json::Value,
    /// Kind-specific expected outputs.
    pub outputs: serde_json::Value,
}

/// The allowed error of an output element: `abs + rel * |expected|`, where rows of a RoPE or
/// sinusoidal table use `abs_per_position[row]` in place of `abs` when the file has it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f64,
    /// Relative part, a fraction of `|expected|`.
    pub rel: f64,
    /// Absolute part for each position (one per row of `cos`, `sin`, `y` or `pe`).
    #[serde(default)]
    pub abs_per_position: Option<Vec<f64>>,
}

/// The computation (host, CPU or GPU) that produced a checked quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComputePath {
    /// Device-independent math on the host in f64 (frequencies, slopes).
    Host,
    /// The CPU reference implementation.
    Cpu,
    /// The wgpu compute shaders.
    Gpu,
}

/// The output quantity that a [`Check`] compares, named as in the golden files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// RoPE inverse frequencies after scaling.
    InvFreq,
    /// The RoPE factor that multiplies cos and sin.
    AttentionScaling,
    /// RoPE cos table.
    Cos,
    /// RoPE sin table.
    Sin,
    /// Rotated RoPE input.
    Y,
    /// ALiBi slopes.
    Slopes,
    /// Sinusoidal table.
    Pe,
    /// Attention probabilities.
    Probs,
    /// Attention output.
    Out,
    /// Attention rows with no visible key.
    FullyMaskedRows,
}

/// The result of comparing one computed quantity with the file's expected values.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The computation that produced the values.
    pub path: ComputePath,
    /// The compared quantity.
    pub quantity: Quantity,
    /// Largest `|got - expected|` over all elements. For [`Quantity::FullyMaskedRows`] it is
    /// the number of `(batch, head, query row)` rows whose masked state differs.
    pub max_abs_error: f64,
    /// The allowed error of the element with the largest error (0 for
    /// [`Quantity::FullyMaskedRows`]).
    pub bound: f64,
    /// Element with the largest ratio of error to its bound (for
    /// [`Quantity::FullyMaskedRows`], the first mismatched row, counting `(batch, head, query
    /// row)` in row-major order).
    pub worst_index: usize,
    /// The ratio at `worst_index`. The check passes when it is at most 1.
    pub worst_ratio: f64,
    /// Whether every element is within its bound.
    pub passed: bool,
}

/// The outcome of verifying one file.
#[derive(Clone, Debug, PartialEq)]
pub enum Verification {
    /// Every quantity the file covers was recomputed and compared.
    Checked(Vec<Check>),
    /// The file needs something posenc does not implement (an unknown kind, scaling type
    /// or layout, or non-standard ALiBi slopes in attention); nothing was compared.
    Unsupported {
        /// The kind, parameter or value that posenc does not support.
        reason: String,
    },
}

impl Verification {
    /// Returns true when the file was checked and every check passed.
    pub fn passed(&self) -> bool {
        match self {
            Verification::Checked(checks) => checks.iter().all(|check| check.passed),
            Verification::Unsupported { .. } => false,
        }
    }
}

/// Reads and parses a golden file. Only the common fields are checked, as in [`parse`].
///
/// # Errors
/// [`Error::Config`] when the file cannot be read or is not a golden file.
pub fn load(path: impl AsRef<std::path::Path>) -> Result<GoldenFile> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        path: name.clone(),
        message: format!("cannot read the file: {e}; check the path"),
    })?;
    parse(&text, &name)
}

/// Parses the text of a golden file, naming it `name` in messages.
///
/// Only `kind`, `tolerance` and the presence of `params`, `inputs` and `outputs` are checked
/// here; [`verify`] parses the sections for the kind.
///
/// # Errors
/// [`Error::Config`] for invalid JSON or a missing or mistyped common field;
/// [`Error::InvalidParameter`] for a tolerance that is negative or not finite.
pub fn parse(text: &str, name: &str) -> Result<GoldenFile> {
    let mut file: GoldenFile = serde_json::from_str(text).map_err(|e| Error::Config {
        path: name.to_string(),
        message: format!("not a valid golden file: {e}"),
    })?;
    file.name = name.to_string();
    file.tolerance.validate()?;
    Ok(file)
}

/// Recomputes every quantity of `file` from its `params` and `inputs` on the host and the
/// CPU, and on the GPU when `gpu` is given, and compares each with the file's outputs.
///
/// # Errors
/// [`Error::Config`] for a missing or mistyped field of `params`, `inputs` or `outputs`;
/// [`Error::LengthMismatch`] for an array whose length does not match the shapes;
/// [`Error::InvalidShape`] / [`Error::InvalidParameter`] for values the operations reject;
/// [`Error::Gpu`] when wgpu fails. A file that posenc cannot compute is not an error but
/// [`Verification::Unsupported`].
pub fn verify(file: &GoldenFile, gpu: Option<&GpuContext>) -> Result<Verification> {
    let checks = match file.kind.as_str() {
        "rope" => rope::verify(file, gpu),
        "alibi_slopes" => alibi::verify(file),
        "sinusoidal" => sinusoidal::verify(file, gpu),
        "attention" => attention::verify(file, gpu),
        other => Err(Stop::Unsupported(format!(
            "kind {other:?} is not one of rope, alibi_slopes, sinusoidal, attention"
        ))),
    };
    match checks {
        Ok(checks) => Ok(Verification::Checked(checks)),
        Err(Stop::Unsupported(reason)) => Ok(Verification::Unsupported { reason }),
        Err(Stop::Invalid(error)) => Err(error),
    }
}

/// The reason that verification of a file stopped before all checks were made.
enum Stop {
    /// The file needs something posenc does not implement.
    Unsupported(String),
    /// The file is invalid, or an operation failed.
    Invalid(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Invalid(error)
    }
}

type Outcome<T> = std::result::Result<T, Stop>;

impl GoldenFile {
    /// Deserializes one section (`params`, `inputs` or `outputs`) into the kind's type.
    fn section<T: DeserializeOwned>(&self, name: &str, value: &serde_json::Value) -> Result<T> {
        T::deserialize(value).map_err(|e| Error::Config {
            path: self.name.clone(),
            message: format!("{name}: {e}; fix that field of the file"),
        })
    }

    /// Builds the error for a field that the file's parameters need but that is absent.
    fn missing(&self, field: &str, reason: &str) -> Error {
        Error::Config {
            path: self.name.clone(),
            message: format!("{field} is missing; {reason}"),
        }
    }
}

impl Tolerance {
    fn validate(&self) -> Result<()> {
        let per_position = self.abs_per_position.iter().flatten();
        let parts = [("tolerance.abs", &self.abs), ("tolerance.rel", &self.rel)];
        let all = parts
            .into_iter()
            .chain(per_position.map(|value| ("tolerance.abs_per_position", value)));
        for (name, &value) in all {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::param(
                    name,
                    value,
                    "a tolerance must be finite and not negative",
                ));
            }
        }
        Ok(())
    }

    /// Checks that `abs_per_position`, when present, has one value per position.
    fn check_positions(&self, positions: usize) -> Result<()> {
        match &self.abs_per_position {
            Some(values) => check_len("tolerance.abs_per_position", values.len(), positions),
            None => Ok(()),
        }
    }

    /// Returns the absolute part of the bound for table row `row`. Call
    /// [`Tolerance::check_positions`] first.
    fn row_abs(&self, row: usize) -> f64 {
        self.abs_per_position
            .as_ref()
            .and_then(|values| values.get(row).copied())
            .unwrap_or(self.abs)
    }
}

/// Compares `got` with `want` element by element, where `bound(index, want)` is the allowed
/// error of each element.
fn compare<T: Copy + Into<f64>>(
    path: ComputePath,
    quantity: Quantity,
    got: &[T],
    want: &[f64],
    bound: impl Fn(usize, f64) -> f64,
) -> Check {
    let mut check = Check {
        path,
        quantity,
        max_abs_error: 0.0,
        bound: want.first().map_or(0.0, |&w| bound(0, w)),
        worst_index: 0,
        worst_ratio: 0.0,
        passed: true,
    };
    if got.len() != want.len() {
        // The callers check the expected lengths, so this is an operation returning the wrong
        // number of elements: a failure of the computation, not of the file.
        check.max_abs_error = f64::INFINITY;
        check.worst_ratio = f64::INFINITY;
        check.passed = false;
        return check;
    }
    for (index, (&got, &want)) in got.iter().zip(want).enumerate() {
        let error = (got.into() - want).abs();
        let allowed = bound(index, want);
        // A NaN error (NaN output) must fail, so it counts as infinitely large.
        let error = if error.is_nan() { f64::INFINITY } else { error };
        let ratio = if error == 0.0 {
            0.0
        } else if allowed == 0.0 {
            f64::INFINITY
        } else {
            error / allowed
        };
        if error > check.max_abs_error {
            check.max_abs_error = error;
            check.bound = allowed;
        }
        if ratio > check.worst_ratio {
            check.worst_ratio = ratio;
            check.worst_index = index;
        }
    }
    check.passed = check.worst_ratio <= 1.0;
    check
}

/// Compares with the file's element bound `abs + rel * |want|`.
fn compare_elements<T: Copy + Into<f64>>(
    path: ComputePath,
    quantity: Quantity,
    got: &[T],
    want: &[f64],
    tolerance: &Tolerance,
) -> Check {
    compare(path, quantity, got, want, |_, w| {
        tolerance.abs + tolerance.rel * w.abs()
    })
}

/// Compares a table whose rows of `row_len` elements each belong to one position, with the
/// bound `abs_per_position[row] + rel * |want|`.
fn compare_rows(
    path: ComputePath,
    quantity: Quantity,
    got: &[f32],
    want: &[f64],
    row_len: usize,
    tolerance: &Tolerance,
) -> Check {
    compare(path, quantity, got, want, |index, w| {
        tolerance.row_abs(index / row_len) + tolerance.rel * w.abs()
    })
}

/// Compares host values with the relative bound [`FREQUENCY_REL_TOLERANCE`].
fn compare_frequencies(quantity: Quantity, got: &[f64], want: &[f64]) -> Check {
    compare(ComputePath::Host, quantity, got, want, |_, w| {
        FREQUENCY_REL_TOLERANCE * w.abs()
    })
}

/// Converts position ids to the u32 that the operations take.
fn positions_u32(positions: &[u64]) -> Result<Vec<u32>> {
    positions
        .iter()
        .enumerate()
        .map(|(index, &position)| {
            u32::try_from(position).map_err(|_| Error::PositionOutOfRange {
                position,
                index,
                limit: 1 << 32,
            })
        })
        .collect()
}

impl fmt::Display for ComputePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComputePath::Host => "host",
            ComputePath::Cpu => "cpu",
            ComputePath::Gpu => "gpu",
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::InvFreq => "inv_freq",
            Quantity::AttentionScaling => "attention_scaling",
            Quantity::Cos => "cos",
            Quantity::Sin => "sin",
            Quantity::Y => "y",
            Quantity::Slopes => "slopes",
            Quantity::Pe => "pe",
            Quantity::Probs => "probs",
            Quantity::Out => "out",
            Quantity::FullyMaskedRows => "fully_masked_rows",
        })
    }
}
