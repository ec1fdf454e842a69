//! If: runs one of two subgraphs on a scalar condition. Branches may return
//! sequences and optionals as well as tensors.

use super::body::{
    graph_makes_data, infer_body_data, merge_shapes, run_body_data, truth, Arg, InFact,
};
use crate::support::known;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{Datum, DynOp, Error, Fact, Graph, Kind, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::sync::Arc;

#[derive(Debug)]
pub struct If {
    then_branch: Arc<Graph>,
    else_branch: Arc<Graph>,
    /// Whether a branch may build a sequence or optional.
    makes_data: bool,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let get = |name: &str| {
        cx.attrs
            .graph(name)?
            .ok_or_else(|| Error::InvalidModel(format!("If has no '{name}' attribute")))
    };
    let (then_branch, else_branch) = (get("then_branch")?, get("else_branch")?);
    for (name, g) in [("then_branch", &then_branch), ("else_branch", &else_branch)] {
        if g.outputs.len() != cx.num_outputs {
            return metal_mps_ir::invalid!(
                "If: {name} has {} outputs but the node has {}",
                g.outputs.len(),
                cx.num_outputs
            );
        }
    }
    let makes_data = graph_makes_data(&then_branch) || graph_makes_data(&else_branch);
    Ok(Op::Dyn(DynOp::new(If {
        then_branch,
        else_branch,
        makes_data,
    })))
}

impl If {
    fn branch(&self, cond: bool) -> &Graph {
        if cond {
            &self.then_branch
        } else {
            &self.else_branch
        }
    }

    /// Runs the branch `cond` selects on the captured values.
    fn run(&self, cond: &Tensor, outer: &[Arg], n_out: usize) -> Result<Vec<Datum>> {
        let cond = truth(cond, "If's condition")?;
        let outs = run_body_data(self.branch(cond), outer)?;
        if outs.len() != n_out {
            return metal_mps_ir::invalid!(
                "If: the branch produced {} outputs but the node has {n_out}",
                outs.len()
            );
        }
        Ok(outs)
    }
}

fn captured<T>(v: Option<T>) -> Result<T> {
    v.ok_or_else(|| Error::Invalid("If: a captured value is missing".into()))
}

impl Operator for If {
    fn name(&self) -> &str {
        "If"
    }

    fn infer(&self, inputs: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        Ok(self
            .infer_data(inputs, n_out)?
            .into_iter()
            .map(|(_, f)| f)
            .collect())
    }

    fn infer_data(&self, inputs: &[Option<Known>], n_out: usize) -> Result<Vec<(Kind, Fact)>> {
        let cond = known(inputs, 0)?;
        let outer: Vec<InFact> = inputs[1..]
            .iter()
            .map(|k| k.as_ref().map(InFact::of).unwrap_or_else(InFact::unknown))
            .collect();
        let run = |name: &str, g: &Graph| {
            infer_body_data(g, &outer).map_err(|e| Error::Invalid(format!("If {name}: {e}")))
        };
        let facts = match cond.constant.map(|c| truth(c, "If's condition")) {
            Some(c) => {
                let c = c?;
                run(
                    if c { "then_branch" } else { "else_branch" },
                    self.branch(c),
                )?
            }
            // With the condition unknown, a branch that cannot be inferred for these shapes
            // is one that cannot be taken with them (an exporter's rank-dispatching If): the
            // other decides; running the impossible branch still fails, at run time.
            None => match (
                run("then_branch", &self.then_branch),
                run("else_branch", &self.else_branch),
            ) {
                (Err(e), Err(_)) => return Err(e),
                (Ok(facts), Err(_)) | (Err(_), Ok(facts)) => facts,
                (Ok(t), Ok(e)) => {
                    let mut facts = Vec::with_capacity(t.len());
                    for (k, ((kt, (dt, st)), (ke, (de, se)))) in t.into_iter().zip(e).enumerate() {
                        if kt != ke {
                            return metal_mps_ir::invalid!(
                                "If: output {k} is a {kt} in then_branch but a {ke} in else_branch"
                            );
                        }
                        if dt != de {
                            return metal_mps_ir::invalid!(
                                "If: output {k} is {dt} in then_branch but {de} in else_branch"
                            );
                        }
                        facts.push((kt, (dt, merge_shapes(&st, &se))));
                    }
                    facts
                }
            },
        };
        if facts.len() != n_out {
            return metal_mps_ir::invalid!(
                "If: the branch has {} outputs but the node has {n_out}",
                facts.len()
            );
        }
        Ok(facts)
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        n_out: usize,
        _out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let outer = inputs[1..]
            .iter()
            .map(|t| captured(t.map(Arg::Tensor)))
            .collect::<Result<Vec<_>>>()?;
        self.run(crate::support::arg(inputs, 0)?, &outer, n_out)?
            .into_iter()
            .map(Datum::into_tensor)
            .collect()
    }

    fn eval_data(
        &self,
        inputs: &[Option<&Datum>],
        n_out: usize,
        _out: &mut Out,
    ) -> Result<Vec<Datum>> {
        let cond = captured(inputs.first().copied().flatten())?.tensor()?;
        let outer = inputs[1..]
            .iter()
            .map(|d| captured(d.map(Arg::Data)))
            .collect::<Result<Vec<_>>>()?;
        self.run(cond, &outer, n_out)
    }

    fn makes_data(&self) -> bool {
        self.makes_data
    }

    /// The branch's outputs pass through whatever their dtype.
    fn takes_strings(&self) -> bool {
        true
    }

    fn subgraphs(&self) -> Vec<&Graph> {
        vec![&self.then_branch, &self.else_branch]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
