//! Reads the RoPE settings of a model from its Hugging Face `config.json`.
//!
//! The keys and their fallbacks follow transformers (4.x `rope_scaling`, 5.x
//! `rope_parameters`) and the model configs that use them:
//! - head size: `head_dim`, else `hidden_size / num_attention_heads`; DeepSeek-V2/V3 rotate
//!   separate `qk_rope_head_dim`-wide tensors, so that key wins where present.
//! - rotated width: `head_dim * partial_rotary_factor` (Phi, transformers 5.x keeps it inside
//!   `rope_parameters`) or `head_dim * rotary_pct` (GPT-NeoX), truncated to an integer as
//!   transformers' `int()` does.
//! - base: `rope_theta` (inside `rope_parameters` in 5.x), else `rotary_emb_base`
//!   (GPT-NeoX), else 10000, the default of transformers' Llama-family configs.
//! - scaling: `rope_parameters` (5.x, possibly keyed by layer type as in Gemma 3), else
//!   `rope_scaling` (4.x). The method is `rope_type`, or the older `type`.
//! - multimodal configs: the keys are read from `text_config` when it is present.
//!
//! Every value is checked, so any JSON input gives `Ok` or a typed [`Error::Config`] that
//! names the key; nothing panics.

use std::fmt::Display;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::rope::{Llama3, LongRope, RopeConfig, RopeLayout, RopeScaling, Yarn};

/// The largest head size the loader accepts. Published models use head sizes in the
/// hundreds, so the limit only keeps a corrupt config from requesting a huge frequency table.
pub const MAX_HEAD_DIM: usize = 1 << 16;

/// The base used when a config names none (transformers' `LlamaConfig` default).
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// The `path` of errors for configs that were not read from a file.
const MEMORY_PATH: &str = "<memory>";

/// The `rope_type` names this loader maps to [`RopeScaling`].
const ROPE_TYPES: &str = "default, linear, dynamic, yarn, llama3, longrope (or its old name su)";

/// RoPE settings of a model, read from its `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeSettings {
    /// Dimensions, base, layout and scaling method. For DeepSeek-V2/V3 `head_dim` and
    /// `rotary_dim` are both `qk_rope_head_dim`: the width of the separate tensors that RoPE
    /// rotates, not the attention head size.
    ///
    /// NOTE: for DeepSeek the layout is `Interleaved`, which rotates pairs `(2i, 2i + 1)` in
    /// place. transformers' `apply_rotary_pos_emb_interleave` also permutes the features into
    /// half order, so its rotated Q and K differ from posenc's by that permutation, while
    /// every `q . k` is the same.
    pub rope: RopeConfig,
    /// `max_position_embeddings`: the context length the config declares, if it has one.
    pub max_position_embeddings: Option<u64>,
    /// `num_attention_heads`, if the config has it.
    pub num_attention_heads: Option<usize>,
    /// `num_key_value_heads`, or `num_attention_heads` where the config gives none (the
    /// transformers default).
    pub num_key_value_heads: Option<usize>,
    /// Multiplier of the attention softmax scale `1/sqrt(d)`, 1 for most models.
    /// DeepSeek-V2/V3 set a non-zero YaRN `mscale_all_dim` and multiply the scale by
    /// `(0.1 * mscale_all_dim * ln(factor) + 1)^2` (transformers' DeepSeek-V3 attention).
    pub softmax_scale_multiplier: f64,
    /// The layer type whose parameters were read, when the caller named one.
    pub layer_type: Option<String>,
}

impl RopeSettings {
    /// Parses the text of a `config.json`. `layer_type` selects an entry of a
    /// `rope_parameters` object keyed by layer type (e.g. `"full_attention"` or
    /// `"sliding_attention"` in Gemma 3) and is required for such configs.
    ///
    /// # Errors
    /// [`Error::Config`] with path `<memory>` for invalid JSON, a missing or mistyped key,
    /// an unknown `rope_type`, a missing or unknown layer type, or a value out of range.
    /// The message names the key.
    pub fn from_json_str(text: &str, layer_type: Option<&str>) -> Result<Self> {
        parse_text(text, layer_type, MEMORY_PATH)
    }

