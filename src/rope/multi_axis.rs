//! Multi-axis RoPE: each token has two or three position ids, and each rotated pair takes
//! its angle from one of them.
//!
//! Pair `i` rotates by `position[axis(i)] * inv_freq[i]`, where [`RopeAxes`] fixes which
//! axis each pair takes and [`MultiAxisRope::frequencies`] gives one inverse frequency per
//! pair. Everything else is plain RoPE: the layout pairs features as in
//! [`crate::rope::RopeLayout`], the attention factor multiplies cos and sin, and features
//! past `rotary_dim` pass through.
//!
//! - M-RoPE (Qwen2-VL's multimodal RoPE, transformers `apply_multimodal_rotary_pos_emb` in
//!   `modeling_qwen2_vl.py`, 4.5x): ids (temporal, height, width) and consecutive sections
//!   of `mrope_section = [t, h, w]` pairs over the ladder of plain RoPE. A text token has
//!   three equal ids, so it gets plain RoPE.
//! - Axial 2-D RoPE for image patches: ids (row, column); the first `rotary_dim / 4` pairs
//!   rotate by the row and the last `rotary_dim / 4` by the column. [`AxialFrequencies`]
//!   names the models whose frequencies each choice reproduces.

use crate::error::{Error, Result};
use crate::rope::{check_qk, rotate_qk_cpu, QkShape, RopeConfig, RopeFrequencies};

/// Assignment of the rotated pairs to position axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeAxes {
    /// M-RoPE of Qwen2-VL with ids (temporal, height, width). `section = [t, h, w]` counts
    /// pairs and sums to `rotary_dim / 2`: pairs `0..t` take the temporal id, `t..t+h` the
    /// height id and the rest the width id, each with its own `inv_freq[i]` of plain RoPE.
    ///
    /// transformers splits the duplicated cos/sin tables `[c, c]` by `mrope_section * 2`,
    /// so in the half layout both features `i` and `i + rotary_dim/2` of pair `i` fall in
    /// the same section, as here. Qwen2-VL uses the half layout and, for head_dim 128,
    /// `mrope_section = [16, 24, 24]`.
    Mrope {
        /// Pairs per axis: temporal, height, width.
        section: [usize; 3],
    },
    /// Axial 2-D RoPE with ids (row, column): pairs `0..rotary_dim/4` take the row and
    /// pairs `rotary_dim/4..rotary_dim/2` the column. Needs `rotary_dim % 4 == 0`.
    Axial2d {
        /// The inverse frequency of each pair.
        frequencies: AxialFrequencies,
    },
}

/// Inverse frequencies of axial 2-D RoPE, for `R = rotary_dim` and `j < R/4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AxialFrequencies {
    /// Each axis has the ladder of plain RoPE over `R/2` features: row pair `j` and column
    /// pair `R/4 + j` both rotate at `base^(-4j/R)`.
    ///
    /// This is the vision encoder of Qwen2-VL (transformers `VisionRotaryEmbedding` built
    /// with `head_dim / 2`, ids `[h, w]` from `rot_pos_emb`, half layout, base 10000). The
    /// axial RoPE of Heo et al. (2024), "Rotary Position Embedding for Vision Transformer"
    /// (naver-ai/rope-vit `compute_axial_cis`, base 100), has the same frequencies but the
    /// interleaved layout and the column (`t_x`) on the first half: use
    /// [`crate::rope::RopeLayout::Interleaved`] and pass ids as (column, row).
    #[default]
    PerAxis,
    /// One ladder `base^(-2i/R)` over all `R/2` pairs, even entries to the rows and odd
    /// entries to the columns: row pair `j` at `base^(-4j/R)`, column pair `R/4 + j` at
    /// `base^(-(4j+2)/R)`.
    ///
    /// This is Pixtral's vision encoder (transformers `PixtralRotaryEmbedding`, 5.x, half
    /// layout). transformers passes one id `row * max_width + column` that indexes a
    /// precomputed table; here the two ids are given directly.
    Alternating,
}

/// A RoPE config with a split of its pairs among position axes.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiAxisRope {
    /// Dimensions, base, layout and scaling, as for plain RoPE.
    pub config: RopeConfig,
    /// Assignment of pairs to axes.
    pub axes: RopeAxes,
}

impl MultiAxisRope {
    /// M-RoPE with `section = [t, h, w]` pairs per axis (the config's `mrope_section`).
    pub fn mrope(config: RopeConfig, section: [usize; 3]) -> Self {
        Self {
            config,
            axes: RopeAxes::Mrope { section },
        }
    }

