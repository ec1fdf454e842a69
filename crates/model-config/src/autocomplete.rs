//! Filling in what a configuration leaves out, from the model's own signature.
//!
//! The rules are those of Triton's ONNX Runtime backend, so a model behaves the
//! same when moved between backends:
//! - A configuration that lists both inputs and outputs is left as it is
//!   (it is only validated, see [`crate::validate`]).
//! - The model supports batching when every input and output has a first
//!   dimension that is not fixed. Then a `max_batch_size` of 0 becomes the
//!   backend's default (Triton's `--backend-config=default-max-batch-size`,
//!   4 unless set), and a `max_batch_size` above 1 with no scheduler gets
//!   `dynamic_batching {}`.
//! - A model that cannot batch but is configured with `max_batch_size > 0` is refused.
//! - Missing `input` / `output` lists are filled from the model: name, data
//!   type, and dims (without the batch dimension when batching; every
//!   dimension that is not fixed becomes -1).

use crate::error::ConfigError;
use crate::types::{DynamicBatching, ModelConfig, TensorConfig};
use metal_mps::{Dim, TensorInfo};

/// Whether every tensor's first dimension is free to vary (a batch dimension).
pub fn supports_batching(inputs: &[TensorInfo], outputs: &[TensorInfo]) -> bool {
    inputs
        .iter()
        .chain(outputs)
        .all(|t| matches!(t.shape.first(), Some(Dim::Sym(_) | Dim::Unknown)))
}

