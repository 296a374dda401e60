//! The crate's error type.

/// Everything that can go wrong in posenc, with the offending values.
///
/// Every check that the host can make happens before any GPU work is recorded, so an `Err`
/// from an operation means nothing was dispatched, except for [`Error::Gpu`] and
/// [`Error::PositionsOutOfRange`], which are found while or after the work runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A shape, size or count is invalid for the operation.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidShape {
        /// The name of the shape parameter, e.g. `head_dim`.
        name: &'static str,
        /// The offending value.
        value: i64,
        /// The requirement and how to meet it.
        reason: String,
    },

    /// A numeric parameter is out of its valid range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The name of the parameter, e.g. `base` or `factor`.
        name: &'static str,
        /// The offending value.
        value: f64,
        /// The requirement and how to meet it.
        reason: String,
    },

    /// A slice or buffer has the wrong number of elements.
    #[error("{name} has {actual} elements but the shape requires {expected}; pass a {name} of length {expected}")]
    LengthMismatch {
        /// The name of the argument, e.g. `q` or `positions`.
        name: &'static str,
        /// Required element count.
        expected: u64,
        /// Actual element count.
        actual: u64,
    },

    /// A buffer view reaches past the end of its buffer.
    #[error("{name}: elements {offset}..{end} do not fit in a buffer of {capacity} elements; use a larger buffer or a smaller offset")]
    BufferTooSmall {
        /// The name of the argument.
        name: &'static str,
        /// First element of the view.
        offset: u64,
        /// One past the last element of the view.
        end: u64,
        /// Number of elements the buffer holds.
        capacity: u64,
    },

    /// A caller's buffer cannot be used as the operation binds it: a usage flag is missing,
    /// or a buffer that the kernel writes is also bound to another of its tensors.
    #[error("invalid {name} buffer: {reason}")]
    InvalidBuffer {
        /// The name of the argument, e.g. `target` or `out`.
        name: &'static str,
        /// The problem and how to fix it.
        reason: String,
    },

    /// A position id is at or past the end of a table or the range the frequencies were made for.
    #[error(
        "position {position} at token {index} is out of range: positions must be below {limit}"
    )]
    PositionOutOfRange {
        /// The offending position.
        position: u64,
        /// Token index where it was found.
        index: usize,
        /// Exclusive upper bound.
        limit: u64,
    },

    /// The GPU kernel found positions out of range in a caller's position buffer and left
    /// those rows unwritten.
    #[error("{count} position(s) in the position buffer are at or past {limit}; their rows were left unwritten")]
    PositionsOutOfRange {
        /// Number of offending positions.
        count: u32,
        /// Exclusive upper bound.
        limit: u64,
    },

    /// The operation needs something the adapter does not have.
    #[error("the adapter does not support {what}; {hint}")]
    Unsupported {
        /// The missing capability.
        what: String,
        /// The alternative to use.
        hint: String,
    },

    /// No wgpu adapter matched the request.
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),

    /// wgpu reported an error (validation, out of memory, device lost, map failure).
    #[error("wgpu error during {during}: {message}")]
    Gpu {
        /// The step that failed.
        during: &'static str,
        /// wgpu's message.
        message: String,
    },

    /// A configuration or golden file could not be read or parsed.
    #[error("{path}: {message}")]
    Config {
        /// The file (or `<memory>`).
        path: String,
        /// The problem, naming the key.
        message: String,
    },
}

/// Shorthand for `std::result::Result<T, posenc::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn shape(
        name: &'static str,
        value: impl TryInto<i64>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidShape {
            name,
            value: value.try_into().unwrap_or(i64::MAX),
            reason: reason.into(),
        }
    }

    pub(crate) fn param(name: &'static str, value: f64, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            value,
            reason: reason.into(),
        }
    }
}

/// Checks that a slice has the length a shape requires.
pub(crate) fn check_len(name: &'static str, actual: usize, expected: usize) -> Result<()> {
    if actual != expected {
        return Err(Error::LengthMismatch {
            name,
            expected: expected as u64,
            actual: actual as u64,
        });
    }
    Ok(())
}

/// Multiplies shape dimensions, rejecting products that overflow `usize`.
pub(crate) fn checked_product(name: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d).ok_or_else(|| {
            Error::shape(
                name,
                i64::MAX,
                format!("the element count of {dims:?} overflows usize; use smaller dimensions"),
            )
        })
    })
}