    /// Reads and parses a `config.json` file (see [`RopeSettings::from_json_str`]).
    ///
    /// # Errors
    /// As for [`RopeSettings::from_json_str`], with the file's path, and [`Error::Config`]
    /// when the file cannot be read.
    pub fn from_path(path: impl AsRef<Path>, layer_type: Option<&str>) -> Result<Self> {
        let path = path.as_ref().display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Config {
            path: path.clone(),
            message: format!("failed to read the file: {e}"),
        })?;
        parse_text(&text, layer_type, &path)
    }

    /// Reads the settings from an already parsed `config.json` (see
    /// [`RopeSettings::from_json_str`]).
    ///
    /// # Errors
    /// As for [`RopeSettings::from_json_str`].
    pub fn from_json_value(value: &Value, layer_type: Option<&str>) -> Result<Self> {
        parse_value(value, layer_type, MEMORY_PATH)
    }
}

fn parse_text(text: &str, layer_type: Option<&str>, path: &str) -> Result<RopeSettings> {
    let value: Value = serde_json::from_str(text).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: format!("invalid JSON: {e}"),
    })?;
    parse_value(&value, layer_type, path)
}

/// The transformers release that wrote a RoPE block, because the two differ in defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockFormat {
    /// transformers 4.x `rope_scaling`: `rope_type` (or `type`) is required.
    RopeScaling,
    /// transformers 5.x `rope_parameters`: a missing `rope_type` means `default`.
    RopeParameters,
}

/// A JSON object and the key path that leads to it, for error messages.
struct Section<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
    path: &'a str,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Section<'a> {
    fn root(value: &'a Value, path: &'a str) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Section {
                map,
                prefix: String::new(),
                path,
            }),
            other => Err(Error::Config {
                path: path.to_owned(),
                message: format!(
                    "a config.json must contain a JSON object, found {}",
                    type_name(other)
                ),
            }),
        }
    }

    /// Returns the full key path of `name`, e.g. `rope_scaling.factor`.
    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn error(&self, message: impl Display) -> Error {
        Error::Config {
            path: self.path.to_owned(),
            message: message.to_string(),
        }
    }

    fn wrong_type(&self, name: &str, expected: &str, found: &Value) -> Error {
        self.error(format_args!(
            "`{}` must be {expected}, found {}",
            self.key(name),
            type_name(found)
        ))
    }

    fn missing(&self, name: &str, reason: impl Display) -> Error {
        self.error(format_args!("missing key `{}` ({reason})", self.key(name)))
    }

    /// Returns the value of `name`, or `None` when the key is absent or null (transformers
    /// reads null as absent).
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|value| !value.is_null())
    }

    fn number(&self, name: &str) -> Result<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => match value.as_f64() {
                Some(number) if number.is_finite() => Ok(Some(number)),
                Some(_) => {
                    Err(self.error(format_args!("`{}` must be a finite number", self.key(name))))
                }
                None => Err(self.wrong_type(name, "a number", value)),
            },
        }
    }

    /// Reads a non-negative integer. An integral float such as `4096.0` is accepted.
    fn count(&self, name: &str) -> Result<Option<u64>> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        if let Some(count) = value.as_u64() {
            return Ok(Some(count));
        }
        // 2^53: every integer up to here is exact in f64.
        const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;
        match value.as_f64() {
            Some(x) if (0.0..=EXACT_LIMIT).contains(&x) && x.fract() == 0.0 => Ok(Some(x as u64)),
            Some(x) => Err(self.error(format_args!(
                "`{}` must be a non-negative integer, found {x}",
                self.key(name)
            ))),
            None => Err(self.wrong_type(name, "a non-negative integer", value)),
        }
    }

    /// Reads a count that must be at least 1 and fit in `usize`.
    fn positive_count(&self, name: &str) -> Result<Option<usize>> {
        match self.count(name)? {
            None => Ok(None),
            Some(count) => match usize::try_from(count) {
                Ok(count) if count > 0 => Ok(Some(count)),
                _ => Err(self.error(format_args!(
                    "`{}` = {count} is invalid: it must be at least 1 and fit in usize",
                    self.key(name)
                ))),
            },
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(value) => Err(self.wrong_type(name, "true or false", value)),
        }
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(value) => Err(self.wrong_type(name, "a string", value)),
        }
    }

    fn object(&self, name: &str) -> Result<Option<Section<'a>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Section {
                map,
                prefix: self.key(name),
                path: self.path,
            })),
            Some(value) => Err(self.wrong_type(name, "an object", value)),
        }
    }

    fn numbers(&self, name: &str) -> Result<Option<Vec<f64>>> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(self.wrong_type(name, "an array of numbers", value));
        };
        let numbers = items.iter().enumerate().map(|(index, item)| {
            item.as_f64()
                .filter(|number| number.is_finite())
                .ok_or_else(|| {
                    self.error(format_args!(
                        "`{}[{index}]` must be a finite number, found {}",
                        self.key(name),
                        type_name(item)
                    ))
                })
        });
        numbers.collect::<Result<Vec<_>>>().map(Some)
    }
}

