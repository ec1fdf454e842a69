//! ModelProto → Graph: values, constants, nodes, then inference.

use crate::metadata::ModelMetadata;
use crate::proto::{
    tensor_shape_proto::dimension, type_proto, AttributeProto, FunctionProto, GraphProto,
    ModelProto, NodeProto, TypeProto, ValueInfoProto,
};
use crate::tensor::{dtype_from_onnx, tensor_from_proto};
use metal_mps_ir::{infer, Dim, Error, Graph, Kind, Node, Op, Result, Tensor, ValueId, ValueType};
use metal_mps_ops::{normalize_domain, Attributes, BuildCx};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// A graph and what the model file said about itself.
#[derive(Clone, Debug)]
pub struct ImportedModel {
    pub graph: Graph,
    /// The default-domain opset the model was written for (0: it imports only other domains).
    pub opset: i64,
    pub metadata: ModelMetadata,
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
    let functions: HashMap<(String, String), &FunctionProto> = model
        .functions
        .iter()
        .map(|f| {
            (
                (
                    normalize_domain(f.domain.as_deref().unwrap_or("")).to_string(),
                    f.name.clone().unwrap_or_default(),
                ),
                f,
            )
        })
        .collect();
    let cx = ImportCx {
        opsets: &opsets,
        base_dir,
        functions: &functions,
    };
    let mut b = Builder::new(&cx);
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
        let ty = value_type(vi)?;
        b.g.values[id].dtype = Some(ty.dtype);
        b.g.values[id].shape = ty.shape;
        b.g.values[id].kind = ty.kind;
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
            if let Ok(ValueType {
                shape: Some(shape), ..
            }) = value_type(vi)
            {
                b.g.values[id].shape = Some(shape);
            }
        }
    }
    infer::infer_graph(&mut b.g)?;
    Ok(ImportedModel {
        graph: b.g,
        opset,
        metadata: ModelMetadata::of(&model),
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

/// Kind, dtype and shape of a graph input or output.
fn value_type(vi: &ValueInfoProto) -> Result<ValueType> {
    let name = vi.name.as_deref().unwrap_or("");
    let t = vi
        .r#type
        .as_ref()
        .ok_or_else(|| Error::InvalidModel(format!("value '{name}' has no type")))?;
    type_from_proto(t).map_err(|e| match e {
        Error::Unsupported(m) => Error::Unsupported(format!("value '{name}': {m}")),
        other => other,
    })
}

/// A `TypeProto`: a tensor, a sequence of tensors, or an optional of either.
pub(crate) fn type_from_proto(t: &TypeProto) -> Result<ValueType> {
    let inner = |elem: Option<&TypeProto>, what: &str| {
        elem.ok_or_else(|| Error::InvalidModel(format!("a {what} type without an element type")))
            .and_then(type_from_proto)
    };
    match t.value.as_ref() {
        Some(type_proto::Value::TensorType(t)) => {
            let dtype = dtype_from_onnx(t.elem_type.unwrap_or(0))?;
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
            Ok(ValueType {
                kind: Kind::Tensor,
                dtype,
                shape,
            })
        }
        Some(type_proto::Value::SequenceType(s)) => {
            let elem = inner(s.elem_type.as_deref(), "sequence")?;
            if !elem.kind.is_tensor() {
                return Err(Error::Unsupported(format!(
                    "sequences of {} values (only sequences of tensors)",
                    elem.kind
                )));
            }
            Ok(ValueType {
                kind: Kind::Sequence,
                ..elem
            })
        }
        Some(type_proto::Value::OptionalType(o)) => {
            let elem = inner(o.elem_type.as_deref(), "optional")?;
            if matches!(elem.kind, Kind::Optional(_)) {
                return Err(Error::InvalidModel(
                    "an optional of an optional is not an ONNX type".into(),
                ));
            }
            Ok(ValueType {
                kind: Kind::optional(elem.kind),
                ..elem
            })
        }
        Some(type_proto::Value::MapType(_)) => Err(Error::Unsupported(
            "map values (tensors, sequences of tensors and optionals are supported)".into(),
        )),
        _ => Err(Error::Unsupported(
            "this value type (tensors, sequences of tensors and optionals are supported)".into(),
        )),
    }
}

/// The subgraphs among a node's attributes.
fn subgraph_protos(n: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    n.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
}

/// The names a subgraph reads from enclosing scopes (through any depth of
/// nesting), in order of first use.
fn free_names(g: &GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(g.initializer.iter().filter_map(|t| t.name.as_deref()));
    defined.extend(g.input.iter().filter_map(|v| v.name.as_deref()));
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    let mut seen = HashSet::new();
    let mut free = Vec::new();
    let mut add = |name: &str, free: &mut Vec<String>| {
        if !name.is_empty() && !defined.contains(name) && seen.insert(name.to_string()) {
            free.push(name.to_string());
        }
    };
    for n in &g.node {
        for i in &n.input {
            add(i, &mut free);
        }
        for sub in subgraph_protos(n) {
            for i in free_names(sub) {
                add(&i, &mut free);
            }
        }
    }
    for o in &g.output {
        add(o.name.as_deref().unwrap_or(""), &mut free);
    }
    free
}

/// The outer-scope names the subgraphs of one node read (the union, in order).
fn node_captures(n: &NodeProto) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for sub in subgraph_protos(n) {
        for name in free_names(sub) {
            if seen.insert(name.clone()) {
                out.push(name);
            }
        }
    }
    out
}

/// Nodes in an order where every input (and every outer value their
/// subgraphs read) is defined before use. Names that no node of this graph
/// produces are left for the node's import to resolve (outer scopes).
fn topological<'a>(
    nodes: &'a [NodeProto],
    known: &HashMap<String, ValueId>,
) -> Result<Vec<&'a NodeProto>> {
    let produced: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let deps: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            n.input
                .iter()
                .cloned()
                .chain(node_captures(n))
                .filter(|i| !i.is_empty() && produced.contains(i.as_str()))
                .collect()
        })
        .collect();
    let mut defined: HashSet<&str> = known.keys().map(String::as_str).collect();
    let mut pending: Vec<usize> = (0..nodes.len()).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for k in pending {
            if deps[k].iter().all(|i| defined.contains(i.as_str())) {
                defined.extend(nodes[k].output.iter().map(String::as_str));
                order.push(&nodes[k]);
            } else {
                rest.push(k);
            }
        }
        if rest.len() == before {
            let k = rest[0];
            let n = &nodes[k];
            let missing = deps[k]
                .iter()
                .find(|i| !defined.contains(i.as_str()))
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

/// What every scope of one model shares.
struct ImportCx<'p> {
    /// Opset per domain.
    opsets: &'p HashMap<String, i64>,
    base_dir: Option<&'p Path>,
    /// Model-local functions by (domain, name).
    functions: &'p HashMap<(String, String), &'p FunctionProto>,
}

