//! The one error type of this crate: which configuration field is wrong, and why.

/// A configuration that cannot be used, naming the field at fault
/// (`input[0].dims`, `max_batch_size`, `parameters.precision`, ...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("model configuration field '{field}': {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}
