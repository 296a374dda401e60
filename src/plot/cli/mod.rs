//! The options of `posenc plot` and the [`PlotJob`] they describe.
//!
//! Every option is checked here, before a GPU device is created, so a bad value fails at
//! once with a message that names it.

mod parse;
mod spec;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::{
    AlibiPlot, AttentionPlot, Backend, PlotError, RopeDecayPlot, RopeFrequencyPlot, SinusoidalPlot,
};

/// The RoPE fields of Phi-3.5-mini-instruct's config.json, whose LongRoPE factors
/// `rope-frequencies` draws unless `--config` or `--longrope-config` gives others.
const PHI35_CONFIG: &str = include_str!("../../../tests/data/configs/phi-3.5-mini-instruct.json");

/// The maximum number of values in a heatmap table (64 MiB of f32).
const MAX_TABLE_VALUES: usize = 1 << 24;
/// The maximum number of panels (heads, or sequences times heads) in a grid.
const MAX_PANELS: usize = 64;
/// The maximum side of an ALiBi or attention panel, in positions.
const MAX_PANEL_LEN: usize = 2048;
/// The largest head_dim the RoPE plots accept.
const MAX_HEAD_DIM: usize = 4096;

/// Options of `posenc plot`.
#[derive(Clone, Debug, Args)]
pub struct PlotArgs {
    /// The plot to draw.
    #[command(subcommand)]
    pub kind: PlotKind,
}

/// The plots.
#[derive(Clone, Debug, Subcommand)]
pub enum PlotKind {
    /// Heatmap of the sinusoidal encoding table: position (rows) by feature (columns).
    Sinusoidal(SinusoidalArgs),
    /// Wavelength 2π/inv_freq per dimension pair of every RoPE scaling method, log scale.
    ///
    /// Draws no scaling, linear, dynamic NTK, YaRN and Llama 3 at one factor and trained
    /// length. LongRoPE needs per-pair factors from a config: Phi-3.5-mini-instruct's unless
    /// --config or --longrope-config gives others, and the legend names the config.
    /// Each wavelength is measured from the cos/sin tables that the GPU (or the CPU with
    /// --cpu) computes, at a position where the pair's angle is near 3 radians.
    RopeFrequencies(RopeFrequenciesArgs),
    /// RoFormer's long-term decay of RoPE: the relative upper bound B(r) by distance r.
    ///
    /// B(r) = (1/(d/2)) Σ_{j=1..d/2} |S_j| with S_j = Σ_{k<j} e^(i r θ_k) (Su et al.,
    /// RoFormer, section 3.4.3), where d is the rotated width and θ_k the scaled inverse
    /// frequencies; |q · R(r) k| is at most (d/2) B(r) times the largest change between
    /// neighbouring pairs of q conj(k). The terms e^(i r θ_k) are read from unit pairs
    /// rotated to position r on the GPU (or the CPU with --cpu), with the attention factor
    /// divided out. A scaled config is drawn with its unscaled curve for reference.
    RopeDecay(RopeDecayArgs),
    /// The ALiBi bias matrix of each head, one panel per head with its slope in the title.
    Alibi(AlibiArgs),
    /// Attention probabilities of seeded random Q and K under the chosen masks.
    ///
    /// Q and K have standard normal entries, so scores q·k/sqrt(head_dim) have unit
    /// variance. One panel per sequence and head; keys that the masks hide are grey.
    Attention(AttentionArgs),
}

/// Options that every plot takes.
#[derive(Clone, Debug, Args)]
pub struct OutputArgs {
    /// Image file to write: .png for a raster image, .svg for vector axes and text.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// Compute on the CPU reference instead of the GPU.
    #[arg(long)]
    pub cpu: bool,
    /// Image width in pixels, 64 to 8192 [default: depends on the plot].
    #[arg(long, value_name = "PIXELS", value_parser = parse::pixels)]
    pub width: Option<u32>,
    /// Image height in pixels, 64 to 8192 [default: depends on the plot].
    #[arg(long, value_name = "PIXELS", value_parser = parse::pixels)]
    pub height: Option<u32>,
}

