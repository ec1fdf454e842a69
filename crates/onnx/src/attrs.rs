//! Typed access to a node's attributes, with ONNX defaults.

use crate::proto::{AttributeProto, NodeProto};
use metal_mps_ir::{Error, Result, Tensor};
use std::collections::HashMap;

/// A node's attributes by name.
pub struct Attrs<'a> {
    map: HashMap<&'a str, &'a AttributeProto>,
}

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto) -> Attrs<'a> {
        Attrs {
            map: node
                .attribute
                .iter()
                .map(|a| (a.name.as_deref().unwrap_or(""), a))
                .collect(),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.opt_int(name)?.unwrap_or(default))
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(a) => a.i.map(Some).ok_or_else(|| wrong(name, "an int")),
        }
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.map.get(name) {
            None => Ok(default),
            Some(a) => a.f.ok_or_else(|| wrong(name, "a float")),
        }
    }

    pub fn opt_float(&self, name: &str) -> Result<Option<f32>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(a) => a.f.map(Some).ok_or_else(|| wrong(name, "a float")),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.map.get(name).map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self.map.get(name).map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(a) => {
                let s = a.s.as_ref().ok_or_else(|| wrong(name, "a string"))?;
                Ok(Some(String::from_utf8_lossy(s).into_owned()))
            }
        }
    }

    pub fn tensor(&self, name: &str, base: Option<&std::path::Path>) -> Result<Option<Tensor>> {
        match self.map.get(name) {
            None => Ok(None),
            Some(a) => {
                let t = a.t.as_ref().ok_or_else(|| wrong(name, "a tensor"))?;
                crate::tensor::tensor_from_proto(t, base).map(Some)
            }
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

fn wrong(name: &str, what: &str) -> Error {
    Error::InvalidModel(format!("attribute '{name}' must be {what}"))
}
