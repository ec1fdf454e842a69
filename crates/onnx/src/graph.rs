//! ModelProto → Graph: values, constants, nodes, then inference.

use crate::proto::{
    tensor_shape_proto::dimension, type_proto, ModelProto, NodeProto, ValueInfoProto,
};
use crate::tensor::{dtype_from_onnx, tensor_from_proto};
use metal_mps_ir::{infer, Dim, Error, Graph, Node, Op, Result, Tensor, ValueId};
use metal_mps_ops::{normalize_domain, Attributes, BuildCx};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// A graph and what the model file said about itself.
#[derive(Clone, Debug)]
pub struct ImportedModel {
    pub graph: Graph,
    /// The default-domain opset the model was written for (0: it imports only other domains).
    pub opset: i64,
    pub producer: String,
}

/// Reads and imports `path`; external data files are looked up beside it.
pub fn load_model(path: impl AsRef<Path>) -> Result<ImportedModel> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_model(&bytes, path.parent())
}

/// Imports a serialized `ModelProto`.
pub fn parse_model(bytes: &[u8], base_dir: Option<&Path>) -> Result<ImportedModel> {
    let model = ModelProto::decode(bytes).map_err(|e| {
        Error::InvalidModel(format!(
            "not a valid ONNX model (protobuf decoding failed: {e}); is the file truncated?"
        ))
    })?;
    let opset = default_opset(&model)?;
    let opsets = domain_opsets(&model);
    let proto = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::InvalidModel("the model has no graph".into()))?;
    if proto.output.is_empty() {
        return Err(Error::InvalidModel(
            "the graph declares no outputs (is this an ONNX model?)".into(),
        ));
    }
    let mut b = Builder {
        g: Graph::default(),
        names: HashMap::new(),
        opsets,
        base_dir,
    };
    for init in &proto.initializer {
        let name = init.name.clone().unwrap_or_default();
        let t = tensor_from_proto(init, base_dir)?;
        let id = b.g.add_constant(name.clone(), t);
        b.names.insert(name, id);
    }
    if !proto.sparse_initializer.is_empty() {
        return Err(Error::Unsupported("sparse initializers".into()));
    }
    for vi in &proto.input {
        let name = vi.name.clone().unwrap_or_default();
        // Old exporters list initializers as graph inputs too: they stay constants.
        if b.names.contains_key(&name) {
            continue;
        }
        let id = b.g.add_value(name.clone());
        let (dtype, shape) = value_type(vi)?;
        b.g.values[id].dtype = Some(dtype);
        b.g.values[id].shape = shape;
        b.g.inputs.push(id);
        b.names.insert(name, id);
    }
    for node in topological(&proto.node, &b.names)? {
        b.add_node(node)?;
    }
    for vi in &proto.output {
        let name = vi.name.clone().unwrap_or_default();
        let id = *b.names.get(&name).ok_or_else(|| {
            Error::InvalidModel(format!("graph output '{name}' is not produced by any node"))
        })?;
        b.g.outputs.push(id);
        if b.g.values[id].shape.is_none() {
            if let Ok((_, Some(shape))) = value_type(vi) {
                b.g.values[id].shape = Some(shape);
            }
        }
    }
    infer::infer_graph(&mut b.g)?;
    Ok(ImportedModel {
        graph: b.g,
        opset,
        producer: model.producer_name.unwrap_or_default(),
    })
}

/// The default domain's opset; 0 for a model that imports only other
/// domains (an `ai.onnx.ml` pipeline, say).
fn default_opset(model: &ModelProto) -> Result<i64> {
    if model.opset_import.is_empty() {
        return Err(Error::InvalidModel(
            "the model imports no opset (is this an ONNX model?)".into(),
        ));
    }
    let Some(opset) = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .map(|o| o.version.unwrap_or(1))
    else {
        return Ok(0);
    };
    if !(crate::MIN_OPSET..=crate::MAX_OPSET).contains(&opset) {
        return Err(Error::Unsupported(format!(
            "opset {opset} (supported: {} to {})",
            crate::MIN_OPSET,
            crate::MAX_OPSET
        )));
    }
    Ok(opset)
}

/// The opset the model imports for each domain (`""` for the default one).
fn domain_opsets(model: &ModelProto) -> HashMap<String, i64> {
    model
        .opset_import
        .iter()
        .map(|o| {
            (
                normalize_domain(o.domain.as_deref().unwrap_or("")).to_string(),
                o.version.unwrap_or(1),
            )
        })
        .collect()
}

/// Dtype and shape of a graph input or output.
fn value_type(vi: &ValueInfoProto) -> Result<(metal_mps_ir::DType, Option<Vec<Dim>>)> {
    let name = vi.name.as_deref().unwrap_or("");
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(Error::Unsupported(format!(
            "value '{name}' is not a tensor (sequences, maps and optionals are not supported)"
        )));
    };
    let dtype = dtype_from_onnx(t.elem_type.unwrap_or(0)).map_err(|e| match e {
        Error::Unsupported(m) => Error::Unsupported(format!("value '{name}': {m}")),
        other => other,
    })?;
    let shape = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
                Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    Ok((dtype, shape))
}

