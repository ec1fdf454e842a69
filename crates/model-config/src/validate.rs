//! Checking a configuration against the model it configures.
//!
//! Every configured input and output must exist in the model with the same
//! data type and compatible dims (a -1 in the configuration accepts any size; a
//! fixed size must equal the model's when the model fixes it). Every model
//! input must be configured, since the engine needs them all; outputs may be a
//! subset. With `max_batch_size > 0`, `dims` leave out the batch dimension and
//! the model's first dimension must be dynamic.

use crate::error::ConfigError;
use crate::types::{ModelConfig, TensorConfig};
use metal_mps::{Dim, TensorInfo};

/// Checks `config` against the model's signature; the error names the first wrong field.
pub fn validate(
    config: &ModelConfig,
    inputs: &[TensorInfo],
    outputs: &[TensorInfo],
) -> Result<(), ConfigError> {
    if config.max_batch_size < 0 {
        return Err(ConfigError::new(
            "max_batch_size",
            format!("is {}; it must be 0 or more", config.max_batch_size),
        ));
    }
    check_list(config, &config.input, inputs, "input")?;
    check_list(config, &config.output, outputs, "output")?;
    if let Some(missing) = inputs
        .iter()
        .find(|m| !config.input.iter().any(|c| c.name == m.name))
    {
        return Err(ConfigError::new(
            "input",
            format!(
                "the model's input '{}' ({} {}) is not configured; every model input must be listed",
                missing.name,
                missing.dtype.triton_name(),
                crate::display_dims(&missing.shape)
            ),
        ));
    }
    if config.output.is_empty() {
        return Err(ConfigError::new(
            "output",
            "lists no outputs; list at least one of the model's outputs",
        ));
    }
    Ok(())
}