fn parse_value(value: &Value, layer_type: Option<&str>, path: &str) -> Result<RopeSettings> {
    let root = Section::root(value, path)?;
    // Multimodal configs (Gemma 3, Llama 4, Qwen2.5-VL) nest the language model's settings
    // under `text_config`, which transformers' `get_text_config` reads.
    let model = root.object("text_config")?.unwrap_or(root);
    check_layer_type(&model, layer_type)?;

    let block = rope_block(&model, layer_type)?;
    let dims = head_dims(&model, block.as_ref().map(|(section, _)| section))?;
    let (base, base_key) = rope_base(&model, block.as_ref(), layer_type)?;
    let scaling = match &block {
        Some((section, format)) if !uses_local_base(&model, block.as_ref(), layer_type) => {
            read_scaling(section, *format, &model)?
        }
        _ => RopeScaling::None,
    };
    let rope = RopeConfig {
        head_dim: dims.head_dim,
        rotary_dim: dims.rotary_dim,
        base,
        layout: rope_layout(&model)?,
        scaling,
    };
    validate(&model, &rope, block.as_ref(), &base_key)?;

    let num_attention_heads = model.positive_count("num_attention_heads")?;
    let num_key_value_heads = model
        .positive_count("num_key_value_heads")?
        .or(num_attention_heads);
    Ok(RopeSettings {
        softmax_scale_multiplier: softmax_scale_multiplier(&rope.scaling),
        rope,
        max_position_embeddings: model.count("max_position_embeddings")?,
        num_attention_heads,
        num_key_value_heads,
        layer_type: layer_type.map(str::to_owned),
    })
}

/// Rejects a layer type that the config's `layer_types` list does not contain.
fn check_layer_type(model: &Section, layer_type: Option<&str>) -> Result<()> {
    let (Some(wanted), Some(Value::Array(types))) = (layer_type, model.get("layer_types")) else {
        return Ok(());
    };
    let mut names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
    if names.is_empty() || names.contains(&wanted) {
        return Ok(());
    }
    names.sort_unstable();
    names.dedup();
    Err(model.error(format_args!(
        "layer type \"{wanted}\" is not in `{}`; use one of {}",
        model.key("layer_types"),
        names.join(", ")
    )))
}

/// Finds the RoPE block: `rope_parameters` (the entry for `layer_type` when it is keyed by
/// layer type), else `rope_scaling`, else none.
fn rope_block<'a>(
    model: &Section<'a>,
    layer_type: Option<&str>,
) -> Result<Option<(Section<'a>, BlockFormat)>> {
    if let Some(parameters) = model.object("rope_parameters")? {
        let section = select_layer_type(parameters, layer_type)?;
        return Ok(Some((section, BlockFormat::RopeParameters)));
    }
    Ok(model
        .object("rope_scaling")?
        .map(|section| (section, BlockFormat::RopeScaling)))
}

