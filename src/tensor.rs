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

    /// Returns the largest position plus one, or 0 when there are no tokens.
    pub fn len_needed(&self, seq_len: usize) -> u64 {
        match *self {
            Positions::Start(start) if seq_len > 0 => u64::from(start) + seq_len as u64,
            Positions::Start(_) => 0,
            Positions::Ids(ids) => ids.iter().map(|&p| u64::from(p) + 1).max().unwrap_or(0),
        }
    }
}

/// Storage type of a tensor in a GPU buffer; arithmetic is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DType {
    /// IEEE binary32.
    #[default]
    F32,
    /// IEEE binary16; needs the adapter's `SHADER_F16` feature.
    F16,
    /// bfloat16 (the upper half of an f32), the storage type of most checkpoints. Stored two
    /// per 32-bit word, little end first, and widened in the shader; works on every adapter.
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }

    /// Returns the lower-case name: `f32`, `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }
}

/// A host element type that maps to a [`DType`]: `f32`, `half::f16` or `half::bf16`.
pub trait Element: bytemuck::Pod + Copy + Send + Sync + 'static {
    /// The matching storage type.
    const DTYPE: DType;
    /// Widens to f32 (exact).
    fn to_f32(self) -> f32;
    /// Rounds an f32 to nearest even.
    fn from_f32(value: f32) -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        half::f16::from_f32(value)
    }
}

impl Element for half::bf16 {
    const DTYPE: DType = DType::Bf16;
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        half::bf16::from_f32(value)
    }
}

/// A tensor in a caller's GPU buffer: the buffer, the element offset where it starts, and
/// its storage type.
///
/// The offset is passed to the shader, so it needs no binding alignment.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// The buffer; it needs `STORAGE` usage.
    pub buffer: &'a wgpu::Buffer,
    /// Offset of the first element, in elements of `dtype` (not bytes).
    pub offset: u64,
    /// Storage type of the elements.
    pub dtype: DType,
}

impl<'a> TensorView<'a> {
    /// Creates an f32 view starting at the first element of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer) -> Self {
        Self {
            buffer,
            offset: 0,
            dtype: DType::F32,
        }
    }

    /// Creates an f32 view starting at element `offset` of `buffer`.
    pub fn at(buffer: &'a wgpu::Buffer, offset: u64) -> Self {
        Self {
            buffer,
            offset,
            dtype: DType::F32,
        }
    }

    /// Returns the same view with another storage type (the offset counts elements of that type).
    pub fn with_dtype(self, dtype: DType) -> Self {
        Self { dtype, ..self }
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
        /// `true` when the buffer contains `batch * seq_len` ids (one list per sequence),
        /// `false` when every sequence shares `seq_len` ids.
        per_sequence: bool,
    },
}
