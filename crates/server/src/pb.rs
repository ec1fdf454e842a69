//! The protobuf types of Triton's `inference` package (our trimmed copy in
//! `proto/`), generated at build time, and their descriptors for
//! prost-reflect's text-format and JSON codecs.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("inference");

use prost_reflect::{DescriptorPool, MessageDescriptor};
use std::sync::OnceLock;

static DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));

/// The descriptors of every message in `proto/`.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTOR_SET)
            .expect("the descriptor set built by build.rs decodes")
    })
}

/// The descriptor of `inference.ModelConfig`.
pub fn model_config_descriptor() -> MessageDescriptor {
    descriptor_pool()
        .get_message_by_name("inference.ModelConfig")
        .expect("proto/model_config.proto defines inference.ModelConfig")
}