/// Picks the entry for `layer_type` from a `rope_parameters` object keyed by layer type (one
/// object per type, as Gemma 3 writes it). A flat block has no object values and is
/// returned unchanged.
fn select_layer_type<'a>(parameters: Section<'a>, layer_type: Option<&str>) -> Result<Section<'a>> {
    let keyed = parameters.map.values().any(Value::is_object);
    if !keyed {
        return Ok(parameters);
    }
    let mut available: Vec<&str> = parameters.map.keys().map(String::as_str).collect();
    available.sort_unstable();
    let available = available.join(", ");
    let Some(layer_type) = layer_type else {
        return Err(parameters.error(format_args!(
            "`{}` is keyed by layer type, so a layer type is required; pass one of {available}",
            parameters.prefix
        )));
    };
    match parameters.object(layer_type)? {
        Some(section) => Ok(section),
        None => Err(parameters.error(format_args!(
            "layer type \"{layer_type}\" not found in `{}`; available: {available}",
            parameters.prefix
        ))),
    }
}

/// Gemma 3 configs of transformers 4.x give sliding-window layers their own base,
/// `rope_local_base_freq`, with no scaling, and apply `rope_scaling` to full-attention
/// layers only.
fn uses_local_base(
    model: &Section,
    block: Option<&(Section, BlockFormat)>,
    layer_type: Option<&str>,
) -> bool {
    let v4 = !matches!(block, Some((_, BlockFormat::RopeParameters)));
    v4 && layer_type == Some("sliding_attention") && model.get("rope_local_base_freq").is_some()
}

struct HeadDims {
    head_dim: usize,
    rotary_dim: usize,
}

fn head_dims(model: &Section, block: Option<&Section>) -> Result<HeadDims> {
    if model.get("qk_rope_head_dim").is_some() {
        let rope_dim = checked_head_dim(model, "qk_rope_head_dim")?;
        return Ok(HeadDims {
            head_dim: rope_dim,
            rotary_dim: rope_dim,
        });
    }
    let head_dim = attention_head_dim(model)?;

    // The partial factor: inside the RoPE block (transformers 5.x), at the top level (Phi),
    // or GPT-NeoX's `rotary_pct`.
    let mut factor = None;
    for (section, name) in [
        (block, "partial_rotary_factor"),
        (Some(model), "partial_rotary_factor"),
        (Some(model), "rotary_pct"),
    ] {
        if let Some(section) = section {
            if let Some(value) = section.number(name)? {
                factor = Some((value, section.key(name)));
                break;
            }
        }
    }
    let Some((factor, key)) = factor else {
        return Ok(HeadDims {
            head_dim,
            rotary_dim: head_dim,
        });
    };
    if !(factor > 0.0 && factor <= 1.0) {
        return Err(model.error(format_args!(
            "`{key}` = {factor} is invalid: the fraction of each head that rotates must be \
             above 0 and at most 1"
        )));
    }
    // transformers truncates with int(head_dim * factor).
    let rotary_dim = (head_dim as f64 * factor) as usize;
    if rotary_dim < 2 || !rotary_dim.is_multiple_of(2) {
        return Err(model.error(format_args!(
            "`{key}` = {factor} gives rotary_dim = {rotary_dim} for head_dim = {head_dim}; \
             rotary_dim must be even and at least 2"
        )));
    }
    Ok(HeadDims {
        head_dim,
        rotary_dim,
    })
}

/// `head_dim`, else `hidden_size / num_attention_heads`.
fn attention_head_dim(model: &Section) -> Result<usize> {
    if model.get("head_dim").is_some() {
        return checked_head_dim(model, "head_dim");
    }
    let reason = "the head size is `head_dim`, or `hidden_size / num_attention_heads`";
    let hidden = model
        .count("hidden_size")?
        .ok_or_else(|| model.missing("head_dim", reason))?;
    let heads = model
        .count("num_attention_heads")?
        .ok_or_else(|| model.missing("num_attention_heads", reason))?;
    if heads == 0 {
        return Err(model.error(format_args!(
            "`{}` = 0 is invalid: a model needs at least one attention head",
            model.key("num_attention_heads")
        )));
    }
    if hidden % heads != 0 {
        return Err(model.error(format_args!(
            "`{}` = {hidden} is not a multiple of `{}` = {heads}; give `{}` explicitly",
            model.key("hidden_size"),
            model.key("num_attention_heads"),
            model.key("head_dim")
        )));
    }
    limit_head_dim(model, "hidden_size / num_attention_heads", hidden / heads)
}

fn checked_head_dim(model: &Section, name: &str) -> Result<usize> {
    let value = model.count(name)?.unwrap_or(0);
    limit_head_dim(model, &model.key(name), value)
}

