//! Transformer positional encodings and masked attention on any GPU that wgpu reaches, with
//! a CPU reference for every operation.
//!
//! | family | CPU | GPU |
//! |---|---|---|
//! | sinusoidal (Vaswani et al., 2017) | [`sinusoidal::table_cpu`], [`sinusoidal::add_cpu`] | [`sinusoidal::gpu`] |
//! | learned absolute | [`learned::add_cpu`] | [`learned::gpu`] |
//! | RoPE and its scaling methods | [`rope::apply_cpu`], [`rope::tables_cpu`] | [`rope::gpu`] |
//! | ALiBi | [`alibi::bias_cpu`] | [`alibi::gpu`] |
//! | masked attention | [`attention::attention_cpu`] | [`attention::gpu`] |
//!
//! Device-independent math (frequencies, scaling, slopes, mask rules) is computed once on the
//! host in f64 and feeds both paths. Each GPU module has a `record` function that records into
//! the caller's `wgpu::CommandEncoder` over the caller's buffers, and convenience functions
//! that upload, run and read back.
//!
//! ```no_run
//! use posenc::rope::{self, QkShape, RopeConfig};
//! use posenc::{GpuContext, Layout, Positions};
//!
//! # fn main() -> posenc::Result<()> {
//! // Llama 3: head_dim 128, theta 500000, 32 query heads and 8 KV heads.
//! let config = RopeConfig::new(128).with_base(500_000.0);
//! let shape = QkShape { batch: 1, seq_len: 4, num_heads: 32, num_kv_heads: 8, head_dim: 128, layout: Layout::Bshd };
//! let (q_len, k_len) = shape.lens()?;
//! let (q, k) = (vec![0.5f32; q_len], vec![0.25f32; k_len]);
//! let frequencies = config.frequencies(shape.seq_len as u64)?;
//!
//! let ctx = GpuContext::new_headless()?;
//! let (q_gpu, k_gpu) = rope::gpu::apply(&ctx, &config, &frequencies, &shape, Positions::Start(0), &q, &k)?;
//!
//! let (mut q_cpu, mut k_cpu) = (q.clone(), k.clone());
//! rope::apply_cpu(&config, &frequencies, &shape, Positions::Start(0), &mut q_cpu, &mut k_cpu)?;
//! assert!(q_gpu.iter().zip(&q_cpu).all(|(a, b)| (a - b).abs() < 1e-5));
//! # Ok(())
//! # }
//! ```
//!
//! # Non-finite inputs
//!
//! NaN or infinity in Q, K, V, embeddings or a learned table changes only the outputs that
//! read it. Those are the element itself for the sinusoidal and learned sums, the rotated
//! pair (or the copied feature) for RoPE, and for attention the query rows that see that key
//! or the row of that query. Every other output equals the one from finite inputs. Masks
//! never turn finite inputs into NaN, including additive masks of -65504, -1e30, `f32::MIN`
//! or -inf. ALiBi takes no tensor input. What the affected outputs contain differs by path:
//!
//! - CPU: f64 IEEE arithmetic, so NaN and infinities propagate. A NaN score makes its whole
//!   attention row NaN, and a row whose every score is -inf counts as a row without visible
//!   keys (zero output).
//! - GPU: unspecified, because WGSL lets compilers assume finite math. Observed with Mesa
//!   22.3 lavapipe (Vulkan) and llvmpipe (GL): the element-wise kernels propagate NaN and
//!   infinities as IEEE would. In attention, affected rows get NaN probabilities, a NaN (or
//!   -inf) log-sum-exp and a NaN output, except that lavapipe's materialising kernel
//!   returned finite outputs next to the NaN probabilities.
#![warn(missing_docs)]

pub mod alibi;
mod angle;
pub mod attention;
#[cfg(feature = "cli")]
pub mod bench;
pub mod config;
pub mod context;
pub mod error;
pub mod golden;
mod gpu;
pub mod learned;
#[cfg(feature = "cli")]
pub mod plot;
pub mod rope;
pub mod sinusoidal;
pub mod tensor;

pub use context::{AdapterRequest, GpuContext};
pub use error::{Error, Result};
pub use gpu::{shader_sources, StatusBuffer};
pub use tensor::{DType, Element, GpuPositions, Layout, Positions, TensorView};
/// The wgpu this crate is built against; use it to create devices and buffers for posenc.
///
/// Version policy: posenc 0.x depends on one wgpu major version (30 now) and re-exports it.
/// Moving to a new wgpu major version changes posenc's public types, so it is released as
/// a new minor version (0.x to 0.x+1), never as a patch.
pub use wgpu;
