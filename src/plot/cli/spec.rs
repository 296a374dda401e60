//! Turns checked `posenc plot` options into the plot specs, reading config files and
//! checking the limits of each plot.

use std::path::Path;

use super::{
    AlibiArgs, AttentionArgs, ConfigArgs, FrequencyRuleArg, LayoutArg, PlotSpec, RopeDecayArgs,
    RopeFrequenciesArgs, ScalingArg, SinusoidalArgs, MAX_HEAD_DIM, MAX_PANELS, MAX_PANEL_LEN,
    MAX_TABLE_VALUES, PHI35_CONFIG,
};
use crate::alibi::{Alibi, AlibiBias};
use crate::attention::{AttentionParams, AttentionShape, Segments};
use crate::config::RopeSettings;
use crate::plot::{
    AlibiPlot, AttentionPlot, ImageFormat, PlotError, RopeComparison, RopeDecayPlot,
    RopeFrequencyPlot, SinusoidalPlot,
};
use crate::rope::{Llama3, RopeConfig, RopeScaling, Yarn};
use crate::sinusoidal::{Sinusoidal, SinusoidalFrequencies, SinusoidalLayout};

/// Checks that `--out` has a supported extension and names a file in an existing folder.
pub(super) fn check_output(out: &Path) -> Result<(), PlotError> {
    ImageFormat::from_path(out)?;
    let folder = out.parent().filter(|folder| !folder.as_os_str().is_empty());
    if let Some(folder) = folder {
        if !folder.is_dir() {
            return Err(PlotError::Invalid(format!(
                "--out {}: folder {} does not exist; create it or write elsewhere",
                out.display(),
                folder.display()
            )));
        }
    }
    Ok(())
}

/// A plot spec and its default image size in pixels.
pub(super) type Spec = (PlotSpec, (u32, u32));

pub(super) fn sinusoidal_spec(args: &SinusoidalArgs) -> Result<Spec, PlotError> {
    if args.positions.saturating_mul(args.dim) > MAX_TABLE_VALUES {
        return Err(PlotError::Invalid(format!(
            "--positions {} x --dim {} is more than the {MAX_TABLE_VALUES} values a heatmap \
             draws; lower --positions or --dim",
            args.positions, args.dim
        )));
    }
    let layout = match args.layout {
        LayoutArg::Interleaved => SinusoidalLayout::Interleaved,
        LayoutArg::Concat => SinusoidalLayout::Concat,
    };
    let frequencies = match args.frequencies {
        FrequencyRuleArg::Vaswani => SinusoidalFrequencies::Vaswani,
        FrequencyRuleArg::Tensor2tensor => SinusoidalFrequencies::Tensor2Tensor,
    };
    let encoding = Sinusoidal::new(args.dim)
        .with_base(args.base)
        .with_layout(layout)
        .with_frequencies(frequencies);
    encoding.validate()?;
    let plot = SinusoidalPlot {
        encoding,
        positions: args.positions,
    };
    Ok((PlotSpec::Sinusoidal(plot), (1000, 720)))
}

/// Reads `--config`, and checks that its head_dim fits the plots.
fn read_config(args: &ConfigArgs) -> Result<Option<RopeSettings>, PlotError> {
    let Some(path) = &args.path else {
        return Ok(None);
    };
    let settings = RopeSettings::from_path(path, args.layer_type.as_deref())?;
    if settings.rope.head_dim > MAX_HEAD_DIM {
        return Err(PlotError::Invalid(format!(
            "--config {}: head_dim {} is above the {MAX_HEAD_DIM} the RoPE plots draw",
            path.display(),
            settings.rope.head_dim
        )));
    }
    Ok(Some(settings))
}

