//! BitCast (opset 26): the bits of each element reinterpreted as another type
//! of the same bit width.

use crate::support::{arg, known, like};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{invalid, unsupported, DType, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct BitCast {
    to: DType,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let to = cx
        .attrs
        .opt_int("to")?
        .ok_or_else(|| metal_mps_ir::Error::InvalidModel("BitCast needs 'to'".into()))?;
    Ok(Op::Dyn(DynOp::new(BitCast {
        to: DType::from_onnx_code(to)?,
    })))
}

/// Bit width of an element as ONNX counts it.
fn bits(d: DType) -> usize {
    d.packed_bits().unwrap_or(d.size() * 8)
}

impl BitCast {
    fn check(&self, from: DType) -> Result<()> {
        if bits(from) != bits(self.to) {
            return invalid!(
                "BitCast from {from} ({} bits) to {} ({} bits): the widths differ",
                bits(from),
                self.to,
                bits(self.to)
            );
        }
        if self.to == DType::Bool && from != DType::Bool {
            return unsupported!("BitCast from {from} to BOOL");
        }
        Ok(())
    }
}

impl Operator for BitCast {
    fn name(&self) -> &str {
        "BitCast"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        self.check(x.dtype)?;
        Ok(vec![like(x, self.to)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        self.check(x.dtype())?;
        let mut y = out.tensor(0, self.to, x.shape().to_vec())?;
        match self.to.packed_bits() {
            // Sub-byte values sit one per byte (signed ones sign-extended): keep
            // the low bits and sign-extend them for INT4/INT2.
            Some(b) => {
                let signed = matches!(self.to, DType::I4 | DType::I2);
                for (o, &v) in y.as_bytes_mut().iter_mut().zip(x.as_bytes()) {
                    let low = v & ((1u8 << b) - 1);
                    *o = if signed {
                        (((low << (8 - b)) as i8) >> (8 - b)) as u8
                    } else {
                        low
                    };
                }
            }
            None => y.as_bytes_mut().copy_from_slice(x.as_bytes()),
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
