//! Checking run-time inputs against the model's declaration.

use metal_mps_ir::{display_shape, DType, Dim, Error, Result, Tensor};
use std::collections::HashMap;

/// A model input or output as declared.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorInfo {
    pub fn describe(&self) -> String {
        format!(
            "'{}' {} {}",
            self.name,
            self.dtype,
            display_shape(Some(&self.shape))
        )
    }
}

/// Orders named inputs as declared, checking names, dtypes, ranks, fixed dims
/// and that a symbolic dim has one size across inputs.
pub fn order_inputs<'a>(
    declared: &[TensorInfo],
    given: &[(&str, &'a Tensor)],
) -> Result<Vec<&'a Tensor>> {
    let mut by_name: HashMap<&str, &'a Tensor> = HashMap::new();
    for (name, t) in given {
        if by_name.insert(name, t).is_some() {
            return Err(Error::InvalidInput(format!(
                "input '{name}' is given twice"
            )));
        }
        if !declared.iter().any(|d| d.name == *name) {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            return Err(Error::InvalidInput(format!(
                "unknown input '{name}' (the model's inputs: {})",
                names.join(", ")
            )));
        }
    }
    let mut symbols: HashMap<&str, (usize, &str)> = HashMap::new();
    let mut ordered = Vec::with_capacity(declared.len());
    for d in declared {
        let t = *by_name
            .get(d.name.as_str())
            .ok_or_else(|| Error::InvalidInput(format!("missing input {}", d.describe())))?;
        if t.dtype() != d.dtype {
            return Err(Error::InvalidInput(format!(
                "input '{}' must be {}, got {}",
                d.name,
                d.dtype,
                t.dtype()
            )));
        }
        if t.rank() != d.shape.len() {
            return Err(Error::InvalidInput(format!(
                "input '{}' must have rank {} {}, got shape {:?}",
                d.name,
                d.shape.len(),
                display_shape(Some(&d.shape)),
                t.shape()
            )));
        }
        for (i, (dim, &size)) in d.shape.iter().zip(t.shape()).enumerate() {
            match dim {
                Dim::Fixed(f) if *f != size => {
                    return Err(Error::InvalidInput(format!(
                        "input '{}' dimension {i} must be {f}, got shape {:?}",
                        d.name,
                        t.shape()
                    )))
                }
                Dim::Sym(s) => {
                    if let Some((prev, other)) = symbols.insert(s, (size, &d.name)) {
                        if prev != size {
                            return Err(Error::InvalidInput(format!(
                                "dimension '{s}' is {prev} in input '{other}' but {size} in input '{}'",
                                d.name
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
        ordered.push(t);
    }
    Ok(ordered)
}
