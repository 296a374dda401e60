//! Storage types in WGSL: generated tensor declarations and dtype checks.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// How a kernel binds one tensor: its WGSL name, binding number, storage type and access.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TensorBinding {
    pub name: &'static str,
    pub binding: u32,
    pub dtype: DType,
    pub writable: bool,
}

/// Rounds an f32 to the nearest-even bfloat16, keeping NaN a NaN; WGSL for the bf16 stores.
const BF16_ROUNDING: &str = "
fn bf16_bits(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return (bits >> 16u) | 0x40u;
    }
    return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}
";

/// Generates the WGSL declaration of each tensor and its `load_NAME(i) -> f32` and
/// `store_NAME(i, x)` functions for the tensor's storage type.
///
/// f16 converts on load and store (values past the f16 range saturate to +-65504 instead of
/// being undefined). bf16 packs two elements per `u32`: loads shift the half into the high
/// bits of an f32; stores round to nearest even and replace their half with an atomic AND
/// then OR, because the neighbour in the same word may be written by another invocation.
pub(crate) fn tensor_declarations(tensors: &[TensorBinding]) -> String {
    let mut text = String::new();
    if tensors.iter().any(|t| t.dtype == DType::F16) {
        text.push_str("enable f16;\n");
    }
    if tensors.iter().any(|t| t.dtype == DType::Bf16 && t.writable) {
        text.push_str(BF16_ROUNDING);
    }
    for t in tensors {
        let (name, binding) = (t.name, t.binding);
        let access = if t.writable { "read_write" } else { "read" };
        let declaration = match (t.dtype, t.writable) {
            (DType::F32, _) => format!(
                "@group(0) @binding({binding}) var<storage, {access}> {name}: array<f32>;
fn load_{name}(i: u32) -> f32 {{ return {name}[i]; }}
"
            ),
            (DType::F16, _) => format!(
                "@group(0) @binding({binding}) var<storage, {access}> {name}: array<f16>;
fn load_{name}(i: u32) -> f32 {{ return f32({name}[i]); }}
"
            ),
            (DType::Bf16, false) => format!(
                "@group(0) @binding({binding}) var<storage, read> {name}: array<u32>;
fn load_{name}(i: u32) -> f32 {{
    let word = {name}[i >> 1u];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
}}
"
            ),
            (DType::Bf16, true) => format!(
                "@group(0) @binding({binding}) var<storage, read_write> {name}: array<atomic<u32>>;
fn load_{name}(i: u32) -> f32 {{
    let word = atomicLoad(&{name}[i >> 1u]);
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
}}
"
            ),
        };
        text.push_str(&declaration);
        if t.writable {
            let store = match t.dtype {
                DType::F32 => format!("fn store_{name}(i: u32, x: f32) {{ {name}[i] = x; }}\n"),
                DType::F16 => format!("fn store_{name}(i: u32, x: f32) {{ {name}[i] = f16(clamp(x, -65504.0, 65504.0)); }}\n"),
                DType::Bf16 => format!(
                    "fn store_{name}(i: u32, x: f32) {{
    let shift = (i & 1u) * 16u;
    atomicAnd(&{name}[i >> 1u], ~(0xffffu << shift));
    atomicOr(&{name}[i >> 1u], bf16_bits(x) << shift);
}}
"
                ),
            };
            text.push_str(&store);
        }
        text.push_str(&quad_accessors(name, t.writable));
    }
    text
}

/// Generates `load4_NAME(i)` and `store4_NAME(i, v)` for elements `i..i + 4` from the scalar
/// accessors, so a kernel can use them with any storage type.
fn quad_accessors(name: &str, writable: bool) -> String {
    let mut text = format!(
        "fn load4_{name}(i: u32) -> vec4<f32> {{
    return vec4<f32>(load_{name}(i), load_{name}(i + 1u), load_{name}(i + 2u), load_{name}(i + 3u));
}}
"
    );
    if writable {
        text.push_str(&format!(
            "fn store4_{name}(i: u32, v: vec4<f32>) {{
    store_{name}(i, v.x);
    store_{name}(i + 1u, v.y);
    store_{name}(i + 2u, v.z);
    store_{name}(i + 3u, v.w);
}}
"
        ));
    }
    text
}

/// Generates declarations of f32 tensors bound as `array<vec4<f32>>`: `load4_NAME(i)` and
/// `store4_NAME(i, v)` move four elements in one access when `i` is a multiple of 4, and
/// `load_NAME` / `store_NAME` index one component. The host binds such a tensor only through
/// a window whose start and size are multiples of 16 bytes.
pub(crate) fn vec4_declarations(tensors: &[TensorBinding]) -> String {
    let mut text = String::new();
    for t in tensors {
        let (name, binding) = (t.name, t.binding);
        let access = if t.writable { "read_write" } else { "read" };
        text.push_str(&format!(
            "@group(0) @binding({binding}) var<storage, {access}> {name}: array<vec4<f32>>;
fn load_{name}(i: u32) -> f32 {{ return {name}[i >> 2u][i & 3u]; }}
fn load4_{name}(i: u32) -> vec4<f32> {{ return {name}[i >> 2u]; }}
"
        ));
        if t.writable {
            text.push_str(&format!(
                "fn store_{name}(i: u32, x: f32) {{ {name}[i >> 2u][i & 3u] = x; }}
fn store4_{name}(i: u32, v: vec4<f32>) {{ {name}[i >> 2u] = v; }}
"
            ));
        }
    }
    text
}

/// Fails with [`Error::Unsupported`] when the device cannot store `dtype`.
pub(crate) fn require_dtype(ctx: &GpuContext, dtype: DType) -> Result<()> {
    if dtype == DType::F16 && !ctx.supports_f16() {
        return Err(Error::Unsupported {
            what: "f16 storage (wgpu::Features::SHADER_F16)".into(),
            hint: "use DType::Bf16 or DType::F32, or an adapter with SHADER_F16".into(),
        });
    }
    Ok(())
}

/// Fails unless every view has the same storage type, and returns it.
pub(crate) fn common_dtype(views: &[(&'static str, DType)]) -> Result<DType> {
    let (first_name, first) = views[0];
    for &(name, dtype) in &views[1..] {
        if dtype != first {
            return Err(Error::shape(
                name,
                0,
                format!(
                    "{name} is {} but {first_name} is {}; use one storage type for both",
                    dtype.name(),
                    first.name()
                ),
            ));
        }
    }
    Ok(first)
}