/// Column order of the sinusoidal table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// [sin w_0, cos w_0, sin w_1, cos w_1, ...] (Vaswani et al.).
    Interleaved,
    /// [sin w_0 ... sin w_(d/2-1), cos w_0 ... cos w_(d/2-1)] (tensor2tensor, fairseq).
    Concat,
}

/// Frequency rule of the sinusoidal table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FrequencyRuleArg {
    /// w_i = base^(-2i/dim) (Vaswani et al.).
    Vaswani,
    /// w_i = base^(-i/(dim/2 - 1)) (tensor2tensor, fairseq, M2M100).
    Tensor2tensor,
}

/// Options of `posenc plot sinusoidal`.
#[derive(Clone, Debug, Args)]
pub struct SinusoidalArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
    /// Column order of the table.
    #[arg(long, value_enum, default_value_t = LayoutArg::Interleaved)]
    pub layout: LayoutArg,
    /// Frequency rule.
    #[arg(long, value_enum, default_value_t = FrequencyRuleArg::Vaswani)]
    pub frequencies: FrequencyRuleArg,
    /// Encoding width (features per position, the model dimension); even.
    #[arg(long, value_name = "FEATURES", default_value_t = 128, value_parser = parse::even)]
    pub dim: usize,
    /// Number of positions (table rows), starting at 0.
    #[arg(long, value_name = "COUNT", default_value_t = 256, value_parser = parse::count)]
    pub positions: usize,
    /// Base of the geometric frequency progression.
    #[arg(long, default_value_t = 10_000.0, value_parser = parse::positive)]
    pub base: f64,
}

/// Options of `posenc plot rope-frequencies`.
#[derive(Clone, Debug, Args)]
pub struct RopeFrequenciesArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
    /// Features per head (head_dim); all of them rotate.
    #[arg(long, value_name = "FEATURES", default_value_t = 128, value_parser = parse::even, conflicts_with = "config")]
    pub head_dim: usize,
    /// RoPE base θ (rope_theta).
    #[arg(long, value_name = "THETA", default_value_t = 500_000.0, value_parser = parse::base, conflicts_with = "config")]
    pub base: f64,
    /// Context extension factor (extended / trained length) of linear, dynamic NTK, YaRN
    /// and Llama 3.
    #[arg(long, default_value_t = 8.0, value_parser = parse::factor, conflicts_with = "config")]
    pub factor: f64,
    /// Trained context length in tokens (original_max_position_embeddings).
    #[arg(long = "original-max-position-embeddings", visible_alias = "original", value_name = "TOKENS", default_value_t = 8192, value_parser = parse::tokens, conflicts_with = "config")]
    pub original: u64,
    /// Sequence length in tokens at which dynamic NTK is evaluated and LongRoPE picks its
    /// short or long factors [default: factor x trained length].
    #[arg(long, value_name = "TOKENS", value_parser = parse::tokens)]
    pub seq_len: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArgs,
    /// A LongRoPE model's config.json whose factors the LongRoPE curve uses when --config
    /// is not LongRoPE itself [default: Phi-3.5-mini-instruct's, built in].
    #[arg(long, value_name = "CONFIG_JSON")]
    pub longrope_config: Option<PathBuf>,
}

/// RoPE settings read from a model's config.json.
#[derive(Clone, Debug, Args)]
pub struct ConfigArgs {
    /// Read head_dim, the rotated width, the base and the scaling method from a Hugging
    /// Face config.json. A scaled config also sets the factor and trained length.
    #[arg(id = "config", long = "config", value_name = "CONFIG_JSON")]
    pub path: Option<PathBuf>,
    /// With --config: the layer type whose rope_parameters to read, for configs keyed by
    /// layer type (e.g. full_attention in Gemma 3).
    #[arg(long, value_name = "NAME", requires = "config")]
    pub layer_type: Option<String>,
}

