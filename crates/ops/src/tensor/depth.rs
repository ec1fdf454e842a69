//! DepthToSpace and SpaceToDepth (DCR and CRD orders) on NCHW tensors.

use super::remap::permute_view;
use crate::support::{arg, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{invalid, unsupported, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct DepthSpace {
    /// DepthToSpace (else SpaceToDepth).
    to_space: bool,
    blocksize: usize,
    /// Column-row-depth order (else depth-column-row).
    crd: bool,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let to_space = cx.op_type == "DepthToSpace";
    let blocksize = cx.attrs.int("blocksize", 0)?;
    if blocksize <= 0 {
        return invalid!(
            "{}: 'blocksize' must be positive, got {blocksize}",
            cx.op_type
        );
    }
    // DepthToSpace has `mode` from opset 11, SpaceToDepth from opset 28.
    let has_mode = if to_space {
        cx.opset >= 11
    } else {
        cx.opset >= 28
    };
    let mode = if has_mode {
        cx.attrs.str_or("mode", "DCR")?
    } else {
        "DCR".to_string()
    };
    let crd = match mode.as_str() {
        "DCR" => false,
        "CRD" => true,
        m => return unsupported!("{} mode '{m}' (DCR or CRD)", cx.op_type),
    };
    Ok(Op::Dyn(DynOp::new(DepthSpace {
        to_space,
        blocksize: blocksize as usize,
        crd,
    })))
}

impl DepthSpace {
    fn op(&self) -> &'static str {
        if self.to_space {
            "DepthToSpace"
        } else {
            "SpaceToDepth"
        }
    }

    /// The output shape of an input `[b, c, h, w]`.
    fn out_shape(&self, s: [usize; 4]) -> Result<[usize; 4]> {
        let [b, c, h, w] = s;
        let bs = self.blocksize;
        let bb = bs.checked_mul(bs).ok_or_else(|| {
            metal_mps_ir::Error::Invalid(format!("{}: blocksize too large", self.op()))
        })?;
        if self.to_space {
            if c % bb != 0 {
                return invalid!(
                    "DepthToSpace: {c} channels are not a multiple of blocksize² {bb}"
                );
            }
            let grow = |d: usize| {
                d.checked_mul(bs).ok_or_else(|| {
                    metal_mps_ir::Error::TooLarge("DepthToSpace output size overflows".into())
                })
            };
            Ok([b, c / bb, grow(h)?, grow(w)?])
        } else {
            if h % bs != 0 || w % bs != 0 {
                return invalid!("SpaceToDepth: {h}x{w} is not a multiple of blocksize {bs}");
            }
            let c = c.checked_mul(bb).ok_or_else(|| {
                metal_mps_ir::Error::TooLarge("SpaceToDepth output size overflows".into())
            })?;
            Ok([b, c, h / bs, w / bs])
        }
    }
}

impl Operator for DepthSpace {
    fn name(&self) -> &str {
        self.op()
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let shape = match x.shape {
            Some(s) if s.len() != 4 => {
                return invalid!("{}: the input must be 4-D, got rank {}", self.op(), s.len())
            }
            Some(s) => match metal_mps_ir::fixed_shape(s) {
                Some(f) => Some(
                    self.out_shape([f[0], f[1], f[2], f[3]])?
                        .iter()
                        .map(|&d| Dim::Fixed(d))
                        .collect(),
                ),
                None => {
                    let bs = self.blocksize;
                    let bb = bs.saturating_mul(bs);
                    let f = |d: &Dim, up: usize, down: usize| match d {
                        Dim::Fixed(n) => Dim::Fixed(n.saturating_mul(up) / down),
                        _ => Dim::Unknown,
                    };
                    Some(if self.to_space {
                        vec![
                            s[0].clone(),
                            f(&s[1], 1, bb),
                            f(&s[2], bs, 1),
                            f(&s[3], bs, 1),
                        ]
                    } else {
                        vec![
                            s[0].clone(),
                            f(&s[1], bb, 1),
                            f(&s[2], 1, bs),
                            f(&s[3], 1, bs),
                        ]
                    })
                }
            },
            None => None,
        };
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let &[b, c, h, w] = x.shape() else {
            return invalid!("{}: the input must be 4-D, got {:?}", self.op(), x.shape());
        };
        let shape = self.out_shape([b, c, h, w])?.to_vec();
        let bs = self.blocksize;
        let (view, perm): (Vec<usize>, [usize; 6]) = match (self.to_space, self.crd) {
            (true, false) => (vec![b, bs, bs, c / (bs * bs), h, w], [0, 3, 4, 1, 5, 2]),
            (true, true) => (vec![b, c / (bs * bs), bs, bs, h, w], [0, 1, 4, 2, 5, 3]),
            (false, false) => (vec![b, c, h / bs, bs, w / bs, bs], [0, 3, 5, 1, 2, 4]),
            (false, true) => (vec![b, c, h / bs, bs, w / bs, bs], [0, 1, 3, 5, 2, 4]),
        };
        Ok(vec![permute_view(self.op(), x, &view, &perm, shape, out)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