/// Nodes in an order where every input is defined before use.
fn topological<'a>(
    nodes: &'a [NodeProto],
    known: &HashMap<String, ValueId>,
) -> Result<Vec<&'a NodeProto>> {
    let mut defined: std::collections::HashSet<&str> = known.keys().map(String::as_str).collect();
    let mut pending: Vec<&NodeProto> = nodes.iter().collect();
    let mut order = Vec::with_capacity(nodes.len());
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for n in pending {
            if n.input
                .iter()
                .all(|i| i.is_empty() || defined.contains(i.as_str()))
            {
                defined.extend(n.output.iter().map(String::as_str));
                order.push(n);
            } else {
                rest.push(n);
            }
        }
        if rest.len() == before {
            let n = rest[0];
            let missing = n
                .input
                .iter()
                .find(|i| !i.is_empty() && !defined.contains(i.as_str()))
                .cloned()
                .unwrap_or_default();
            return Err(Error::InvalidModel(format!(
                "node '{}' ({}) reads '{missing}', which no node, input or initializer defines (or the graph has a cycle)",
                n.name.as_deref().unwrap_or(""),
                n.op_type.as_deref().unwrap_or("")
            )));
        }
        pending = rest;
    }
    Ok(order)
}

struct Builder<'p> {
    g: Graph,
    names: HashMap<String, ValueId>,
    /// Opset per domain.
    opsets: HashMap<String, i64>,
    base_dir: Option<&'p Path>,
}

impl Builder<'_> {
    fn add_node(&mut self, p: &NodeProto) -> Result<()> {
        let op_type = p.op_type.clone().unwrap_or_default();
        let name = p
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{op_type}_{}", self.g.nodes.len()));
        let domain = normalize_domain(p.domain.as_deref().unwrap_or(""));
        let opset = self.opsets.get(domain).copied();
        let ident = Node {
            name: name.clone(),
            op: Op::Identity,
            onnx_op: op_type.clone(),
            opset: opset.unwrap_or(0),
            inputs: vec![],
            outputs: vec![],
        };
        let Some(opset) = opset else {
            return Err(ident.error(Error::InvalidModel(format!(
                "the model imports no opset of domain '{domain}'"
            ))));
        };
        let attrs = crate::attrs::decode(p, self.base_dir, |_| {
            Err(Error::Unsupported("subgraph attributes".into()))
        })
        .map_err(|e| ident.error(e))?;
        if op_type == "Constant" && domain.is_empty() {
            let t = constant_value(&attrs).map_err(|e| ident.error(e))?;
            let out = p.output.first().cloned().unwrap_or_default();
            let id = self.g.add_constant(out.clone(), t);
            self.names.insert(out, id);
            return Ok(());
        }
        let cx = BuildCx {
            op_type: &op_type,
            domain,
            opset,
            attrs: &attrs,
            num_inputs: p.input.len(),
            num_outputs: p.output.len(),
        };
        let op = metal_mps_ops::build(&cx).map_err(|e| ident.error(e))?;
        let inputs = p
            .input
            .iter()
            .map(|i| {
                if i.is_empty() {
                    None
                } else {
                    self.names.get(i).copied()
                }
            })
            .collect();
        let outputs = p
            .output
            .iter()
            .map(|o| {
                let id = self.g.add_value(if o.is_empty() {
                    format!("{name}:unused")
                } else {
                    o.clone()
                });
                if !o.is_empty() {
                    self.names.insert(o.clone(), id);
                }
                id
            })
            .collect();
        self.g.nodes.push(Node {
            name,
            op,
            onnx_op: op_type,
            opset,
            inputs,
            outputs,
        });
        Ok(())
    }
}

/// The tensor of a `Constant` node, from whichever value attribute it carries.
fn constant_value(a: &Attributes) -> Result<Tensor> {
    if let Some(t) = a.tensor("value")? {
        return Ok((*t).clone());
    }
    if let Some(f) = a.opt_float("value_float")? {
        return Ok(Tensor::scalar(f));
    }
    if let Some(v) = a.floats("value_floats")? {
        return Tensor::from_vec(vec![v.len()], v);
    }
    if let Some(i) = a.opt_int("value_int")? {
        return Ok(Tensor::scalar(i));
    }
    if let Some(v) = a.ints("value_ints")? {
        return Tensor::from_vec(vec![v.len()], v);
    }
    if a.has("sparse_value") {
        return Err(Error::Unsupported("Constant with a sparse_value".into()));
    }
    if a.has("value_string") || a.has("value_strings") {
        return Err(Error::Unsupported("STRING constants".into()));
    }
    Err(Error::InvalidModel(
        "Constant has no value attribute".into(),
    ))
}
