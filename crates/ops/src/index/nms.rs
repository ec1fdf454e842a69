//! NonMaxSuppression: greedy selection of boxes by score, per batch and class.

use crate::support::{arg, check_float, known, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct Nms {
    center_point_box: bool,
}

pub fn build_nms(cx: &BuildCx) -> Result<Op> {
    let c = cx.attrs.int("center_point_box", 0)?;
    if c != 0 && c != 1 {
        return metal_mps_ir::invalid!("NonMaxSuppression: center_point_box {c} (0 or 1)");
    }
    Ok(Op::Dyn(DynOp::new(Nms {
        center_point_box: c == 1,
    })))
}

/// A box as `(y1, x1, y2, x2)` with `y1 <= y2`, `x1 <= x2`.
fn corners(b: &[f64], center: bool) -> [f64; 4] {
    if center {
        let (xc, yc, w, h) = (b[0], b[1], b[2], b[3]);
        [yc - h / 2.0, xc - w / 2.0, yc + h / 2.0, xc + w / 2.0]
    } else {
        [
            b[0].min(b[2]),
            b[1].min(b[3]),
            b[0].max(b[2]),
            b[1].max(b[3]),
        ]
    }
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let h = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let w = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = h * w;
    let union = area_a + area_b - inter;
    if union <= 0.0 {
        return 0.0;
    }
    inter / union
}

fn scalar(ins: &[Option<&Tensor>], i: usize, what: &str) -> Result<Option<f64>> {
    match opt(ins, i) {
        None => Ok(None),
        Some(t) if t.numel() == 0 => Ok(None),
        Some(t) if t.numel() == 1 => Ok(Some(t.to_f64_vec()[0])),
        Some(t) => metal_mps_ir::invalid!(
            "NonMaxSuppression: {what} must hold one value, not shape {:?}",
            t.shape()
        ),
    }
}

impl Operator for Nms {
    fn name(&self) -> &str {
        "NonMaxSuppression"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (b, s) = (known(ins, 0)?, known(ins, 1)?);
        check_float("NonMaxSuppression", b.dtype)?;
        check_float("NonMaxSuppression", s.dtype)?;
        Ok(vec![(DType::I64, Some(vec![Dim::Unknown, Dim::Fixed(3)]))])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (bt, st) = (arg(ins, 0)?, arg(ins, 1)?);
        check_float("NonMaxSuppression", bt.dtype())?;
        check_float("NonMaxSuppression", st.dtype())?;
        let (bs, ss) = (bt.shape(), st.shape());
        if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
            return metal_mps_ir::invalid!(
                "NonMaxSuppression: boxes {bs:?} must be [batch, boxes, 4] and scores {ss:?} [batch, classes, boxes]"
            );
        }
        if let Some(t) = opt(ins, 2) {
            if t.dtype() != DType::I64 {
                return metal_mps_ir::invalid!(
                    "NonMaxSuppression: max_output_boxes_per_class must be INT64"
                );
            }
        }
        let max_out = scalar(ins, 2, "max_output_boxes_per_class")?.unwrap_or(0.0);
        let max_out = if max_out <= 0.0 { 0 } else { max_out as u64 };
        let iou_th = scalar(ins, 3, "iou_threshold")?.unwrap_or(0.0);
        let score_th = scalar(ins, 4, "score_threshold")?;
        let (nb, nc, n) = (ss[0], ss[1], ss[2]);
        let boxes = bt.to_f64_vec();
        let scores = st.to_f64_vec();
        let mut sel: Vec<i64> = Vec::new();
        let mut cand: Vec<usize> = Vec::with_capacity(n);
        for b in 0..nb {
            let bx: Vec<[f64; 4]> = (0..n)
                .map(|i| corners(&boxes[(b * n + i) * 4..][..4], self.center_point_box))
                .collect();
            for c in 0..nc {
                if max_out == 0 {
                    break;
                }
                let sc = &scores[(b * nc + c) * n..][..n];
                cand.clear();
                cand.extend((0..n).filter(|&i| score_th.is_none_or(|t| sc[i] > t)));
                // Highest score first; ties to the lower index.
                cand.sort_by(|&i, &j| sc[j].total_cmp(&sc[i]).then(i.cmp(&j)));
                let mut kept: Vec<usize> = Vec::new();
                for &i in &cand {
                    if kept.len() as u64 >= max_out {
                        break;
                    }
                    if kept.iter().all(|&k| iou(&bx[k], &bx[i]) <= iou_th) {
                        kept.push(i);
                    }
                }
                for k in kept {
                    sel.extend_from_slice(&[b as i64, c as i64, k as i64]);
                }
            }
        }
        let mut y = out.tensor(0, DType::I64, vec![sel.len() / 3, 3])?;
        y.as_slice_mut::<i64>()?.copy_from_slice(&sel);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