/// The context extension factor and trained length of a config's scaling method, or
/// `(8, max_position_embeddings or 8192)` for a config without one.
fn extension(settings: &RopeSettings) -> (f64, u64) {
    let declared = settings.max_position_embeddings;
    match &settings.rope.scaling {
        RopeScaling::None => (8.0, declared.unwrap_or(8192)),
        RopeScaling::Linear { factor } => {
            let trained = declared.map_or(8192, |length| (length as f64 / factor) as u64);
            (*factor, trained.max(1))
        }
        RopeScaling::Dynamic {
            factor,
            max_position_embeddings,
        } => (*factor, *max_position_embeddings),
        RopeScaling::Yarn(yarn) => (yarn.factor, yarn.original_max_position_embeddings),
        RopeScaling::Llama3(llama3) => (llama3.factor, llama3.original_max_position_embeddings),
        RopeScaling::LongRope(long_rope) => (
            long_rope.scale(),
            long_rope.original_max_position_embeddings,
        ),
    }
}

pub(super) fn rope_frequencies_spec(args: &RopeFrequenciesArgs) -> Result<Spec, PlotError> {
    let (config, factor, original) = match read_config(&args.config)? {
        Some(settings) => {
            let (factor, original) = extension(&settings);
            (settings.rope, factor, original)
        }
        None => (
            RopeConfig::new(args.head_dim).with_base(args.base),
            args.factor,
            args.original,
        ),
    };
    check_at_most("--head-dim", config.head_dim, MAX_HEAD_DIM)?;
    config.validate()?;
    let seq_len = args
        .seq_len
        .unwrap_or_else(|| (factor * original as f64).round().max(1.0) as u64);
    let longrope = if matches!(config.scaling, RopeScaling::LongRope(_)) {
        None
    } else {
        Some(longrope_config(args.longrope_config.as_deref())?)
    };
    let plot = RopeFrequencyPlot::comparison(&RopeComparison {
        config,
        factor,
        original_max_position_embeddings: original,
        seq_len,
        longrope,
    });
    Ok((PlotSpec::RopeFrequencies(plot), (1300, 800)))
}

/// Returns the LongRoPE config to draw and its name: `path`'s, or Phi-3.5-mini-instruct's.
fn longrope_config(path: Option<&Path>) -> Result<(String, RopeConfig), PlotError> {
    let (name, settings) = match path {
        Some(path) => {
            let name = path.file_stem().map_or_else(
                || path.display().to_string(),
                |stem| stem.to_string_lossy().into_owned(),
            );
            (name, RopeSettings::from_path(path, None)?)
        }
        None => (
            "Phi-3.5-mini-instruct".to_owned(),
            RopeSettings::from_json_str(PHI35_CONFIG, None)?,
        ),
    };
    if !matches!(settings.rope.scaling, RopeScaling::LongRope(_)) {
        return Err(PlotError::Invalid(format!(
            "--longrope-config {name}: its rope_type is {}, not longrope; pass a LongRoPE \
             model's config.json such as Phi-3.5-mini-instruct's",
            settings.rope.scaling.rope_type()
        )));
    }
    Ok((name, settings.rope))
}

pub(super) fn rope_decay_spec(args: &RopeDecayArgs) -> Result<Spec, PlotError> {
    check_at_most("--head-dim", args.head_dim, MAX_HEAD_DIM)?;
    let config = match read_config(&args.config)? {
        Some(settings) => settings.rope,
        None => {
            let (factor, original) = (args.factor, args.original);
            let scaling = match args.scaling {
                ScalingArg::None => RopeScaling::None,
                ScalingArg::Linear => RopeScaling::Linear { factor },
                ScalingArg::Dynamic => RopeScaling::Dynamic {
                    factor,
                    max_position_embeddings: original,
                },
                ScalingArg::Yarn => RopeScaling::Yarn(Yarn::new(factor, original)),
                ScalingArg::Llama3 => RopeScaling::Llama3(Llama3 {
                    factor,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: original,
                }),
            };
            RopeConfig::new(args.head_dim)
                .with_base(args.base)
                .with_scaling(scaling)
        }
    };
    // Checks the scaling parameters before any GPU work.
    config.frequencies(u64::from(args.max_distance) + 1)?;
    let plot = RopeDecayPlot::new(&config, args.max_distance, args.points);
    Ok((PlotSpec::RopeDecay(plot), (1100, 650)))
}

