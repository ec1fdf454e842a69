//! Optional (wrap a value, or make an empty optional of a type),
//! OptionalHasElement and OptionalGetElement. From opset 18 the last two also
//! take a plain tensor or sequence (which has an element: itself), and
//! OptionalHasElement an omitted input (which has none).

use super::{data_operator, datum};
use crate::support::known_opt;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    BoolByte, DType, Datum, Dim, DynOp, Error, Fact, Kind, Op, Result, Tensor, ValueType,
};

#[derive(Debug)]
pub struct Optional {
    /// The `type` attribute: what an empty optional would hold.
    ty: Option<ValueType>,
}

#[derive(Debug)]
pub struct OptionalHasElement {
    opset: i64,
}

#[derive(Debug)]
pub struct OptionalGetElement {
    opset: i64,
}

pub fn build_optional(cx: &BuildCx) -> Result<Op> {
    let ty = cx.attrs.value_type("type")?;
    if let Some(t) = ty.as_ref().filter(|t| matches!(t.kind, Kind::Optional(_))) {
        return metal_mps_ir::invalid!("Optional: 'type' must not be an optional ({})", t.kind);
    }
    Ok(Op::Dyn(DynOp::new(Optional { ty })))
}

pub fn build_has_element(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(OptionalHasElement { opset: cx.opset })))
}

pub fn build_get_element(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(OptionalGetElement { opset: cx.opset })))
}

/// Opset 15 takes optionals only.
fn check_optional(op: &str, opset: i64, k: &Known) -> Result<()> {
    if opset < 18 && !matches!(k.kind, Kind::Optional(_)) {
        return metal_mps_ir::invalid!(
            "{op}-{opset} takes an optional, not a {} (opset 18 takes tensors and sequences too)",
            k.kind
        );
    }
    Ok(())
}

impl Optional {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        match (known_opt(ins, 0), &self.ty) {
            (Some(k), _) => {
                if matches!(k.kind, Kind::Optional(_)) {
                    return metal_mps_ir::invalid!("Optional: the input is already an optional");
                }
                Ok(vec![(
                    Kind::optional(k.kind.clone()),
                    (k.dtype, k.shape.map(<[Dim]>::to_vec)),
                )])
            }
            (None, Some(t)) => Ok(vec![(
                Kind::optional(t.kind.clone()),
                (t.dtype, t.shape.clone()),
            )]),
            (None, None) => {
                metal_mps_ir::invalid!("Optional without an input needs a 'type' attribute")
            }
        }
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let inner = inputs.first().copied().flatten().cloned().map(Box::new);
        Ok(vec![Datum::Optional(inner)])
    }
}

impl OptionalHasElement {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        match known_opt(ins, 0) {
            Some(k) => check_optional("OptionalHasElement", self.opset, k)?,
            None if self.opset < 18 => {
                return metal_mps_ir::invalid!("OptionalHasElement-{} needs an input", self.opset)
            }
            None => {}
        }
        Ok(vec![(Kind::Tensor, (DType::Bool, Some(vec![])))])
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let has = !matches!(
            inputs.first().copied().flatten(),
            None | Some(Datum::Optional(None))
        );
        Ok(vec![Datum::Tensor(Tensor::scalar(BoolByte(has as u8)))])
    }
}

impl OptionalGetElement {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        let k = crate::support::known(ins, 0)?;
        check_optional("OptionalGetElement", self.opset, k)?;
        let kind = match k.kind {
            Kind::Optional(inner) => (**inner).clone(),
            other => other.clone(),
        };
        Ok(vec![(kind, (k.dtype, k.shape.map(<[Dim]>::to_vec)))])
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let value = match datum(inputs, 0, "OptionalGetElement")? {
            Datum::Optional(Some(v)) => (**v).clone(),
            Datum::Optional(None) => {
                return Err(Error::Invalid(
                    "OptionalGetElement: the optional is empty".into(),
                ))
            }
            other => other.clone(),
        };
        Ok(vec![value])
    }
}

data_operator!(Optional, "Optional", makes_data: true);
data_operator!(OptionalHasElement, "OptionalHasElement", makes_data: false);
data_operator!(OptionalGetElement, "OptionalGetElement", makes_data: false);