    /// Axial 2-D RoPE with ids (row, column).
    pub fn axial(config: RopeConfig, frequencies: AxialFrequencies) -> Self {
        Self {
            config,
            axes: RopeAxes::Axial2d { frequencies },
        }
    }

    /// Position ids per token: 3 for M-RoPE, 2 for axial 2-D RoPE.
    pub fn axis_count(&self) -> usize {
        match self.axes {
            RopeAxes::Mrope { .. } => 3,
            RopeAxes::Axial2d { .. } => 2,
        }
    }

    /// Checks the config and the split of pairs among axes.
    ///
    /// # Errors
    /// As for [`RopeConfig::validate`]; [`Error::InvalidShape`] named `mrope_section` when
    /// the sections do not sum to `rotary_dim / 2`, or named `rotary_dim` when axial 2-D
    /// RoPE gets a `rotary_dim` that is not a multiple of 4.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        let half = self.config.rotary_dim / 2;
        match self.axes {
            RopeAxes::Mrope { section } => {
                let sum = section
                    .iter()
                    .try_fold(0usize, |acc, &s| acc.checked_add(s));
                if sum != Some(half) {
                    return Err(Error::shape(
                        "mrope_section",
                        sum.unwrap_or(usize::MAX),
                        format!(
                            "the sections {section:?} must count rotary_dim / 2 = {half} pairs \
                             in all; mrope_section counts pairs, not features"
                        ),
                    ));
                }
            }
            RopeAxes::Axial2d { .. } => {
                if !self.config.rotary_dim.is_multiple_of(4) {
                    return Err(Error::shape(
                        "rotary_dim",
                        self.config.rotary_dim,
                        "axial 2-D RoPE gives rows and columns rotary_dim / 4 pairs each, so \
                         rotary_dim must be a multiple of 4",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Computes one inverse frequency per pair, in pair order, and the attention factor, for
    /// positions below `seq_len` (only dynamic NTK and LongRoPE look at it).
    ///
    /// M-RoPE takes the config's frequencies unchanged. Axial 2-D RoPE applies the config's
    /// scaling to the ladder it uses: a config with `rotary_dim / 2` features per axis for
    /// [`AxialFrequencies::PerAxis`], the whole config for [`AxialFrequencies::Alternating`].
    ///
    /// # Errors
    /// As for [`MultiAxisRope::validate`] and [`RopeConfig::frequencies`].
    pub fn frequencies(&self, seq_len: u64) -> Result<RopeFrequencies> {
        self.validate()?;
        let RopeAxes::Axial2d { frequencies } = self.axes else {
            return self.config.frequencies(seq_len);
        };
        match frequencies {
            AxialFrequencies::PerAxis => {
                let per_axis = RopeConfig {
                    head_dim: self.config.rotary_dim / 2,
                    rotary_dim: self.config.rotary_dim / 2,
                    ..self.config.clone()
                };
                let ladder = per_axis.frequencies(seq_len)?;
                Ok(RopeFrequencies {
                    inv_freq: [ladder.inv_freq.as_slice(), &ladder.inv_freq].concat(),
                    attention_factor: ladder.attention_factor,
                })
            }
            AxialFrequencies::Alternating => {
                let ladder = self.config.frequencies(seq_len)?;
                let rows = ladder.inv_freq.iter().step_by(2);
                let columns = ladder.inv_freq.iter().skip(1).step_by(2);
                Ok(RopeFrequencies {
                    inv_freq: rows.chain(columns).copied().collect(),
                    attention_factor: ladder.attention_factor,
                })
            }
        }
    }

    /// Returns the first pair that takes axis 1 and the first that takes axis 2, or
    /// `rotary_dim / 2` for an axis that no pair takes.
    pub(crate) fn axis_starts(&self) -> [usize; 2] {
        let half = self.config.rotary_dim / 2;
        match self.axes {
            RopeAxes::Mrope { section } => [section[0], section[0] + section[1]],
            RopeAxes::Axial2d { .. } => [half / 2, half],
        }
    }
}

/// Returns the axis that pair `pair` takes, given [`MultiAxisRope::axis_starts`].
pub(crate) fn pair_axis(axis_starts: [usize; 2], pair: usize) -> usize {
    usize::from(pair >= axis_starts[0]) + usize::from(pair >= axis_starts[1])
}

/// Order of the ids in a multi-axis position list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AxisOrder {
    /// `[batch, seq, axes]`: the ids of one token are adjacent.
    #[default]
    TokenMajor,
    /// `[axes, batch, seq]`: one list per axis, as transformers' M-RoPE `position_ids` of
    /// shape `(3, batch, seq_len)`.
    AxisMajor,
}

impl AxisOrder {
    /// Element strides `[batch, token, axis]` of the ids. With `per_sequence == false` every
    /// sequence shares one list of `seq_len` tokens, so the batch stride is 0.
    pub(crate) fn strides(
        self,
        axes: usize,
        batch: usize,
        seq_len: usize,
        per_sequence: bool,
    ) -> [usize; 3] {
        let sequences = if per_sequence { batch } else { 1 };
        let batch_stride = |stride: usize| if per_sequence { stride } else { 0 };
        match self {
            AxisOrder::TokenMajor => [batch_stride(seq_len * axes), axes, 1],
            AxisOrder::AxisMajor => [batch_stride(seq_len), 1, sequences * seq_len],
        }
    }
}

/// Position ids of multi-axis RoPE on the host: [`MultiAxisRope::axis_count`] ids per token.
///
/// `ids` contains either one list per sequence (`axes * batch * seq_len` ids) or one list that
/// every sequence of the batch shares (`axes * seq_len` ids), ordered by `order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisPositions<'a> {
    /// The ids.
    pub ids: &'a [u32],
    /// Their order.
    pub order: AxisOrder,
}

impl<'a> AxisPositions<'a> {
    /// Ids ordered `[batch, seq, axes]`.
    pub fn token_major(ids: &'a [u32]) -> Self {
        Self {
            ids,
            order: AxisOrder::TokenMajor,
        }
    }

    /// Ids ordered `[axes, batch, seq]`.
    pub fn axis_major(ids: &'a [u32]) -> Self {
        Self {
            ids,
            order: AxisOrder::AxisMajor,
        }
    }

    /// Checks the id count and returns the `[batch, token, axis]` strides.
    pub(crate) fn strides(&self, axes: usize, batch: usize, seq_len: usize) -> Result<[usize; 3]> {
        let shared = axes.checked_mul(seq_len);
        let per_sequence = shared.and_then(|n| n.checked_mul(batch));
        if Some(self.ids.len()) == per_sequence {
            return Ok(self.order.strides(axes, batch, seq_len, true));
        }
        if Some(self.ids.len()) == shared {
            return Ok(self.order.strides(axes, batch, seq_len, false));
        }
        Err(Error::LengthMismatch {
            name: "positions",
            expected: per_sequence.unwrap_or(usize::MAX) as u64,
            actual: self.ids.len() as u64,
        })
    }
}

/// Rotates Q and K in place on the CPU with multi-axis RoPE, in f64.
///
/// # Errors
/// As for [`MultiAxisRope::validate`] and [`crate::rope::apply_cpu`];
/// [`Error::LengthMismatch`] named `positions` when the ids are neither
/// `axes * batch * seq_len` nor `axes * seq_len` long.
pub fn apply_cpu(
    rope: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: AxisPositions<'_>,
    q: &mut [f32],
    k: &mut [f32],
) -> Result<()> {
    rotate_cpu(rope, frequencies, shape, positions, 1.0, [q, k])
}

/// Applies the gradient of multi-axis RoPE with respect to its input in place on the CPU:
/// rotation by the negative angles with the attention factor kept, as
/// [`crate::rope::apply_backward_cpu`] does for plain RoPE.
///
/// # Errors
/// As for [`apply_cpu`].
pub fn apply_backward_cpu(
    rope: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: AxisPositions<'_>,
    dq: &mut [f32],
    dk: &mut [f32],
) -> Result<()> {
    rotate_cpu(rope, frequencies, shape, positions, -1.0, [dq, dk])
}

fn rotate_cpu(
    rope: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: AxisPositions<'_>,
    sign: f64,
    [q, k]: [&mut [f32]; 2],
) -> Result<()> {
    rope.validate()?;
    check_qk(&rope.config, frequencies, shape, q, k)?;
    let [batch_stride, token_stride, axis_stride] =
        positions.strides(rope.axis_count(), shape.batch, shape.seq_len)?;
    let axis_starts = rope.axis_starts();
    let ids = positions.ids;
    rotate_qk_cpu(
        &rope.config,
        frequencies,
        shape,
        sign,
        [q, k],
        |b, t, pair| {
            let axis = pair_axis(axis_starts, pair);
            u64::from(ids[b * batch_stride + t * token_stride + axis * axis_stride])
        },
    );
    Ok(())
}
