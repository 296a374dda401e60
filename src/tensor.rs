//! Tensor layouts and position ids shared by the operations.

use crate::error::{Error, Result};

/// Memory layout of a 4-D activation tensor, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// `[batch, seq, heads, head_dim]`: the output of a QKV projection reshaped (Hugging Face
    /// before its transpose, llama.cpp, FlashAttention).
    #[default]
    Bshd,
    /// `[batch, heads, seq, head_dim]`: PyTorch SDPA and the Hugging Face attention modules.
    Bhsd,
}

impl Layout {
    /// Element strides `(batch, seq, head)` of a tensor with this layout; head_dim is contiguous.
    pub fn strides(self, seq_len: usize, num_heads: usize, head_dim: usize) -> [usize; 3] {
        match self {
            Layout::Bshd => [
                seq_len * num_heads * head_dim,
                num_heads * head_dim,
                head_dim,
            ],
            Layout::Bhsd => [num_heads * seq_len * head_dim, head_dim, seq_len * head_dim],
        }
    }
}

/// The position id of each token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positions<'a> {
    /// Token `t` of every sequence has position `start + t` (a prompt, or decoding after
    /// `start` cached tokens).
    Start(u32),
    /// One position per token: either `seq_len` values shared by every sequence of the batch
    /// or `batch * seq_len` values, sequence by sequence.
    Ids(&'a [u32]),
}

impl Positions<'_> {
    /// Position of token `token` of sequence `batch`. Call [`Positions::validate`] first.
    pub(crate) fn get(&self, batch: usize, token: usize, seq_len: usize) -> u64 {
        match *self {
            Positions::Start(start) => u64::from(start) + token as u64,
            Positions::Ids(ids) if ids.len() == seq_len => u64::from(ids[token]),
            Positions::Ids(ids) => u64::from(ids[batch * seq_len + token]),
        }
    }

    /// Checks the id count against the shape and every position against `limit` (exclusive).
    pub(crate) fn validate(&self, batch: usize, seq_len: usize, limit: u64) -> Result<()> {
        match *self {
            Positions::Start(start) => {
                let last = u64::from(start) + seq_len.saturating_sub(1) as u64;
                if seq_len > 0 && last >= limit {
                    return Err(Error::PositionOutOfRange {
                        position: last,
                        index: seq_len - 1,
                        limit,
                    });
                }
            }
            Positions::Ids(ids) => {
                if ids.len() != seq_len && Some(ids.len()) != batch.checked_mul(seq_len) {
                    return Err(Error::LengthMismatch {
                        name: "positions",
                        expected: seq_len as u64,
                        actual: ids.len() as u64,
                    });
                }
                if let Some((index, &position)) =
                    ids.iter().enumerate().find(|(_, &p)| u64::from(p) >= limit)
                {
                    return Err(Error::PositionOutOfRange {
                        position: u64::from(position),
                        index,
                        limit,
                    });
                }
            }
        }
        Ok(())
    }

    /// The largest position plus one, or 0 when there are no tokens.
    pub fn len_needed(&self, seq_len: usize) -> u64 {
        match *self {
            Positions::Start(start) if seq_len > 0 => u64::from(start) + seq_len as u64,
            Positions::Start(_) => 0,
            Positions::Ids(ids) => ids.iter().map(|&p| u64::from(p) + 1).max().unwrap_or(0),
        }
    }
}

/// A tensor in a caller's GPU buffer: the buffer and the element offset where it starts.
///
/// The offset is passed to the shader, so it needs no binding alignment.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// The buffer; it needs `STORAGE` usage.
    pub buffer: &'a wgpu::Buffer,
    /// Offset of the first element, in elements (not bytes).
    pub offset: u64,
}

impl<'a> TensorView<'a> {
    /// A view starting at the first element of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer) -> Self {
        Self { buffer, offset: 0 }
    }

    /// A view starting at element `offset` of `buffer`.
    pub fn at(buffer: &'a wgpu::Buffer, offset: u64) -> Self {
        Self { buffer, offset }
    }
}

/// Position ids for a GPU operation: computed from a start, or read from a caller's buffer.
#[derive(Clone, Copy, Debug)]
pub enum GpuPositions<'a> {
    /// Token `t` has position `start + t`.
    Start(u32),
    /// One u32 per token in a GPU buffer. The host cannot check these values: kernels that
    /// have a position limit count the positions past it in a status buffer and leave those
    /// rows unwritten.
    Buffer {
        /// The ids, as u32 elements.
        ids: TensorView<'a>,
        /// `true` when the buffer holds `batch * seq_len` ids (one list per sequence),
        /// `false` when every sequence shares `seq_len` ids.
        per_sequence: bool,
    },
}
