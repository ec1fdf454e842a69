//! If: runs one of two subgraphs on a scalar condition.

use super::body::{infer_body, merge_shapes, run_body, truth, InFact};
use crate::support::known;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DynOp, Error, Fact, Graph, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::sync::Arc;

#[derive(Debug)]
pub struct If {
    then_branch: Arc<Graph>,
    else_branch: Arc<Graph>,
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
    Ok(Op::Dyn(DynOp::new(If {
        then_branch,
        else_branch,
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
}

impl Operator for If {
    fn name(&self) -> &str {
        "If"
    }

    fn infer(&self, inputs: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let cond = known(inputs, 0)?;
        let outer: Vec<InFact> = inputs[1..]
            .iter()
            .map(|k| match k {
                Some(k) => InFact::of(k),
                None => InFact {
                    dtype: None,
                    shape: None,
                    constant: None,
                },
            })
            .collect();
        let run = |name: &str, g: &Graph| {
            infer_body(g, &outer).map_err(|e| Error::Invalid(format!("If {name}: {e}")))
        };
        let facts = match cond.constant.map(|c| truth(c, "If's condition")) {
            Some(c) => {
                let c = c?;
                run(
                    if c { "then_branch" } else { "else_branch" },
                    self.branch(c),
                )?
            }
            None => {
                let t = run("then_branch", &self.then_branch)?;
                let e = run("else_branch", &self.else_branch)?;
                let mut facts = Vec::with_capacity(t.len());
                for (k, ((dt, st), (de, se))) in t.into_iter().zip(e).enumerate() {
                    if dt != de {
                        return metal_mps_ir::invalid!(
                            "If: output {k} is {dt} in then_branch but {de} in else_branch"
                        );
                    }
                    facts.push((dt, merge_shapes(&st, &se)));
                }
                facts
            }
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
        let cond = truth(crate::support::arg(inputs, 0)?, "If's condition")?;
        let outer = inputs[1..]
            .iter()
            .map(|t| t.ok_or_else(|| Error::Invalid("If: a captured value is missing".into())))
            .collect::<Result<Vec<_>>>()?;
        let outs = run_body(self.branch(cond), &outer)?;
        if outs.len() != n_out {
            return metal_mps_ir::invalid!(
                "If: the branch produced {} outputs but the node has {n_out}",
                outs.len()
            );
        }
        Ok(outs)
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
