//! The contract of an operator that lives in its own module (`metal-mps-ops`).
//!
//! Built-in fast paths (Conv, MatMul, the elementwise chains) are variants of
//! [`crate::Op`]; every other operator implements [`Operator`] and sits in the
//! graph as [`crate::Op::Dyn`]. An operator knows its output types and shapes
//! ([`Operator::infer`]) and computes itself on the CPU ([`Operator::eval`]),
//! which is also how the constant folder and the GPU engine's fallback run it.
//! Operators that take or make sequences and optionals also implement
//! [`Operator::infer_data`] and [`Operator::eval_data`]; the engines call those
//! only for nodes that touch such values, so tensor operators never see them.

use crate::infer::Known;
use crate::{tensors_only, DType, Datum, Graph, Kind, Out, Result, Shape, Tensor};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// What inference learns of one output: its dtype and, when known, its shape.
pub type Fact = (DType, Option<Shape>);

/// One operator with its attributes already parsed for its opset.
pub trait Operator: Any + fmt::Debug + Send + Sync {
    /// The ONNX op type (for messages, `info` and op counts).
    fn name(&self) -> &str;

    /// Output dtypes and shapes from what is known of the inputs (`None`: an
    /// omitted optional input). `n_out` is the node's output count. A dimension
    /// that depends on input data is [`crate::Dim::Unknown`].
    fn infer(&self, inputs: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>>;

    /// Computes the outputs (all `n_out` of them) from concrete inputs, taking
    /// output buffers from `out`.
    fn eval(&self, inputs: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>>;

    /// [`Operator::infer`] for inputs of any [`Kind`] (each [`Known`] says
    /// its kind): the outputs' kinds and facts (for a sequence or optional,
    /// of the tensors inside). The default accepts tensors only.
    fn infer_data(&self, inputs: &[Option<Known>], n_out: usize) -> Result<Vec<(Kind, Fact)>> {
        for (i, k) in inputs.iter().enumerate() {
            if let Some(k) = k.as_ref().filter(|k| !k.kind.is_tensor()) {
                return Err(tensors_only(self.name(), i, k.kind));
            }
        }
        let facts = self.infer(inputs, n_out)?;
        Ok(facts.into_iter().map(|f| (Kind::Tensor, f)).collect())
    }

    /// [`Operator::eval`] on values of any [`Kind`]. The engines call it for
    /// nodes that read or write a sequence or optional; the default accepts
    /// tensors only.
    fn eval_data(
        &self,
        inputs: &[Option<&Datum>],
        n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Datum>> {
        let tensors = inputs
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                None => Ok(None),
                Some(Datum::Tensor(t)) => Ok(Some(t)),
                Some(d) => Err(tensors_only(self.name(), i, &d.kind())),
            })
            .collect::<Result<Vec<_>>>()?;
        let outs = self.eval(&tensors, n_out, out)?;
        Ok(outs.into_iter().map(Datum::Tensor).collect())
    }

    /// Whether this operator may make a sequence or optional out of tensors
    /// (SequenceEmpty, Optional, an If whose branch builds one...). Subgraph
    /// interpreters, which do not infer kinds, run such nodes through
    /// [`Operator::eval_data`].
    fn makes_data(&self) -> bool {
        false
    }

    /// Whether the outputs are a function of the inputs alone. Random operators
    /// say no: the constant folder then leaves them to run, and draw, every time.
    fn deterministic(&self) -> bool {
        true
    }

    /// Whether `eval` reads and writes STRING tensors itself (the text
    /// operators, LabelEncoder, If). Other operators never see STRING values:
    /// see [`crate::strings`].
    fn takes_strings(&self) -> bool {
        false
    }

    /// Subgraphs this operator runs (If branches, Loop and Scan bodies).
    fn subgraphs(&self) -> Vec<&Graph> {
        Vec::new()
    }

    /// When the output only picks elements of input 0 at fixed strides (Slice),
    /// how: `x_shape` is input 0's shape and `constants[i]` input `i`'s value
    /// (`None`: absent). Callers ask only when every input past the first is a
    /// constant or absent, and copy instead of calling `eval`; `None` when it
    /// does not apply.
    fn strided_view(
        &self,
        x_shape: &[usize],
        constants: &[Option<&Tensor>],
    ) -> Option<StridedView> {
        let _ = (x_shape, constants);
        None
    }

    /// When the output is whole rows of input 0 picked by constant indices
    /// (GatherND): `x_shape` and `constants` as for [`Operator::strided_view`];
    /// `None` when it does not apply or an index is out of range (`eval`
    /// reports it).
    fn picked_rows(&self, x_shape: &[usize], constants: &[Option<&Tensor>]) -> Option<PickedRows> {
        let _ = (x_shape, constants);
        None
    }

    /// When output element `c` is input 0's element at `(picks[0][c[0]],
    /// picks[1][c[1]], ...)` (nearest-neighbour Resize): the source index of
    /// every output position along each axis. `x_shape` and `constants` as for
    /// [`Operator::strided_view`]; `None` when it does not apply.
    fn axis_picks(
        &self,
        x_shape: &[usize],
        constants: &[Option<&Tensor>],
    ) -> Option<Vec<Vec<usize>>> {
        let _ = (x_shape, constants);
        None
    }

    /// The normalization this operator is, for engines with their own kernel
    /// for it (the GPU's); `eval` stays the reference. `None` for other operators.
    fn normalization(&self) -> Option<Normalization> {
        None
    }

    /// The attention this operator computes, when an engine's fused kernel
    /// computes it the same (the GPU's); `eval` stays the reference. `None`
    /// for other operators and for options such a kernel does not take.
    fn attention(&self) -> Option<AttentionSpec> {
        None
    }

    fn as_any(&self) -> &dyn Any;
}

/// Input 0 read as rows of `row` elements: output row `j` is input row `rows[j]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PickedRows {
    pub rows: Vec<usize>,
    pub row: usize,
}

