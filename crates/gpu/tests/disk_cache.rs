//! The pipeline cache on disk: written after pipelines are compiled, read by
//! the next device, and a damaged file is ignored and rewritten. A test binary
//! of its own: it sets `METAL_MPS_CACHE_DIR` for the process.

mod common;

use metal_mps_gpu::disk_cache::{read_payload, CACHE_DIR_ENV};
use metal_mps_gpu::pipeline_cache::{Kernel, PipelineKey, Scalar, Variant};
use metal_mps_gpu::GpuContext;

/// Opens a device, compiles one pipeline through its cache and writes the cache.
fn compile_once() -> Option<std::path::PathBuf> {
    let ctx = GpuContext::new(None).expect("the adapter opens");
    let path = ctx.pipelines.disk_path()?.to_path_buf();
    let key = PipelineKey::new(Kernel::Softmax, Variant::of(Scalar::F32), "row_wg");
    ctx.pipelines.get(&key).expect("the kernel compiles");
    ctx.pipelines.persist().expect("the cache is written");
    Some(path)
}

#[test]
fn cache_files_are_written_checked_and_rewritten() {
    if !common::gpu() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("metal_mps_plc_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var(CACHE_DIR_ENV, &dir);
    let Some(path) = compile_once() else {
        eprintln!("this adapter keeps no pipeline cache: skipped");
        return;
    };
    assert!(
        path.starts_with(&dir),
        "{} outside {}",
        path.display(),
        dir.display()
    );
    let first = read_payload(&path).expect("a valid cache file");
    assert!(!first.is_empty());

    // A second device starts from the file and writes it again.
    compile_once();
    assert!(read_payload(&path).is_some());

    // Damaged: the next device ignores it, compiles, and leaves a valid file.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert!(read_payload(&path).is_none());
    compile_once();
    assert!(
        read_payload(&path).is_some(),
        "the damaged file was not rewritten"
    );

    // Disabled: no file.
    std::env::set_var(CACHE_DIR_ENV, "off");
    let ctx = GpuContext::new(None).expect("the adapter opens");
    assert!(ctx.pipelines.disk_path().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
