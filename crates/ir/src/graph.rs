//! The graph: values (typed edges) and nodes (ops), in topological order.

use crate::{display_shape, DType, Kind, Op, Shape, Tensor};
use std::sync::Arc;

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// A typed edge of the graph.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// `None` until inferred.
    pub dtype: Option<DType>,
    /// `None` when the rank is unknown.
    pub shape: Option<Shape>,
    /// Known before running: an initializer, a `Constant`, or a folded result.
    pub constant: Option<Arc<Tensor>>,
    /// A tensor, or a sequence or optional whose tensors `dtype` and `shape` describe.
    pub kind: Kind,
}

impl Value {
    pub fn describe(&self) -> String {
        let dt = self
            .dtype
            .map(|d| d.to_string())
            .unwrap_or_else(|| "?".into());
        let tensor = format!("{} {}", dt, display_shape(self.shape.as_deref()));
        match &self.kind {
            Kind::Tensor => tensor,
            kind => format!("{kind} of {tensor}"),
        }
    }
}

/// One operator application.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// The ONNX op type this node came from, and the opset it was read under.
    pub onnx_op: String,
    pub opset: i64,
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

impl Node {
    /// Wraps an error with this node's identity.
    pub fn error(&self, source: crate::Error) -> crate::Error {
        crate::Error::Node {
            node: self.name.clone(),
            op: self.onnx_op.clone(),
            opset: self.opset,
            cause: Box::new(source),
        }
    }
}

/// A model's computation.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub values: Vec<Value>,
    /// Topologically ordered.
    pub nodes: Vec<Node>,
    /// Values fed by the caller (initializers excluded).
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

impl Graph {
    pub fn add_value(&mut self, name: impl Into<String>) -> ValueId {
        self.values.push(Value {
            name: name.into(),
            dtype: None,
            shape: None,
            constant: None,
            kind: Kind::Tensor,
        });
        self.values.len() - 1
    }

    pub fn add_constant(&mut self, name: impl Into<String>, t: Tensor) -> ValueId {
        let id = self.add_value(name);
        self.set_constant(id, Arc::new(t));
        id
    }

    pub fn set_constant(&mut self, id: ValueId, t: Arc<Tensor>) {
        let v = &mut self.values[id];
        v.dtype = Some(t.dtype());
        v.shape = Some(crate::from_fixed(t.shape()));
        v.constant = Some(t);
    }

    pub fn constant(&self, id: Option<ValueId>) -> Option<&Arc<Tensor>> {
        id.and_then(|i| self.values[i].constant.as_ref())
    }

    /// For each value, the indices of the nodes that read it.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.values.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            for &i in node.inputs.iter().flatten() {
                if !c[i].contains(&n) {
                    c[i].push(n);
                }
            }
        }
        c
    }

    /// For each value, the node that writes it.
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            for &o in &node.outputs {
                p[o] = Some(n);
            }
        }
        p
    }

    /// Drops the nodes whose flag is set, keeping the order of the rest.
    pub fn remove_nodes(&mut self, remove: &[bool]) {
        let mut flags = remove.iter();
        self.nodes
            .retain(|_| !flags.next().copied().unwrap_or(false));
    }

    /// Number of nodes of each op name, sorted by name.
    pub fn op_counts(&self) -> Vec<(String, usize)> {
        let mut m = std::collections::BTreeMap::new();
        for n in &self.nodes {
            *m.entry(n.op.name()).or_insert(0) += 1;
        }
        m.into_iter().collect()
    }
}