/// RoPE scaling method of `posenc plot rope-decay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScalingArg {
    /// Plain RoPE.
    None,
    /// Position interpolation: inv_freq / factor.
    Linear,
    /// Dynamic NTK, evaluated at seq_len = max distance + 1.
    Dynamic,
    /// YaRN with beta_fast 32 and beta_slow 1.
    Yarn,
    /// Llama 3 with low_freq_factor 1 and high_freq_factor 4.
    Llama3,
}

/// Options of `posenc plot rope-decay`.
#[derive(Clone, Debug, Args)]
pub struct RopeDecayArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
    /// Features per head (head_dim); all of them rotate.
    #[arg(long, value_name = "FEATURES", default_value_t = 128, value_parser = parse::even, conflicts_with = "config")]
    pub head_dim: usize,
    /// RoPE base θ (rope_theta).
    #[arg(long, value_name = "THETA", default_value_t = 10_000.0, value_parser = parse::base, conflicts_with = "config")]
    pub base: f64,
    /// Scaling method (LongRoPE needs per-pair factors: read them with --config).
    #[arg(long, value_enum, default_value_t = ScalingArg::None, conflicts_with = "config")]
    pub scaling: ScalingArg,
    /// Context extension factor (extended / trained length) of the scaling method.
    #[arg(long, default_value_t = 8.0, value_parser = parse::factor, conflicts_with = "config")]
    pub factor: f64,
    /// Trained context length in tokens (original_max_position_embeddings) of the scaling
    /// method.
    #[arg(long = "original-max-position-embeddings", visible_alias = "original", value_name = "TOKENS", default_value_t = 4096, value_parser = parse::tokens, conflicts_with = "config")]
    pub original: u64,
    /// Largest relative distance drawn, in positions.
    #[arg(long, value_name = "POSITIONS", default_value_t = 1024, value_parser = parse::distance)]
    pub max_distance: u32,
    /// Number of distances evaluated, spread evenly over 0..=max distance (2 to 65536).
    #[arg(long, value_name = "COUNT", default_value_t = 1025, value_parser = parse::points)]
    pub points: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArgs,
}

/// Options of `posenc plot alibi`.
#[derive(Clone, Debug, Args)]
pub struct AlibiArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
    /// Number of attention heads, 1 to 64 (one panel each).
    #[arg(long, value_name = "COUNT", default_value_t = 8, value_parser = parse::count)]
    pub heads: usize,
    /// Query and key positions per panel, 1 to 2048 (the matrix is len x len).
    #[arg(long, value_name = "POSITIONS", default_value_t = 32, value_parser = parse::count)]
    pub len: usize,
    /// Draw -m·|i - j| (encoders that attend both ways) instead of -m·(i - j).
    #[arg(long)]
    pub symmetric: bool,
    /// Exponent scale of the slopes: head h of n (n a power of two) gets 2^(-max_bias (h+1) / n).
    #[arg(long, default_value_t = 8.0, value_parser = parse::positive)]
    pub max_bias: f64,
}

