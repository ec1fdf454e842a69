//! Sequence and optional values: building, reading and changing sequences of
//! tensors (SequenceEmpty ... ConcatFromSequence, SequenceMap over a subgraph)
//! and the optional ops. Their values are [`Datum`]s, which live on the CPU;
//! every op here implements [`metal_mps_ir::Operator::eval_data`].

mod at;
mod concat_from;
mod construct;
mod empty;
mod erase;
mod insert;
mod length;
mod map;
mod optional;
mod split_to;
#[cfg(test)]
mod tests;

use crate::{onnx, OpDef};
use metal_mps_ir::infer::Known;
use metal_mps_ir::{Datum, Error, Fact, Kind, Operator, Out, Result, Tensor};

pub(crate) const OPS: &[OpDef] = &[
    onnx("SequenceEmpty", 11, empty::build),
    onnx("SequenceConstruct", 11, construct::build),
    onnx("SequenceInsert", 11, insert::build),
    onnx("SequenceAt", 11, at::build),
    onnx("SequenceErase", 11, erase::build),
    onnx("SequenceLength", 11, length::build),
    onnx("SplitToSequence", 11, split_to::build),
    onnx("ConcatFromSequence", 11, concat_from::build),
    onnx("SequenceMap", 17, map::build),
    onnx("Optional", 15, optional::build_optional),
    onnx("OptionalHasElement", 15, optional::build_has_element),
    onnx("OptionalGetElement", 15, optional::build_get_element),
];

/// Implements [`Operator`] for a type with inherent `infer_kinds(&self, ins,
/// n_out) -> Result<Vec<(Kind, Fact)>>` and `run(&self, ins, n_out) ->
/// Result<Vec<Datum>>`; on tensors alone, it runs through [`tensors_via_data`].
macro_rules! data_operator {
    ($ty:ty, $name:expr, makes_data: $makes:expr) => {
        impl metal_mps_ir::Operator for $ty {
            fn name(&self) -> &str {
                $name
            }

            fn infer(
                &self,
                inputs: &[Option<metal_mps_ir::infer::Known>],
                n_out: usize,
            ) -> metal_mps_ir::Result<Vec<metal_mps_ir::Fact>> {
                Ok(self
                    .infer_kinds(inputs, n_out)?
                    .into_iter()
                    .map(|(_, f)| f)
                    .collect())
            }

            fn infer_data(
                &self,
                inputs: &[Option<metal_mps_ir::infer::Known>],
                n_out: usize,
            ) -> metal_mps_ir::Result<Vec<(metal_mps_ir::Kind, metal_mps_ir::Fact)>> {
                self.infer_kinds(inputs, n_out)
            }

            fn eval(
                &self,
                inputs: &[Option<&metal_mps_ir::Tensor>],
                n_out: usize,
                out: &mut metal_mps_ir::Out,
            ) -> metal_mps_ir::Result<Vec<metal_mps_ir::Tensor>> {
                $crate::sequence::tensors_via_data(self, inputs, n_out, out)
            }

            fn eval_data(
                &self,
                inputs: &[Option<&metal_mps_ir::Datum>],
                n_out: usize,
                _out: &mut metal_mps_ir::Out,
            ) -> metal_mps_ir::Result<Vec<metal_mps_ir::Datum>> {
                self.run(inputs, n_out)
            }

            fn makes_data(&self) -> bool {
                $makes
            }

            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }
    };
}
pub(crate) use data_operator;

/// [`Operator::eval`] of an op of this family called with tensors alone (an
/// `OptionalGetElement` of a tensor, say): the tensors are copied into
/// [`Datum`]s and every output must come back a tensor.
pub(crate) fn tensors_via_data(
    op: &dyn Operator,
    inputs: &[Option<&Tensor>],
    n_out: usize,
    out: &mut Out,
) -> Result<Vec<Tensor>> {
    let data: Vec<Option<Datum>> = inputs
        .iter()
        .map(|t| t.map(|t| Datum::Tensor(t.clone())))
        .collect();
    let refs: Vec<Option<&Datum>> = data.iter().map(Option::as_ref).collect();
    op.eval_data(&refs, n_out, out)?
        .into_iter()
        .map(|d| match d {
            Datum::Tensor(t) => Ok(t),
            d => metal_mps_ir::invalid!(
                "{} made a {} where a tensor was expected",
                op.name(),
                d.kind()
            ),
        })
        .collect()
}

/// Input `i` at run time, which the op requires.
pub(crate) fn datum<'a>(inputs: &[Option<&'a Datum>], i: usize, op: &str) -> Result<&'a Datum> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::Invalid(format!("{op}: required input {i} is missing")))
}

/// Sequence input `i` at run time.
pub(crate) fn sequence<'a>(
    inputs: &[Option<&'a Datum>],
    i: usize,
    op: &str,
) -> Result<&'a [Tensor]> {
    datum(inputs, i, op)?
        .sequence()
        .map_err(|e| Error::Invalid(format!("{op}: input {i}: {e}")))
}

/// Tensor input `i` at run time, if given.
pub(crate) fn tensor_opt<'a>(
    inputs: &[Option<&'a Datum>],
    i: usize,
    op: &str,
) -> Result<Option<&'a Tensor>> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .map(|d| {
            d.tensor()
                .map_err(|e| Error::Invalid(format!("{op}: input {i}: {e}")))
        })
        .transpose()
}

/// Input `i` for inference, which must be of `kind`.
pub(crate) fn known_kind<'a, 'b>(
    ins: &'b [Option<Known<'a>>],
    i: usize,
    kind: &Kind,
    op: &str,
) -> Result<&'b Known<'a>> {
    let k = crate::support::known(ins, i)?;
    if k.kind != kind {
        return metal_mps_ir::invalid!("{op}: input {i} must be a {kind}, not a {}", k.kind);
    }
    Ok(k)
}

/// The fact of a sequence's elements as known of input `k`.
pub(crate) fn elements(k: &Known) -> Fact {
    crate::support::like(k, k.dtype)
}

/// A position in a sequence of `len` (negative: from the end), checked to lie
/// in `-len..len`, or `-len..=len` where `end_ok` (an insertion point).
pub(crate) fn position(pos: &Tensor, len: usize, end_ok: bool, op: &str) -> Result<usize> {
    let v = pos.to_i64_vec()?;
    if v.len() != 1 {
        return metal_mps_ir::invalid!(
            "{op}: the position must be a scalar, not shape {:?}",
            pos.shape()
        );
    }
    let (p, n) = (v[0], len as i64);
    let last = if end_ok { n } else { n - 1 };
    if p < -n || p > last {
        return metal_mps_ir::invalid!(
            "{op}: position {p} is outside [{}, {last}] for a sequence of {len}",
            -n
        );
    }
    Ok(if p < 0 { p + n } else { p } as usize)
}

/// Fails unless every tensor of `seq` has `dtype`.
pub(crate) fn check_elements(op: &str, seq: &[Tensor], t: &Tensor) -> Result<()> {
    if let Some(first) = seq.first() {
        if first.dtype() != t.dtype() {
            return metal_mps_ir::invalid!(
                "{op}: the sequence holds {} tensors, not {}",
                first.dtype(),
                t.dtype()
            );
        }
    }
    Ok(())
}
