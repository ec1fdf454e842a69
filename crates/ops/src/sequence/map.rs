//! SequenceMap: runs a subgraph once per position of the input sequence; the
//! body takes that position's tensor of every sequence input (tensor inputs
//! are passed whole each time) and each body output makes one output sequence.

use super::data_operator;
use crate::control::{infer_body_data, run_body_data, Arg, InFact};
use crate::support::known;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{Datum, Dim, DynOp, Error, Fact, Graph, Kind, Op, Result};
use std::sync::Arc;

#[derive(Debug)]
pub struct SequenceMap {
    body: Arc<Graph>,
    /// The node's own inputs; the outer-scope values the body reads follow them.
    formal: usize,
}

const NAME: &str = "SequenceMap";

pub fn build(cx: &BuildCx) -> Result<Op> {
    let body = cx
        .attrs
        .graph("body")?
        .ok_or_else(|| Error::InvalidModel("SequenceMap has no 'body' attribute".into()))?;
    if cx.num_inputs == 0 || body.inputs.len() < cx.num_inputs {
        return metal_mps_ir::invalid!(
            "{NAME}: the body takes {} inputs for the node's {}",
            body.inputs.len(),
            cx.num_inputs
        );
    }
    if body.outputs.len() != cx.num_outputs {
        return metal_mps_ir::invalid!(
            "{NAME}: the body has {} outputs but the node has {}",
            body.outputs.len(),
            cx.num_outputs
        );
    }
    Ok(Op::Dyn(DynOp::new(SequenceMap {
        body,
        formal: cx.num_inputs,
    })))
}

impl SequenceMap {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        let first = known(ins, 0)?;
        if *first.kind != Kind::Sequence {
            return metal_mps_ir::invalid!(
                "{NAME}: input 0 must be a sequence, not a {}",
                first.kind
            );
        }
        let mut facts = Vec::with_capacity(ins.len());
        for i in 0..ins.len() {
            let k = known(ins, i)?;
            facts.push(if i < self.formal && *k.kind == Kind::Sequence {
                InFact::typed(k.dtype, k.shape.map(<[Dim]>::to_vec))
            } else {
                InFact::of(k)
            });
        }
        let outs = infer_body_data(&self.body, &facts)
            .map_err(|e| Error::Invalid(format!("{NAME} body: {e}")))?;
        outs.into_iter()
            .map(|(kind, fact)| {
                if !kind.is_tensor() {
                    return metal_mps_ir::invalid!(
                        "{NAME}: a body output must be a tensor, not a {kind}"
                    );
                }
                Ok((Kind::Sequence, fact))
            })
            .collect()
    }

    fn run(&self, inputs: &[Option<&Datum>], n_out: usize) -> Result<Vec<Datum>> {
        let args = inputs
            .iter()
            .enumerate()
            .map(|(i, d)| d.ok_or_else(|| Error::Invalid(format!("{NAME}: input {i} is missing"))))
            .collect::<Result<Vec<&Datum>>>()?;
        let len = args[0].sequence()?.len();
        for (i, a) in args.iter().enumerate().take(self.formal) {
            if let Datum::Sequence(s) = a {
                if s.len() != len {
                    return metal_mps_ir::invalid!(
                        "{NAME}: input {i} holds {} tensors, input 0 holds {len}",
                        s.len()
                    );
                }
            }
        }
        let mut outs: Vec<Vec<metal_mps_ir::Tensor>> = vec![Vec::with_capacity(len); n_out];
        for pos in 0..len {
            let iteration: Vec<Arg> = args
                .iter()
                .enumerate()
                .map(|(i, a)| match a {
                    Datum::Sequence(s) if i < self.formal => Arg::Tensor(&s[pos]),
                    a => Arg::Data(a),
                })
                .collect();
            let results = run_body_data(&self.body, &iteration)?;
            for (acc, r) in outs.iter_mut().zip(results) {
                acc.push(r.into_tensor().map_err(|e| {
                    Error::Invalid(format!("{NAME}: a body output must be a tensor: {e}"))
                })?);
            }
        }
        Ok(outs.into_iter().map(Datum::Sequence).collect())
    }
}

data_operator!(SequenceMap, "SequenceMap", makes_data: true);