fn limit_head_dim(model: &Section, key: &str, value: u64) -> Result<usize> {
    match usize::try_from(value) {
        Ok(dim) if (2..=MAX_HEAD_DIM).contains(&dim) => Ok(dim),
        _ => Err(model.error(format_args!(
            "`{key}` = {value} is invalid: the head size must be from 2 to {MAX_HEAD_DIM}"
        ))),
    }
}

/// Finds the RoPE base and the key it came from.
fn rope_base(
    model: &Section,
    block: Option<&(Section, BlockFormat)>,
    layer_type: Option<&str>,
) -> Result<(f64, String)> {
    let mut candidates: Vec<(&Section, &str)> = Vec::new();
    if uses_local_base(model, block, layer_type) {
        candidates.push((model, "rope_local_base_freq"));
    }
    if let Some((section, _)) = block {
        candidates.push((section, "rope_theta"));
    }
    candidates.push((model, "rope_theta"));
    candidates.push((model, "rotary_emb_base"));

    for (section, name) in candidates {
        if let Some(base) = section.number(name)? {
            return Ok((base, section.key(name)));
        }
    }
    Ok((DEFAULT_ROPE_THETA, model.key("rope_theta")))
}

/// DeepSeek-V2/V3 pair features `(2i, 2i + 1)` of their rotated tensors (transformers'
/// `rope_interleave`, default true in `DeepseekV3Config`); other models pair
/// `(i, i + rotary_dim/2)`.
fn rope_layout(model: &Section) -> Result<RopeLayout> {
    let interleave = match model.boolean("rope_interleave")? {
        Some(flag) => flag,
        None => model.get("qk_rope_head_dim").is_some(),
    };
    Ok(if interleave {
        RopeLayout::Interleaved
    } else {
        RopeLayout::Half
    })
}

fn read_scaling(block: &Section, format: BlockFormat, model: &Section) -> Result<RopeScaling> {
    let rope_type = match (block.string("rope_type")?, block.string("type")?) {
        (Some(name), _) | (None, Some(name)) => name,
        (None, None) if format == BlockFormat::RopeParameters || block.map.is_empty() => "default",
        (None, None) => {
            return Err(block.missing("rope_type", format_args!("one of {ROPE_TYPES}")));
        }
    };
    let required = |name: &str| {
        block.number(name)?.ok_or_else(|| {
            block.missing(name, format_args!("rope_type \"{rope_type}\" requires it"))
        })
    };
    match rope_type {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: required("factor")?,
        }),
        "dynamic" => Ok(RopeScaling::Dynamic {
            factor: required("factor")?,
            max_position_embeddings: required_count(
                model,
                "max_position_embeddings",
                "dynamic NTK scales past it",
            )?,
        }),
        "yarn" => read_yarn(block, model).map(RopeScaling::Yarn),
        "llama3" => Ok(RopeScaling::Llama3(Llama3 {
            factor: required("factor")?,
            low_freq_factor: required("low_freq_factor")?,
            high_freq_factor: required("high_freq_factor")?,
            original_max_position_embeddings: required_count(
                block,
                "original_max_position_embeddings",
                "rope_type \"llama3\" requires it",
            )?,
        })),
        // "su" is the name early Phi-3 configs used; transformers 4.43's `Phi3Config`
        // renames it to "longrope".
        "longrope" | "su" => read_longrope(block, model).map(RopeScaling::LongRope),
        other => Err(block.error(format_args!(
            "unknown `{}` \"{other}\"; use one of {ROPE_TYPES}",
            block.key(if block.get("rope_type").is_some() {
                "rope_type"
            } else {
                "type"
            })
        ))),
    }
}

fn required_count(section: &Section, name: &str, reason: &str) -> Result<u64> {
    section
        .count(name)?
        .ok_or_else(|| section.missing(name, reason))
}

/// `original_max_position_embeddings` from the RoPE block, else from the top level
/// (Phi-3.5), with the key it came from.
fn original_length(block: &Section, model: &Section) -> Result<Option<(u64, String)>> {
    for section in [block, model] {
        let name = "original_max_position_embeddings";
        if let Some(length) = section.count(name)? {
            return Ok(Some((length, section.key(name))));
        }
    }
    Ok(None)
}

