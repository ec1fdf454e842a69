//! A node's attributes, decoded from the model file, with typed access and ONNX defaults.

use metal_mps_ir::{Error, Graph, Result, Tensor, ValueType};
use std::collections::HashMap;
use std::sync::Arc;

/// One attribute value.
#[derive(Clone, Debug)]
pub enum Attribute {
    Int(i64),
    Float(f32),
    /// Bytes as stored (ONNX strings are UTF-8 by convention, not by rule).
    String(Vec<u8>),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<Vec<u8>>),
    Tensor(Arc<Tensor>),
    /// A subgraph (If branches, Loop and Scan bodies): its inputs are the
    /// body's own inputs followed by the outer-scope values it reads, which the
    /// importer appended to the node's inputs in the same order.
    Graph(Arc<Graph>),
    /// A type (Optional's `type`).
    Type(ValueType),
}

impl Attribute {
    fn kind(&self) -> &'static str {
        match self {
            Attribute::Int(_) => "an int",
            Attribute::Float(_) => "a float",
            Attribute::String(_) => "a string",
            Attribute::Ints(_) => "a list of ints",
            Attribute::Floats(_) => "a list of floats",
            Attribute::Strings(_) => "a list of strings",
            Attribute::Tensor(_) => "a tensor",
            Attribute::Graph(_) => "a graph",
            Attribute::Type(_) => "a type",
        }
    }
}

/// A node's attributes by name.
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    map: HashMap<String, Attribute>,
}

impl Attributes {
    pub fn new(map: HashMap<String, Attribute>) -> Attributes {
        Attributes { map }
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Attribute> {
        self.map.get(name)
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.opt_int(name)?.unwrap_or(default))
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Int(i)) => Ok(Some(*i)),
            Some(other) => Err(wrong(name, "an int", other)),
        }
    }

    /// An int attribute used as a flag (0 or 1).
    pub fn flag(&self, name: &str, default: bool) -> Result<bool> {
        Ok(self.int(name, default as i64)? != 0)
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.opt_float(name)?.unwrap_or(default))
    }

    pub fn opt_float(&self, name: &str) -> Result<Option<f32>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Float(f)) => Ok(Some(*f)),
            // Some exporters write an integral float as an int.
            Some(Attribute::Int(i)) => Ok(Some(*i as f32)),
            Some(other) => Err(wrong(name, "a float", other)),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Ints(v)) => Ok(Some(v.clone())),
            Some(other) => Err(wrong(name, "a list of ints", other)),
        }
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Floats(v)) => Ok(Some(v.clone())),
            Some(other) => Err(wrong(name, "a list of floats", other)),
        }
    }

    pub fn string(&self, name: &str) -> Result<Option<String>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::String(s)) => Ok(Some(String::from_utf8_lossy(s).into_owned())),
            Some(other) => Err(wrong(name, "a string", other)),
        }
    }

    /// A string attribute with a default.
    pub fn str_or(&self, name: &str, default: &str) -> Result<String> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }

    /// A string attribute's bytes as stored.
    pub fn bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(wrong(name, "a string", other)),
        }
    }

    /// A list-of-strings attribute's bytes as stored.
    pub fn byte_strings(&self, name: &str) -> Result<Option<Vec<Vec<u8>>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Strings(v)) => Ok(Some(v.clone())),
            Some(other) => Err(wrong(name, "a list of strings", other)),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Strings(v)) => Ok(Some(
                v.iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            )),
            Some(other) => Err(wrong(name, "a list of strings", other)),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Arc<Tensor>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Tensor(t)) => Ok(Some(t.clone())),
            Some(other) => Err(wrong(name, "a tensor", other)),
        }
    }

    pub fn graph(&self, name: &str) -> Result<Option<Arc<Graph>>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Graph(g)) => Ok(Some(g.clone())),
            Some(other) => Err(wrong(name, "a graph", other)),
        }
    }

    pub fn value_type(&self, name: &str) -> Result<Option<ValueType>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Attribute::Type(t)) => Ok(Some(t.clone())),
            Some(other) => Err(wrong(name, "a type", other)),
        }
    }

    /// Non-negative ints as sizes.
    pub fn sizes(&self, name: &str) -> Result<Option<Vec<usize>>> {
        self.ints(name)?
            .map(|v| {
                v.into_iter()
                    .map(|x| {
                        usize::try_from(x).map_err(|_| {
                            Error::InvalidModel(format!(
                                "attribute '{name}' has negative value {x}"
                            ))
                        })
                    })
                    .collect()
            })
            .transpose()
    }
}

fn wrong(name: &str, want: &str, got: &Attribute) -> Error {
    Error::InvalidModel(format!(
        "attribute '{name}' must be {want}, not {}",
        got.kind()
    ))
}