/// Completes `config` from the model's `inputs` and `outputs`, following the
/// rules in the module documentation. Returns one line per change made (for
/// the log); an empty list means the configuration was already complete.
pub fn auto_complete(
    config: &mut ModelConfig,
    inputs: &[TensorInfo],
    outputs: &[TensorInfo],
    default_max_batch_size: i64,
) -> Result<Vec<String>, ConfigError> {
    let mut changes = Vec::new();
    if !config.input.is_empty() && !config.output.is_empty() {
        return Ok(changes);
    }
    if supports_batching(inputs, outputs) {
        if config.max_batch_size == 0 {
            config.max_batch_size = default_max_batch_size.max(0);
            changes.push(format!(
                "max_batch_size set to {} (the model's first dimensions are dynamic; \
                 set max_batch_size in config.pbtxt or --backend-config=default-max-batch-size=N to change it)",
                config.max_batch_size
            ));
        }
        if config.max_batch_size > 1 && !config.has_scheduler() {
            config.dynamic_batching = Some(DynamicBatching::default());
            changes.push("dynamic_batching {} added (the model supports batching)".to_string());
        }
    } else if config.max_batch_size != 0 {
        let fixed = inputs
            .iter()
            .chain(outputs)
            .find(|t| !matches!(t.shape.first(), Some(Dim::Sym(_) | Dim::Unknown)))
            .map(|t| format!("'{}' has shape {}", t.name, crate::display_dims(&t.shape)))
            .unwrap_or_default();
        return Err(ConfigError::new(
            "max_batch_size",
            format!(
                "is {} but the model cannot batch ({fixed}: its first dimension is not dynamic); \
                 set max_batch_size: 0 and give full shapes in dims",
                config.max_batch_size
            ),
        ));
    }
    let batched = config.max_batch_size > 0;
    for (list, infos, what) in [
        (&mut config.input, inputs, "input"),
        (&mut config.output, outputs, "output"),
    ] {
        if list.is_empty() {
            *list = infos
                .iter()
                .map(|t| tensor_config(t, batched, what))
                .collect::<Result<_, _>>()?;
            changes.push(format!(
                "{what} filled from the model: {}",
                list.iter()
                    .map(|t| format!("{} {} {:?}", t.name, t.data_type, t.dims))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(changes)
}

/// The configuration entry describing one model tensor.
fn tensor_config(t: &TensorInfo, batched: bool, what: &str) -> Result<TensorConfig, ConfigError> {
    let dims: Vec<i64> = t.shape[usize::from(batched)..]
        .iter()
        .map(|d| d.fixed().map_or(-1, |n| n as i64))
        .collect();
    if dims.is_empty() {
        return Err(ConfigError::new(
            what,
            format!(
                "model {what} '{}' is a scalar{}, which a Triton configuration can only express with \
                 'reshape', which metal_mps does not support; give the model a shaped {what}",
                t.name,
                if batched { " per batch item" } else { "" }
            ),
        ));
    }
    Ok(TensorConfig {
        name: t.name.clone(),
        data_type: t.dtype.triton_name().to_string(),
        dims,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use metal_mps::DType;

    fn info(name: &str, shape: &[Dim]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype: DType::F32,
            shape: shape.to_vec(),
        }
    }
    fn batch() -> Dim {
        Dim::Sym("batch".into())
    }

    fn cnn() -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        let f = Dim::Fixed;
        (
            vec![info("input", &[batch(), f(3), f(224), f(224)])],
            vec![info("output", &[batch(), f(16), f(112), f(112)])],
        )
    }

    #[test]
    fn empty_config_is_filled_with_batching() {
        let (i, o) = cnn();
        let mut c = ModelConfig::default();
        let changes = auto_complete(&mut c, &i, &o, 4).unwrap();
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert_eq!(c.max_batch_size, 4);
        assert!(c.dynamic_batching.is_some());
        assert_eq!(c.input[0].name, "input");
        assert_eq!(c.input[0].data_type, "TYPE_FP32");
        assert_eq!(c.input[0].dims, vec![3, 224, 224]);
        assert_eq!(c.output[0].dims, vec![16, 112, 112]);
        crate::validate(&c, &i, &o).unwrap();
    }

    #[test]
    fn given_max_batch_size_and_scheduler_are_kept() {
        let (i, o) = cnn();
        let mut c = ModelConfig {
            max_batch_size: 8,
            ..Default::default()
        };
        c.extra
            .insert("sequence_batching".into(), serde_json::json!({}));
        auto_complete(&mut c, &i, &o, 4).unwrap();
        assert_eq!(c.max_batch_size, 8);
        assert!(c.dynamic_batching.is_none());
    }

    #[test]
    fn max_batch_size_one_gets_no_dynamic_batching() {
        let (i, o) = cnn();
        let mut c = ModelConfig::default();
        auto_complete(&mut c, &i, &o, 1).unwrap();
        assert_eq!(c.max_batch_size, 1);
        assert!(c.dynamic_batching.is_none());
    }

    #[test]
    fn complete_config_is_untouched() {
        let (i, o) = cnn();
        let mut c = ModelConfig::default();
        auto_complete(&mut c, &i, &o, 4).unwrap();
        let before = c.clone();
        assert!(auto_complete(&mut c, &i, &o, 16).unwrap().is_empty());
        assert_eq!(c, before);
    }

    #[test]
    fn only_missing_outputs_are_filled() {
        let (i, o) = cnn();
        let given = TensorConfig {
            name: "input".into(),
            data_type: "TYPE_FP32".into(),
            dims: vec![3, -1, -1],
            ..Default::default()
        };
        let mut c = ModelConfig {
            max_batch_size: 2,
            input: vec![given.clone()],
            ..Default::default()
        };
        auto_complete(&mut c, &i, &o, 4).unwrap();
        assert_eq!(c.input, vec![given]);
        assert_eq!(c.output[0].name, "output");
    }

    #[test]
    fn fixed_batch_model_gets_full_dims() {
        let f = Dim::Fixed;
        let i = vec![info("x", &[f(1), f(4)])];
        let o = vec![info("y", &[f(1), Dim::Unknown])];
        let mut c = ModelConfig::default();
        auto_complete(&mut c, &i, &o, 4).unwrap();
        assert_eq!(c.max_batch_size, 0);
        assert_eq!(c.input[0].dims, vec![1, 4]);
        assert_eq!(c.output[0].dims, vec![1, -1]);
    }

    #[test]
    fn batching_a_fixed_model_is_refused() {
        let f = Dim::Fixed;
        let i = vec![info("x", &[f(1), f(4)])];
        let o = vec![info("y", &[batch(), f(4)])];
        let mut c = ModelConfig {
            max_batch_size: 8,
            ..Default::default()
        };
        let e = auto_complete(&mut c, &i, &o, 4).unwrap_err();
        assert_eq!(e.field, "max_batch_size");
        assert!(e.message.contains("'x' has shape [1, 4]"), "{e}");
    }

    #[test]
    fn scalar_tensor_is_refused() {
        let i = vec![info("x", &[])];
        let o = vec![info("y", &[])];
        let e = auto_complete(&mut ModelConfig::default(), &i, &o, 4).unwrap_err();
        assert!(e.message.contains("scalar"), "{e}");
    }
}