fn read_yarn(block: &Section, model: &Section) -> Result<Yarn> {
    let max_length = model.count("max_position_embeddings")?;
    // transformers falls back to max_position_embeddings as the trained length.
    let (original, original_key) = match original_length(block, model)? {
        Some(found) => found,
        None => match max_length {
            Some(length) => (length, model.key("max_position_embeddings")),
            None => {
                return Err(block.missing(
                    "original_max_position_embeddings",
                    "YaRN needs the trained context length, here or as max_position_embeddings",
                ))
            }
        },
    };
    if original == 0 {
        return Err(block.error(format_args!(
            "`{original_key}` = 0 is invalid: the trained context length must be at least 1"
        )));
    }
    // transformers 5.x derives a missing or null factor from the two context lengths.
    let factor = match block.number("factor")? {
        Some(factor) => factor,
        None => {
            let max_length = max_length.ok_or_else(|| {
                model.missing(
                    "max_position_embeddings",
                    "the YaRN factor is missing, so it is derived as max_position_embeddings \
                     / original_max_position_embeddings",
                )
            })?;
            max_length as f64 / original as f64
        }
    };
    Ok(Yarn {
        factor,
        original_max_position_embeddings: original,
        beta_fast: block.number("beta_fast")?.unwrap_or(32.0),
        beta_slow: block.number("beta_slow")?.unwrap_or(1.0),
        mscale: block.number("mscale")?,
        mscale_all_dim: block.number("mscale_all_dim")?,
        attention_factor: block.number("attention_factor")?,
        truncate: block.boolean("truncate")?.unwrap_or(true),
    })
}

fn read_longrope(block: &Section, model: &Section) -> Result<LongRope> {
    let factors = |name: &str| {
        block
            .numbers(name)?
            .ok_or_else(|| block.missing(name, "LongRoPE needs one factor per rotated pair"))
    };
    let short_factor = factors("short_factor")?;
    let long_factor = factors("long_factor")?;
    let (original, _) = original_length(block, model)?.ok_or_else(|| {
        block.missing(
            "original_max_position_embeddings",
            "LongRoPE switches to the long factors past it; it may also be at the top level",
        )
    })?;
    Ok(LongRope {
        short_factor,
        long_factor,
        original_max_position_embeddings: original,
        max_position_embeddings: required_count(
            model,
            "max_position_embeddings",
            "LongRoPE derives its attention factor from it",
        )?,
        attention_factor: block.number("attention_factor")?,
    })
}

/// Checks the assembled settings with the same rules the operations apply, so a config that
/// loads also computes frequencies.
fn validate(
    model: &Section,
    rope: &RopeConfig,
    block: Option<&(Section, BlockFormat)>,
    base_key: &str,
) -> Result<()> {
    if rope.base <= 0.0 {
        return Err(model.error(format_args!(
            "`{base_key}` = {} is invalid: the RoPE base must be greater than 0",
            rope.base
        )));
    }
    rope.validate()
        .map_err(|e| model.error(format_args!("invalid RoPE dimensions: {e}")))?;
    // Dynamic NTK and LongRoPE depend on the length only through choices that every
    // length passes the same checks for, so length 1 validates them all.
    let block_key = block.map_or_else(|| "rope_scaling".to_owned(), |(s, _)| s.prefix.clone());
    rope.scaling
        .frequencies(rope.base, rope.rotary_dim, 1)
        .map(drop)
        .map_err(|e| model.error(format_args!("`{block_key}`: {e}")))
}

/// DeepSeek-V2/V3 multiply the softmax scale by the square of YaRN's
/// `0.1 * mscale_all_dim * ln(factor) + 1` (1 for factor <= 1) when `mscale_all_dim` is set
/// and non-zero.
fn softmax_scale_multiplier(scaling: &RopeScaling) -> f64 {
    let RopeScaling::Yarn(yarn) = scaling else {
        return 1.0;
    };
    match yarn.mscale_all_dim {
        Some(all) if all != 0.0 && yarn.factor > 1.0 => {
            let mscale = 0.1 * all * yarn.factor.ln() + 1.0;
            mscale * mscale
        }
        _ => 1.0,
    }
}
