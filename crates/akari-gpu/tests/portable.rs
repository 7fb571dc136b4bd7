//! The kernels on the backends no test machine runs: every kernel module translates to HLSL
//! (DX12, with and without DXC's shader models) and to Metal's MSL through naga, the
//! translator wgpu uses, and no HLSL register is declared twice in a module (DXC rejects
//! two resources on one register, as happens when one binding is declared with two types).
//! Needs no GPU.

use std::collections::HashMap;

/// Parses, validates and resolves the `override`s of `source` at their defaults.
fn module(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        None,
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
    (module.into_owned(), info.into_owned())
}

#[test]
fn every_kernel_translates_to_hlsl_and_msl() {
    let sources = akari_gpu::ops::sources();
    assert!(sources.len() >= 16, "{} kernel modules", sources.len());
    for (name, source) in sources {
        let (module, info) = module(name, source);
        // Wave intrinsics begin at shader model 6.0: wgpu offers subgroups only there.
        let models: &[naga::back::hlsl::ShaderModel] = if name.ends_with("+subgroups") {
            &[naga::back::hlsl::ShaderModel::V6_0]
        } else {
            &[
                naga::back::hlsl::ShaderModel::V5_1,
                naga::back::hlsl::ShaderModel::V6_0,
            ]
        };
        for &model in models {
            let options = naga::back::hlsl::Options {
                shader_model: model,
                ..Default::default()
            };
            let pipeline = Default::default();
            let mut hlsl = String::new();
            naga::back::hlsl::Writer::new(&mut hlsl, &options, &pipeline)
                .write(&module, &info, None)
                .unwrap_or_else(|e| panic!("{name}: HLSL {model:?}: {e}"));
            // `register(t0, space0)` and the like, one per resource.
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for line in hlsl.lines() {
                if let Some(start) = line.find("register(") {
                    let reg =
                        &line[start..line[start..].find(')').map_or(line.len(), |e| start + e)];
                    *seen.entry(reg).or_default() += 1;
                }
            }
            assert!(!seen.is_empty(), "{name}: no registers in the HLSL");
            let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
            assert!(
                twice.is_empty(),
                "{name}: registers declared twice: {twice:?}"
            );
        }
        let options = naga::back::msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        };
        naga::back::msl::write_string(&module, &info, &options, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));
    }
}