pub(super) fn alibi_spec(args: &AlibiArgs) -> Result<Spec, PlotError> {
    check_at_most("--heads", args.heads, MAX_PANELS)?;
    check_at_most("--len", args.len, MAX_PANEL_LEN)?;
    let alibi = Alibi {
        num_heads: args.heads,
        max_bias: args.max_bias,
        bias: if args.symmetric {
            AlibiBias::Symmetric
        } else {
            AlibiBias::Causal
        },
    };
    alibi.slopes()?;
    let plot = AlibiPlot {
        alibi,
        len: args.len,
    };
    Ok((PlotSpec::Alibi(plot), grid_size(args.heads)))
}

pub(super) fn attention_spec(args: &AttentionArgs) -> Result<Spec, PlotError> {
    check_at_most("--seq", args.seq, MAX_PANEL_LEN)?;
    check_at_most("--head-dim", args.head_dim, MAX_HEAD_DIM)?;
    let batch = args.key_lengths.as_ref().map_or(1, Vec::len);
    if batch == 0 {
        return Err(PlotError::Invalid(
            "--key-lengths is empty; give one valid key count per sequence, e.g. 32,20".into(),
        ));
    }
    if batch * args.heads > MAX_PANELS {
        return Err(PlotError::Invalid(format!(
            "{batch} sequences x --heads {} is more than the {MAX_PANELS} panels a grid draws; \
             give fewer --key-lengths or --heads",
            args.heads
        )));
    }
    if let Some(&length) = args.key_lengths.iter().flatten().find(|&&n| n > args.seq) {
        return Err(PlotError::Invalid(format!(
            "--key-lengths value {length} is above --seq {}; use at most --seq keys",
            args.seq
        )));
    }
    let params = AttentionParams {
        causal: args.causal,
        window: args.window,
        key_lengths: args.key_lengths.clone(),
        segments: args
            .segments
            .as_deref()
            .map(|lengths| packed_segments(lengths, args.seq, batch))
            .transpose()?,
        alibi: args.alibi.then(|| Alibi::new(args.heads)),
        ..AttentionParams::default()
    };
    let shape = AttentionShape::new(
        batch,
        args.heads,
        args.heads,
        args.seq,
        args.seq,
        args.head_dim,
    );
    crate::attention::resolve(&shape, &params)?;
    let plot = AttentionPlot {
        shape,
        params,
        seed: args.seed,
    };
    Ok((
        PlotSpec::Attention(Box::new(plot)),
        grid_size(batch * args.heads),
    ))
}

/// Segment ids for packed sequences of `lengths` tokens, shared by queries and keys and
/// repeated for every sequence of the batch.
fn packed_segments(lengths: &[usize], seq: usize, batch: usize) -> Result<Segments, PlotError> {
    let total: usize = lengths.iter().sum();
    if total != seq {
        return Err(PlotError::Invalid(format!(
            "--segments lengths sum to {total} but --seq is {seq}; make them sum to --seq"
        )));
    }
    let ids: Vec<u32> = lengths
        .iter()
        .enumerate()
        .flat_map(|(segment, &length)| std::iter::repeat_n(segment as u32, length))
        .collect();
    let ids = ids.repeat(batch);
    Ok(Segments {
        q: ids.clone(),
        kv: ids,
    })
}

fn check_at_most(option: &str, value: usize, limit: usize) -> Result<(), PlotError> {
    if value > limit {
        return Err(PlotError::Invalid(format!(
            "{option} {value} is above the {limit} the plot draws; use at most {limit}"
        )));
    }
    Ok(())
}

/// Returns the default image size of a grid of `panels` square panels: 320 pixels a side, or wider
/// for one or two columns so that the titles fit, plus room for the colour bar and titles.
fn grid_size(panels: usize) -> (u32, u32) {
    let (columns, rows) = crate::plot::draw::grid(panels);
    let (columns, rows) = (columns as u32, rows as u32);
    let side = (680 / columns).clamp(320, 680);
    let width = (columns * side).min(2560) + 140;
    let height = (rows * side).min(2560) + 80;
    (width, height)
}