/// An output that reads input 0 (contiguous) at fixed strides: the element
/// at coordinate `c` of `shape` is input element `offset + Σ c[d]·strides[d]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StridedView {
    pub shape: Vec<usize>,
    pub offset: usize,
    pub strides: Vec<i64>,
}

/// LayerNormalization or RMSNormalization with f32 statistics, over the axes
/// from `axis` on: `y = (x - mean) / sqrt(var + epsilon) * scale (+ bias)`,
/// with `mean = 0` (and `var` the mean square) when `rms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub axis: i64,
    pub epsilon: f64,
    pub rms: bool,
}

/// Scaled dot-product attention, `softmax(scale · Q·Kᵀ + mask) · V` per head,
/// with a softmax in f32 or wider: Q, K, V (inputs 0-2) 4-D (batch, heads,
/// sequence, size) or 3-D with the heads packed in the last axis; an optional
/// mask (input 3, boolean or added, broadcast to (batch, query heads, query,
/// key), keys past its last axis masked); key/value heads shared by groups
/// of query heads; rows whose keys are all masked give zeros.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Key `j` is masked for query `i` when `j > i`.
    pub causal: bool,
    /// Query and key/value heads, which 3-D inputs need (4-D inputs ignore them).
    pub heads: Option<(usize, usize)>,
    /// The scale (`None`: `1 / sqrt(size per head)`).
    pub scale: Option<f64>,
}

/// An [`Operator`] in the graph: shared, compared by identity.
#[derive(Clone)]
pub struct DynOp(pub Arc<dyn Operator>);

impl DynOp {
    pub fn new(op: impl Operator) -> DynOp {
        DynOp(Arc::new(op))
    }

    /// The operator as its concrete type, if it is one.
    pub fn downcast<T: Operator>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }
}

impl std::ops::Deref for DynOp {
    type Target = dyn Operator;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for DynOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for DynOp {
    fn eq(&self, other: &DynOp) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
