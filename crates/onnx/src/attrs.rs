//! A node's `AttributeProto`s → [`Attributes`].

use crate::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};
use metal_mps_ir::{Error, Result};
use metal_mps_ops::{Attribute, Attributes};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Decodes every attribute of `node` except subgraphs, which `graph_attr`
/// turns into graphs; tensors' external data is looked up in `base`.
pub fn decode(
    node: &NodeProto,
    base: Option<&Path>,
    mut graph_attr: impl FnMut(&AttributeProto) -> Result<Attribute>,
) -> Result<Attributes> {
    let mut map = HashMap::new();
    for a in &node.attribute {
        let name = a.name.clone().unwrap_or_default();
        let value = decode_one(a, base, &mut graph_attr)
            .map_err(|e| Error::InvalidModel(format!("attribute '{name}': {e}")))?;
        map.insert(name, value);
    }
    Ok(Attributes::new(map))
}

fn decode_one(
    a: &AttributeProto,
    base: Option<&Path>,
    graph_attr: &mut impl FnMut(&AttributeProto) -> Result<Attribute>,
) -> Result<Attribute> {
    // Old writers leave `type` unset; the filled field tells the kind then.
    let kind = a
        .r#type
        .and_then(|t| AttributeType::try_from(t).ok())
        .filter(|t| *t != AttributeType::Undefined)
        .unwrap_or(if a.f.is_some() {
            AttributeType::Float
        } else if a.i.is_some() {
            AttributeType::Int
        } else if a.s.is_some() {
            AttributeType::String
        } else if a.t.is_some() {
            AttributeType::Tensor
        } else if a.g.is_some() {
            AttributeType::Graph
        } else if !a.floats.is_empty() {
            AttributeType::Floats
        } else if !a.ints.is_empty() {
            AttributeType::Ints
        } else if !a.strings.is_empty() {
            AttributeType::Strings
        } else if !a.tensors.is_empty() {
            AttributeType::Tensors
        } else {
            AttributeType::Ints
        });
    let missing = || Error::InvalidModel("the value its type names is missing".into());
    Ok(match kind {
        AttributeType::Int => Attribute::Int(a.i.ok_or_else(missing)?),
        AttributeType::Float => Attribute::Float(a.f.ok_or_else(missing)?),
        AttributeType::String => Attribute::String(a.s.clone().ok_or_else(missing)?),
        AttributeType::Ints => Attribute::Ints(a.ints.clone()),
        AttributeType::Floats => Attribute::Floats(a.floats.clone()),
        AttributeType::Strings => Attribute::Strings(a.strings.clone()),
        AttributeType::Tensor => {
            let t = a.t.as_ref().ok_or_else(missing)?;
            Attribute::Tensor(Arc::new(crate::tensor::tensor_from_proto(t, base)?))
        }
        AttributeType::Graph | AttributeType::Graphs => graph_attr(a)?,
        AttributeType::TypeProto => {
            let t = a.tp.as_ref().ok_or_else(missing)?;
            Attribute::Type(crate::graph::type_from_proto(t)?)
        }
        other => {
            return Err(Error::Unsupported(format!(
                "attributes of type {}",
                other.as_str_name()
            )))
        }
    })
}
