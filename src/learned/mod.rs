//! Learned absolute position embeddings (GPT-2, BERT): rows of a trained table added by
//! position id.
//!
//! `out[b, t, :] = embeddings[b, t, :] + table[position(b, t), :]`. A position at or past the
//! table's row count is an error ([`crate::Error::PositionOutOfRange`] on the host,
//! [`crate::Error::PositionsOutOfRange`] when the ids live in a GPU buffer), never a clamped
//! read.

pub mod gpu;

use crate::error::{check_len, checked_product, Error, Result};
use crate::tensor::Positions;

/// Shape of a learned position table `[max_positions, dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnedTable {
    /// Number of rows (positions the model was trained with, 1024 for GPT-2).
    pub max_positions: usize,
    /// Width of each row (the model dimension).
    pub dim: usize,
}

impl LearnedTable {
    /// A table of `max_positions` rows of width `dim`.
    pub fn new(max_positions: usize, dim: usize) -> Self {
        Self { max_positions, dim }
    }

    /// Checks the shape and the table length.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for a zero width or a table past u32 indexing;
    /// [`Error::LengthMismatch`] when `table_len != max_positions * dim`.
    pub fn validate(&self, table_len: usize) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::shape(
                "dim",
                self.dim,
                "the embedding width must be at least 1",
            ));
        }
        let expected = checked_product("table", &[self.max_positions, self.dim])?;
        if expected > u32::MAX as usize {
            return Err(Error::shape(
                "max_positions",
                self.max_positions,
                "max_positions * dim must be below 2^32",
            ));
        }
        check_len("table", table_len, expected)
    }
}

/// Adds table rows to `embeddings` `[batch, seq_len, dim]` in place, on the CPU.
///
/// # Errors
/// Invalid shapes or lengths, and [`Error::PositionOutOfRange`] for a position at or past
/// `shape.max_positions`.
pub fn add_cpu(
    shape: &LearnedTable,
    table: &[f32],
    positions: Positions<'_>,
    batch: usize,
    seq_len: usize,
    embeddings: &mut [f32],
) -> Result<()> {
    shape.validate(table.len())?;
    check_len(
        "embeddings",
        embeddings.len(),
        checked_product("embeddings", &[batch, seq_len, shape.dim])?,
    )?;
    positions.validate(batch, seq_len, shape.max_positions as u64)?;

    for b in 0..batch {
        for t in 0..seq_len {
            let position = positions.get(b, t, seq_len) as usize;
            let source = &table[position * shape.dim..][..shape.dim];
            let row = &mut embeddings[(b * seq_len + t) * shape.dim..][..shape.dim];
            for (value, add) in row.iter_mut().zip(source) {
                *value += add;
            }
        }
    }
    Ok(())
}
