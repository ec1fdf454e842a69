//! Every WGSL kernel instance the engine can compile parses, validates and
//! translates to MSL (Metal) and SPIR-V (Vulkan) with naga. Runs without a GPU.

use metal_mps_gpu::context::coop_workgroup_bytes;
use metal_mps_gpu::pipeline_cache::{source, Kernel};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn entry_points(kernel: Kernel) -> &'static [&'static str] {
    match kernel {
        Kernel::Softmax => &["row_wg", "row_thread"],
        Kernel::Reduce => &["per_thread", "per_wg"],
        _ => &["main"],
    }
}

/// Entry points, each with the override constants to translate it under:
/// the defaults, and for the cooperative-matrix kernels the wide loads, wide
/// output stores (with a residual and a fused activation) and the smaller
/// tile shapes too.
fn instances(kernel: Kernel) -> Vec<(&'static str, naga::back::PipelineConstants)> {
    let mut sets = vec![naga::back::PipelineConstants::default()];
    let mut add = |set: &[(&str, f64)]| {
        sets.push(set.iter().map(|(k, v)| (k.to_string(), *v)).collect());
    };
    if kernel.uses_coop() {
        for b_nfast in [1.0, 0.0] {
            add(&[("A_WIDE", 1.0), ("B_WIDE", 1.0), ("B_NFAST", b_nfast)]);
        }
        add(&[("OUT_WIDE", 1.0), ("HAS_RES", 1.0), ("ACT", 1.0)]);
        // Tiles of 4 x 8, 8 x 4 and 4 x 4 fragments.
        add(&[("CM_ROWS", 4.0), ("A_WIDE", 1.0), ("B_WIDE", 1.0)]);
        add(&[("CM_COLS", 4.0), ("OUT_WIDE", 1.0), ("B_NFAST", 0.0)]);
        add(&[("CM_ROWS", 4.0), ("CM_COLS", 4.0), ("SPLITS", 2.0)]);
    }
    if kernel == Kernel::ConvCoop {
        // An NHWC input: wide loads along k into a column-major B tile, tap-major.
        add(&[
            ("A_WIDE", 1.0),
            ("B_WIDE", 1.0),
            ("B_NFAST", 0.0),
            ("B_COLMAJOR", 1.0),
            ("TAP_MAJOR", 1.0),
            ("NHWC", 1.0),
        ]);
    }
    entry_points(kernel)
        .iter()
        .flat_map(|&e| sets.iter().map(move |c| (e, c.clone())))
        .collect()
}

#[test]
fn every_kernel_translates_to_msl_and_spirv() {
    let caps = Capabilities::SHADER_FLOAT16
        | Capabilities::SHADER_FLOAT16_IN_FLOAT32
        | Capabilities::SHADER_INT64
        | Capabilities::COOPERATIVE_MATRIX;
    let mut count = 0;
    for kernel in Kernel::ALL {
        for variant in kernel.variants() {
            let src = source(kernel, variant);
            let what = format!("{kernel:?} {variant:?}");
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{what} does not parse:\n{}", e.emit_to_string(&src)));
            let info = Validator::new(ValidationFlags::all(), caps)
                .validate(&module)
                .unwrap_or_else(|e| {
                    panic!("{what} does not validate:\n{}", e.emit_to_string(&src))
                });
            for (entry, constants) in instances(kernel) {
                let (module, info) = naga::back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some((naga::ShaderStage::Compute, entry)),
                    &constants,
                )
                .unwrap_or_else(|e| panic!("{what} {entry}: overrides: {e:?}"));

                let msl_options = naga::back::msl::Options {
                    lang_version: (3, 0),
                    ..Default::default()
                };
                let pipeline = naga::back::msl::PipelineOptions {
                    entry_point: Some((naga::ShaderStage::Compute, entry.to_string())),
                    ..Default::default()
                };
                let (msl, _) =
                    naga::back::msl::write_string(&module, &info, &msl_options, &pipeline)
                        .unwrap_or_else(|e| panic!("{what} {entry}: MSL: {e:?}"));
                assert!(msl.contains("kernel void"), "{what}: no kernel in the MSL");
                if kernel.uses_coop() {
                    assert!(
                        msl.contains("simdgroup"),
                        "{what}: cooperative matrices missing in the MSL"
                    );
                }

                let spv_options = naga::back::spv::Options {
                    lang_version: (1, 3),
                    ..Default::default()
                };
                let spv_pipeline = naga::back::spv::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: entry.into(),
                };
                let words =
                    naga::back::spv::write_vec(&module, &info, &spv_options, Some(&spv_pipeline))
                        .unwrap_or_else(|e| panic!("{what} {entry}: SPIR-V: {e:?}"));
                assert_eq!(words[0], 0x0723_0203, "{what}: not SPIR-V");
                count += 1;
            }
        }
    }
    assert!(count >= 30, "only {count} kernel instances checked");
}

/// The workgroup memory the engine assumes for the cooperative-matrix kernel
/// (it is only used where the adapter's limit allows it) is what naga lays
/// out for its workgroup variables; the fragment size of Metal (8) fits
/// Apple GPUs' 32 KiB and NVIDIA's (16) fits 48 KiB.
#[test]
fn cooperative_kernel_workgroup_memory_is_as_declared() {
    for kernel in [Kernel::MatmulCoop, Kernel::ConvCoop] {
        for variant in kernel.variants() {
            let ct = variant.coop.expect("a cooperative variant");
            let module = naga::front::wgsl::parse_str(&source(kernel, variant)).unwrap();
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            let bytes: u32 = module
                .global_variables
                .iter()
                .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
                .map(|(_, v)| layouter[v.ty].size)
                .sum();
            assert_eq!(
                bytes,
                coop_workgroup_bytes(ct),
                "{kernel:?} with {ct}x{ct} fragments"
            );
        }
    }
    assert!(coop_workgroup_bytes(8) <= 32 * 1024);
    assert!(coop_workgroup_bytes(16) <= 48 * 1024);
}
