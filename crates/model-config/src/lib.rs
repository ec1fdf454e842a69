//! Triton model configuration for metal_mps, free of any FFI.
//!
//! Shared by the Triton backend (`crates/triton-backend`) and any server that
//! reads Triton-style model repositories. It holds:
//! - [`ModelConfig`] and friends: serde types for the part of Triton's
//!   `ModelConfig` metal_mps uses, parsed from the JSON Triton hands a backend
//!   (64-bit integers may come as strings) and written back losslessly;
//! - [`auto_complete`]: filling inputs, outputs, `max_batch_size` and
//!   `dynamic_batching` from a loaded model's signature;
//! - [`validate`]: checking a configuration against the model, with errors
//!   that name the wrong field;
//! - [`EngineSettings`]: engine, precision, memory pool and logging from the
//!   configuration's `parameters` and the `MPS_*` environment variables;
//! - [`VersionPolicy::select`] and [`ModelConfig::resolve_model_file`]: which
//!   versions to serve and where their model files are (`<model>/<N>/model.onnx`;
//!   `default_model_filename` is a file name, and links must stay inside the
//!   version folder).
//!
//! ```no_run
//! use metal_mps::{Model, Options};
//! use metal_mps_model_config::{auto_complete, validate, ModelConfig};
//! let mut config = ModelConfig::from_json(r#"{"name": "simple_cnn", "backend": "metal_mps"}"#)?;
//! let model = Model::load(config.resolve_model_file("models/simple_cnn".as_ref(), 1)?, &Options::default())?;
//! for change in auto_complete(&mut config, model.inputs(), model.outputs(), 4)? {
//!     println!("auto-complete: {change}");
//! }
//! validate(&config, model.inputs(), model.outputs())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod autocomplete;
mod error;
mod json_int;
mod settings;
mod types;
mod validate;

pub use autocomplete::{auto_complete, supports_batching};
pub use error::ConfigError;
pub use settings::{unknown_parameters, EngineChoice, EngineSettings, PARAMETER_KEYS};
pub use types::{
    DynamicBatching, InstanceGroup, InstanceKind, LatestVersions, ModelConfig, Parameter,
    SpecificVersions, TensorConfig, VersionPolicy,
};
pub use validate::validate;

/// The model file name used when `default_model_filename` is empty.
pub const DEFAULT_MODEL_FILENAME: &str = "model.onnx";

/// `[batch, 3, 224, 224]`: a model shape as error messages show it.
pub fn display_dims(shape: &[metal_mps::Dim]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
