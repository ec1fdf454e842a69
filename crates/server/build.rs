//! Generates the gRPC service and message types from `proto/*.proto` with
//! protox (a pure-Rust protobuf compiler: no protoc needed) and writes the
//! encoded descriptor set next to them, for prost-reflect's text-format and
//! JSON codecs at run time.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true);
    compiler.open_files(["grpc_service.proto", "model_config.proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("inference_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        // Tensor buffers as `bytes::Bytes`: sliced, not copied.
        .bytes(".inference")
        // Malformed messages are INVALID_ARGUMENT (crate::codec), not INTERNAL.
        .codec_path("crate::codec::RequestCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
