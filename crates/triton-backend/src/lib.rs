//! `libtriton_metal_mps.so`: the Triton Inference Server backend `metal_mps`.
//!
//! Installed as `<backend-dir>/metal_mps/libtriton_metal_mps.so`, Triton loads
//! it for every model whose configuration says `backend: "metal_mps"` and calls
//! the `TRITONBACKEND_*` functions exported here:
//!
//! | entry point | module | does |
//! |---|---|---|
//! | `Initialize` / `Finalize` / `GetBackendAttribute` | `backend` | API version check, backend config (`default-max-batch-size`) |
//! | `ModelInitialize` / `ModelFinalize` | `model` | load + compile, auto-complete and validate the config |
//! | `ModelInstanceInitialize` / `ModelInstanceFinalize` | `instance` | one engine per instance: `KIND_CPU` → CPU, `KIND_MODEL` → GPU if present |
//! | `ModelInstanceExecute` | `execute` | gather N requests into one batch, run once, scatter, report statistics |
//!
//! Every entry point runs behind the panic boundary of `panic`; the C
//! declarations are in `ffi`; configuration logic lives in the FFI-free
//! crate `metal-mps-model-config`.

mod backend;
mod batch;
mod error;
mod execute;
mod ffi;
mod instance;
mod log;
mod memory;
mod message;
mod model;
mod panic;
mod request;
mod response;
mod stats;