/// Options of `posenc plot attention`.
#[derive(Clone, Debug, Args)]
pub struct AttentionArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
    /// Query rows and keys per sequence (tokens), 1 to 2048.
    #[arg(long, value_name = "TOKENS", default_value_t = 32, value_parser = parse::count)]
    pub seq: usize,
    /// Attention heads per sequence (one panel each).
    #[arg(long, value_name = "COUNT", default_value_t = 1, value_parser = parse::count)]
    pub heads: usize,
    /// Features per head of the random Q and K.
    #[arg(long, value_name = "FEATURES", default_value_t = 64, value_parser = parse::count)]
    pub head_dim: usize,
    /// Hide keys after the query's position (key j > query i).
    #[arg(long)]
    pub causal: bool,
    /// Sliding window: query i attends to keys i - W < j <= i (W keys, its own included).
    /// A window implies the causal bound.
    #[arg(long, value_name = "W", value_parser = parse::count)]
    pub window: Option<usize>,
    /// Valid keys per sequence (right padding), comma-separated; one sequence each, so this
    /// also sets the batch size.
    #[arg(long, value_name = "COUNTS", value_delimiter = ',', value_parser = parse::length)]
    pub key_lengths: Option<Vec<usize>>,
    /// Packed sequences: segment lengths in tokens, comma-separated, summing to --seq. A
    /// query attends only to keys of its own segment.
    #[arg(long, value_name = "LENGTHS", value_delimiter = ',', value_parser = parse::count)]
    pub segments: Option<Vec<usize>>,
    /// Add ALiBi biases with the slopes of --heads heads.
    #[arg(long)]
    pub alibi: bool,
    /// Seed of the random Q and K.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One checked plot: what to compute and draw, and where to write it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotJob {
    /// The plot and its data settings.
    pub spec: PlotSpec,
    /// Output file, `.png` or `.svg`.
    pub out: PathBuf,
    /// Image width and height in pixels.
    pub size: (u32, u32),
    /// Whether `--cpu` asked for the CPU reference.
    pub cpu: bool,
}

/// The plot of a [`PlotJob`].
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum PlotSpec {
    Sinusoidal(SinusoidalPlot),
    RopeFrequencies(RopeFrequencyPlot),
    RopeDecay(RopeDecayPlot),
    Alibi(AlibiPlot),
    Attention(Box<AttentionPlot>),
}

impl PlotJob {
    /// Computes the plot's data on `backend` and writes the image.
    ///
    /// # Errors
    /// The plot's data and save errors.
    pub fn run(&self, backend: Backend<'_>) -> Result<(), PlotError> {
        let (out, size) = (self.out.as_path(), self.size);
        match &self.spec {
            PlotSpec::Sinusoidal(plot) => plot.save(&plot.data(backend)?, out, size),
            PlotSpec::RopeFrequencies(plot) => plot.save(&plot.data(backend)?, out, size),
            PlotSpec::RopeDecay(plot) => plot.save(&plot.data(backend)?, out, size),
            PlotSpec::Alibi(plot) => plot.save(&plot.data(backend)?, out, size),
            PlotSpec::Attention(plot) => plot.save(&plot.data(backend)?, out, size),
        }
    }
}

impl PlotArgs {
    /// Returns the options that every plot takes.
    pub fn output(&self) -> &OutputArgs {
        match &self.kind {
            PlotKind::Sinusoidal(args) => &args.output,
            PlotKind::RopeFrequencies(args) => &args.output,
            PlotKind::RopeDecay(args) => &args.output,
            PlotKind::Alibi(args) => &args.output,
            PlotKind::Attention(args) => &args.output,
        }
    }

    /// Checks the options, reads any config file, and returns the job they describe.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] naming the option and the fix, or [`PlotError::Posenc`] for a
    /// config file that cannot be read or an invalid parameter.
    pub fn job(&self) -> Result<PlotJob, PlotError> {
        let output = self.output();
        spec::check_output(&output.out)?;
        let (spec, default_size) = match &self.kind {
            PlotKind::Sinusoidal(args) => spec::sinusoidal_spec(args)?,
            PlotKind::RopeFrequencies(args) => spec::rope_frequencies_spec(args)?,
            PlotKind::RopeDecay(args) => spec::rope_decay_spec(args)?,
            PlotKind::Alibi(args) => spec::alibi_spec(args)?,
            PlotKind::Attention(args) => spec::attention_spec(args)?,
        };
        Ok(PlotJob {
            spec,
            out: output.out.clone(),
            size: (
                output.width.unwrap_or(default_size.0),
                output.height.unwrap_or(default_size.1),
            ),
            cpu: output.cpu,
        })
    }
}
