//! Parses and validates every WGSL shader with naga, then translates each entry point with
//! naga's SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL) back ends. Metal and DX12
//! cannot run on the CI machine, so translation is their check. Needs no GPU.

use std::path::Path;

use naga::back::{glsl, hlsl, msl, spv, PipelineConstants};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};

/// Parses and validates one composed shader.
fn validate(name: &str, source: &str) -> (naga::Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    (module, info)
}

/// Translates entry point `entry` of a validated module for every platform.
fn translate(name: &str, module: &naga::Module, info: &ModuleInfo, entry: &str, uses_f16: bool) {
    // Override constants keep their WGSL defaults, as a pipeline that sets none would.
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        module,
        info,
        Some((naga::ShaderStage::Compute, entry)),
        &PipelineConstants::default(),
    )
    .unwrap_or_else(|e| panic!("{name}::{entry}: overrides: {e}"));

    let spv_pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.into(),
    };
    let words = spv::write_vec(
        &module,
        &info,
        &spv::Options::default(),
        Some(&spv_pipeline),
    )
    .unwrap_or_else(|e| panic!("{name}::{entry}: SPIR-V: {e}"));
    assert!(!words.is_empty(), "{name}::{entry}: empty SPIR-V");

    let msl_pipeline = msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.into())),
        ..Default::default()
    };
    let (metal, _) = msl::write_string(&module, &info, &msl::Options::default(), &msl_pipeline)
        .unwrap_or_else(|e| panic!("{name}::{entry}: MSL: {e}"));
    assert!(
        metal.contains("kernel"),
        "{name}::{entry}: MSL has no kernel"
    );

    // Shader model 6.2 is the first with 16-bit types.
    let hlsl_options = hlsl::Options {
        shader_model: if uses_f16 {
            hlsl::ShaderModel::V6_2
        } else {
            hlsl::ShaderModel::V5_1
        },
        ..Default::default()
    };
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.into())),
    };
    let mut hlsl_text = String::new();
    hlsl::Writer::new(&mut hlsl_text, &hlsl_options, &hlsl_pipeline)
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{name}::{entry}: HLSL: {e}"));
    assert!(
        hlsl_text.contains("numthreads"),
        "{name}::{entry}: HLSL has no compute entry"
    );

    if uses_f16 {
        // wgpu's GL backend never offers SHADER_F16, so f16 kernels are not built for GL.
        return;
    }
    let glsl_options = glsl::Options {
        version: glsl::Version::Desktop(430),
        ..Default::default()
    };
    let glsl_pipeline = glsl::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.into(),
        multiview: None,
    };
    let mut glsl_text = String::new();
    glsl::Writer::new(
        &mut glsl_text,
        &module,
        &info,
        &glsl_options,
        &glsl_pipeline,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .and_then(|mut writer| writer.write())
    .unwrap_or_else(|e| panic!("{name}::{entry}: GLSL: {e}"));
    assert!(
        glsl_text.contains("void main"),
        "{name}::{entry}: GLSL has no main"
    );
}

#[test]
fn shaders_validate_and_translate() {
    let sources = posenc::shader_sources();
    assert!(
        !sources.is_empty(),
        "posenc::shader_sources() returned no shader"
    );
    let mut entry_points = 0;
    for (name, source) in &sources {
        let (module, info) = validate(name, source);
        assert!(!module.entry_points.is_empty(), "{name}: no entry point");
        for entry in &module.entry_points {
            translate(
                name,
                &module,
                &info,
                &entry.name,
                source.contains("enable f16;"),
            );
            entry_points += 1;
        }
    }
    assert!(entry_points >= sources.len());
}

#[test]
fn every_shader_file_is_compiled() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let files: Vec<_> = std::fs::read_dir(&directory)
        .unwrap_or_else(|e| panic!("{}: {e}", directory.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wgsl"))
        .collect();
    assert!(
        !files.is_empty(),
        "no .wgsl file in {}",
        directory.display()
    );

    let sources = posenc::shader_sources();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable shader");
        assert!(
            sources
                .iter()
                .any(|(_, source)| source.contains(text.as_str())),
            "{} is not part of any compiled shader",
            file.display()
        );
    }
}