fn check_list(
    config: &ModelConfig,
    list: &[TensorConfig],
    model: &[TensorInfo],
    what: &str,
) -> Result<(), ConfigError> {
    for (i, t) in list.iter().enumerate() {
        let field = format!("{what}[{i}]");
        if list[..i].iter().any(|u| u.name == t.name) {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("'{}' is listed twice", t.name),
            ));
        }
        let Some(m) = model.iter().find(|m| m.name == t.name) else {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!(
                    "'{}' is not an {what} of the model; its {what}s are: {}",
                    t.name,
                    model
                        .iter()
                        .map(|m| format!("'{}'", m.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let dtype = t.dtype(&field)?;
        if dtype != m.dtype {
            return Err(ConfigError::new(
                format!("{field}.data_type"),
                format!(
                    "is {} but the model's {what} '{}' is {}",
                    t.data_type,
                    m.name,
                    m.dtype.triton_name()
                ),
            ));
        }
        if t.extra.get("reshape").is_some_and(|r| !r.is_null()) {
            return Err(ConfigError::new(
                format!("{field}.reshape"),
                "is not supported by metal_mps; remove it",
            ));
        }
        check_dims(config.max_batch_size, &field, t, m, what)?;
    }
    Ok(())
}

fn check_dims(
    max_batch_size: i64,
    field: &str,
    t: &TensorConfig,
    m: &TensorInfo,
    what: &str,
) -> Result<(), ConfigError> {
    let model_shape = crate::display_dims(&m.shape);
    let rest = if max_batch_size > 0 {
        match m.shape.first() {
            Some(Dim::Sym(_) | Dim::Unknown) => &m.shape[1..],
            _ => {
                return Err(ConfigError::new(
                    "max_batch_size",
                    format!(
                        "is {max_batch_size} but the model's {what} '{}' has shape {model_shape}, whose first \
                         dimension is not a dynamic batch dimension; set max_batch_size: 0 and give full shapes",
                        m.name
                    ),
                ))
            }
        }
    } else {
        &m.shape[..]
    };
    let dims_field = format!("{field}.dims");
    if let Some(bad) = t.dims.iter().find(|&&d| d < -1) {
        return Err(ConfigError::new(
            dims_field,
            format!("contains {bad}; a dimension is -1 (any size) or 0 and up"),
        ));
    }
    if t.dims.len() != rest.len() {
        let note = if max_batch_size > 0 {
            " after the batch dimension (with max_batch_size > 0, dims leave the batch dimension out)"
        } else {
            " (with max_batch_size: 0, dims are the full shape)"
        };
        return Err(ConfigError::new(
            dims_field,
            format!(
                "{:?} has {} dimensions but the model's {what} '{}' has shape {model_shape}, which is {} dimensions{note}",
                t.dims,
                t.dims.len(),
                m.name,
                rest.len()
            ),
        ));
    }
    for (k, (&c, d)) in t.dims.iter().zip(rest).enumerate() {
        if let Some(n) = d.fixed() {
            if c != -1 && c != n as i64 {
                return Err(ConfigError::new(
                    dims_field,
                    format!(
                        "{:?} does not match the model's {what} '{}' of shape {model_shape}: dimension {k} is {c} \
                         in the configuration but {n} in the model",
                        t.dims, m.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use metal_mps::DType;

    fn model() -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        let f = Dim::Fixed;
        let b = Dim::Sym("batch".into());
        (
            vec![TensorInfo {
                name: "input".into(),
                dtype: DType::F32,
                shape: vec![b.clone(), f(3), f(224), f(224)],
            }],
            vec![
                TensorInfo {
                    name: "output".into(),
                    dtype: DType::F32,
                    shape: vec![b.clone(), f(1000)],
                },
                TensorInfo {
                    name: "aux".into(),
                    dtype: DType::I64,
                    shape: vec![b, Dim::Unknown],
                },
            ],
        )
    }

    fn tc(name: &str, ty: &str, dims: &[i64]) -> TensorConfig {
        TensorConfig {
            name: name.into(),
            data_type: ty.into(),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    /// The spec's example configuration.
    fn spec_config() -> ModelConfig {
        ModelConfig {
            name: "my_mps_model".into(),
            backend: "metal_mps".into(),
            max_batch_size: 8,
            input: vec![tc("input", "TYPE_FP32", &[3, 224, 224])],
            output: vec![tc("output", "TYPE_FP32", &[1000])],
            ..Default::default()
        }
    }

    fn err(c: &ModelConfig) -> ConfigError {
        let (i, o) = model();
        validate(c, &i, &o).unwrap_err()
    }

    #[test]
    fn spec_example_is_valid_and_outputs_may_be_a_subset() {
        let (i, o) = model();
        validate(&spec_config(), &i, &o).unwrap();
        let mut c = spec_config();
        c.input[0].dims = vec![3, -1, -1];
        c.output.push(tc("aux", "TYPE_INT64", &[7]));
        validate(&c, &i, &o).unwrap();
    }

    #[test]
    fn unknown_name_lists_the_real_ones() {
        let mut c = spec_config();
        c.output[0].name = "logits".into();
        let e = err(&c);
        assert_eq!(e.field, "output[0].name");
        assert!(
            e.message.contains("'logits'") && e.message.contains("'output', 'aux'"),
            "{e}"
        );
    }

    #[test]
    fn wrong_dtype_names_both_types() {
        let mut c = spec_config();
        c.input[0].data_type = "TYPE_FP16".into();
        let e = err(&c);
        assert_eq!(e.field, "input[0].data_type");
        assert!(
            e.message.contains("TYPE_FP16") && e.message.contains("TYPE_FP32"),
            "{e}"
        );
    }

    #[test]
    fn wrong_dim_says_which() {
        let mut c = spec_config();
        c.input[0].dims = vec![3, 224, 225];
        let e = err(&c);
        assert_eq!(e.field, "input[0].dims");
        assert!(e.message.contains("dimension 2 is 225"), "{e}");
    }

    #[test]
    fn wrong_rank_explains_the_batch_dimension() {
        let mut c = spec_config();
        c.input[0].dims = vec![1, 3, 224, 224];
        let e = err(&c);
        assert!(e.message.contains("leave the batch dimension out"), "{e}");
        c.max_batch_size = 0;
        c.output[0].dims = vec![-1, 1000];
        validate(&c, &model().0, &model().1).unwrap();
    }

    #[test]
    fn missing_model_input_and_empty_outputs_are_refused() {
        let mut c = spec_config();
        c.input.clear();
        assert!(err(&c)
            .message
            .contains("'input' (TYPE_FP32 [batch, 3, 224, 224]) is not configured"));
        let mut c = spec_config();
        c.output.clear();
        assert_eq!(err(&c).field, "output");
    }

    #[test]
    fn duplicates_reshape_and_negative_values_are_refused() {
        let mut c = spec_config();
        c.output.push(c.output[0].clone());
        assert!(err(&c).message.contains("listed twice"));
        let mut c = spec_config();
        c.input[0]
            .extra
            .insert("reshape".into(), serde_json::json!({"shape": [150528]}));
        assert_eq!(err(&c).field, "input[0].reshape");
        let mut c = spec_config();
        c.max_batch_size = -2;
        assert_eq!(err(&c).field, "max_batch_size");
        let mut c = spec_config();
        c.input[0].dims = vec![3, -5, 224];
        assert!(err(&c).message.contains("contains -5"));
    }

    #[test]
    fn batching_a_model_with_fixed_first_dim_is_refused() {
        let i = vec![TensorInfo {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![Dim::Fixed(1), Dim::Fixed(4)],
        }];
        let c = ModelConfig {
            max_batch_size: 4,
            input: vec![tc("x", "TYPE_FP32", &[4])],
            output: vec![],
            ..Default::default()
        };
        let e = validate(&c, &i, &[]).unwrap_err();
        assert_eq!(e.field, "max_batch_size");
    }
}