/// Nesting limit of subgraphs and function calls (a guard against recursion).
const MAX_DEPTH: usize = 64;

struct Builder<'p> {
    g: Graph,
    names: HashMap<String, ValueId>,
    cx: &'p ImportCx<'p>,
    depth: usize,
    /// Function calls inlined so far (for unique value names).
    calls: usize,
}

impl<'p> Builder<'p> {
    fn new(cx: &'p ImportCx<'p>) -> Builder<'p> {
        Builder {
            g: Graph::default(),
            names: HashMap::new(),
            cx,
            depth: 0,
            calls: 0,
        }
    }

    /// Imports a subgraph attribute whose inputs are its own followed by
    /// `captures` (outer values, bound by name).
    fn import_body(&self, proto: &GraphProto, captures: &[String]) -> Result<Graph> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::InvalidModel(format!(
                "subgraphs nest deeper than {MAX_DEPTH} levels"
            )));
        }
        let mut b = Builder {
            g: Graph::default(),
            names: HashMap::new(),
            cx: self.cx,
            depth: self.depth + 1,
            calls: 0,
        };
        for init in &proto.initializer {
            let name = init.name.clone().unwrap_or_default();
            let t = tensor_from_proto(init, self.cx.base_dir)?;
            let id = b.g.add_constant(name.clone(), t);
            b.names.insert(name, id);
        }
        if !proto.sparse_initializer.is_empty() {
            return Err(Error::Unsupported("sparse initializers".into()));
        }
        for vi in &proto.input {
            let name = vi.name.clone().unwrap_or_default();
            let id = b.g.add_value(name.clone());
            // A body input may leave its type to the enclosing op.
            if vi.r#type.is_some() {
                let ty = value_type(vi)?;
                b.g.values[id].dtype = Some(ty.dtype);
                b.g.values[id].shape = ty.shape;
                b.g.values[id].kind = ty.kind;
            }
            b.g.inputs.push(id);
            b.names.insert(name, id);
        }
        for name in captures {
            let id = b.g.add_value(name.clone());
            b.g.inputs.push(id);
            b.names.insert(name.clone(), id);
        }
        for node in topological(&proto.node, &b.names)? {
            b.add_node(node)?;
        }
        for vi in &proto.output {
            let name = vi.name.clone().unwrap_or_default();
            let id = *b.names.get(&name).ok_or_else(|| {
                Error::InvalidModel(format!(
                    "subgraph output '{name}' is not produced by any node"
                ))
            })?;
            b.g.outputs.push(id);
        }
        Ok(b.g)
    }

    fn add_node(&mut self, p: &NodeProto) -> Result<()> {
        let op_type = p.op_type.clone().unwrap_or_default();
        let name = p
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{op_type}_{}", self.g.nodes.len()));
        let domain = normalize_domain(p.domain.as_deref().unwrap_or(""));
        if let Some(f) = self
            .cx
            .functions
            .get(&(domain.to_string(), op_type.clone()))
        {
            return self.inline_call(p, f, &name);
        }
        let opset = self.cx.opsets.get(domain).copied();
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
        let captures = node_captures(p);
        let mut captured_ids = Vec::with_capacity(captures.len());
        for c in &captures {
            let id = self.names.get(c).copied().ok_or_else(|| {
                ident.error(Error::InvalidModel(format!(
                    "a subgraph reads '{c}', which no enclosing scope defines"
                )))
            })?;
            captured_ids.push(Some(id));
        }
        let attrs = crate::attrs::decode(p, self.cx.base_dir, |a: &AttributeProto| {
            match (&a.g, a.graphs.is_empty()) {
                (Some(g), true) => Ok(metal_mps_ops::Attribute::Graph(Arc::new(
                    self.import_body(g, &captures)?,
                ))),
                _ => Err(Error::Unsupported(
                    "attributes holding lists of graphs".into(),
                )),
            }
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
        let mut inputs: Vec<Option<ValueId>> = Vec::with_capacity(p.input.len() + captures.len());
        for i in &p.input {
            if i.is_empty() {
                inputs.push(None);
            } else {
                let id = self.names.get(i).copied().ok_or_else(|| {
                    ident.error(Error::InvalidModel(format!(
                        "input '{i}' is not defined by any node, input or initializer"
                    )))
                })?;
                inputs.push(Some(id));
            }
        }
        inputs.extend(captured_ids);
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

    /// Inlines a call of a model-local function: its nodes are added with
    /// their values renamed uniquely for this call and attribute references
    /// bound to the call's attributes (or the function's defaults).
    fn inline_call(&mut self, call: &NodeProto, f: &FunctionProto, name: &str) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::InvalidModel(format!(
                "function calls nest deeper than {MAX_DEPTH} levels (recursive function '{}'?)",
                f.name.as_deref().unwrap_or("")
            )));
        }
        self.calls += 1;
        let prefix = format!("{name}/call{}/", self.calls);
        let mut rename: HashMap<String, String> = HashMap::new();
        for (k, formal) in f.input.iter().enumerate() {
            rename.insert(
                formal.clone(),
                call.input.get(k).cloned().unwrap_or_default(),
            );
        }
        for (k, formal) in f.output.iter().enumerate() {
            // An output the call leaves unnamed still needs a distinct value.
            let actual = call
                .output
                .get(k)
                .filter(|o| !o.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("{prefix}{formal}"));
            rename.insert(formal.clone(), actual);
        }
        let map = |n: &str, rename: &HashMap<String, String>| -> String {
            if n.is_empty() {
                return String::new();
            }
            rename
                .get(n)
                .cloned()
                .unwrap_or_else(|| format!("{prefix}{n}"))
        };
        // Attribute values: the call's, else the function's defaults.
        let mut bound: HashMap<&str, &AttributeProto> = HashMap::new();
        for a in &f.attribute_proto {
            bound.insert(a.name.as_deref().unwrap_or(""), a);
        }
        for a in &call.attribute {
            bound.insert(a.name.as_deref().unwrap_or(""), a);
        }
        let mut nodes = Vec::with_capacity(f.node.len());
        for n in &f.node {
            let mut n = n.clone();
            n.input = n.input.iter().map(|i| map(i, &rename)).collect();
            n.output = n.output.iter().map(|o| map(o, &rename)).collect();
            n.name = Some(format!("{prefix}{}", n.name.as_deref().unwrap_or("")));
            let mut attrs = Vec::with_capacity(n.attribute.len());
            for a in n.attribute {
                match a.ref_attr_name.as_deref().filter(|r| !r.is_empty()) {
                    None => attrs.push(rename_in_attr(a, &rename, &prefix)),
                    Some(r) => {
                        if let Some(v) = bound.get(r) {
                            let mut v = (*v).clone();
                            v.name = a.name.clone();
                            attrs.push(v);
                        }
                    }
                }
            }
            n.attribute = attrs;
            nodes.push(n);
        }
        let depth = self.depth;
        self.depth += 1;
        let known = self.names.clone();
        let result = topological(&nodes, &known).and_then(|order| {
            for n in order {
                self.add_node(n)?;
            }
            Ok(())
        });
        self.depth = depth;
        result.map_err(|e| Error::Node {
            node: name.to_string(),
            op: call.op_type.clone().unwrap_or_default(),
            opset: 0,
            cause: Box::new(e),
        })
    }
}

/// Renames the outer values a subgraph attribute of an inlined function node reads.
fn rename_in_attr(
    mut a: AttributeProto,
    rename: &HashMap<String, String>,
    prefix: &str,
) -> AttributeProto {
    fn walk(
        g: &mut GraphProto,
        outer: Option<&HashSet<String>>,
        rename: &HashMap<String, String>,
        prefix: &str,
    ) {
        // Only names free here and in every enclosing subgraph belong to the function.
        let free: HashSet<String> = free_names(g)
            .into_iter()
            .filter(|n| outer.is_none_or(|o| o.contains(n)))
            .collect();
        let map = |n: &mut String| {
            if free.contains(n.as_str()) {
                *n = rename
                    .get(n.as_str())
                    .cloned()
                    .unwrap_or_else(|| format!("{prefix}{n}"));
            }
        };
        for node in &mut g.node {
            node.input.iter_mut().for_each(map);
            for a in &mut node.attribute {
                for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                    walk(sub, Some(&free), rename, prefix);
                }
            }
        }
        for o in &mut g.output {
            if let Some(n) = o.name.as_mut() {
                map(n);
            }
        }
    }
    for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
        walk(g, None, rename, prefix);
    }
    a
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
