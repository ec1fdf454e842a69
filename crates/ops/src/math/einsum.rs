//! Einsum: any equation (repeated labels take diagonals, `...` broadcasts,
//! an implicit output lists the labels seen once, alphabetically, after the
//! ellipsis dims), computed by a direct loop over every label combination.

use crate::support::{arg, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, dispatch_dtype, DType, Dim, DynOp, Element, Fact, Op, Operator, Out, Result,
    Tensor,
};
use std::any::Any;

#[derive(Debug)]
struct Einsum {
    inputs: Vec<Term>,
    output: Option<Term>,
}

/// One side of the equation: labels, with the ellipsis's position if any.
#[derive(Clone, Debug)]
struct Term {
    labels: Vec<char>,
    ellipsis: Option<usize>,
}

fn parse_term(s: &str) -> Result<Term> {
    let s = s.trim();
    let mut labels = vec![];
    let mut ellipsis = None;
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("...") {
            if ellipsis.is_some() {
                return metal_mps_ir::invalid!("Einsum: two ellipses in term '{s}'");
            }
            ellipsis = Some(labels.len());
            rest = r;
            continue;
        }
        let mut it = rest.chars();
        let Some(c) = it.next() else { break };
        if !c.is_ascii_alphabetic() {
            if c.is_whitespace() {
                rest = it.as_str();
                continue;
            }
            return metal_mps_ir::invalid!("Einsum: bad character '{c}' in term '{s}'");
        }
        labels.push(c);
        rest = it.as_str();
    }
    Ok(Term { labels, ellipsis })
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let eq = cx
        .attrs
        .string("equation")?
        .ok_or_else(|| metal_mps_ir::Error::InvalidModel("Einsum: no equation".into()))?;
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let inputs = lhs.split(',').map(parse_term).collect::<Result<Vec<_>>>()?;
    let output = rhs.map(parse_term).transpose()?;
    Ok(Op::Dyn(DynOp::new(Einsum { inputs, output })))
}

/// Labels: letters, and ellipsis dims as `'0' + k` counted from the right.
struct Plan {
    /// Per input, the label of each axis.
    in_labels: Vec<Vec<char>>,
    out_labels: Vec<char>,
}

fn ell_label(k: usize) -> char {
    char::from_u32(0x1000 + k as u32).unwrap_or('\u{1000}')
}

impl Einsum {
    fn plan(&self, ranks: &[usize]) -> Result<Plan> {
        if ranks.len() != self.inputs.len() {
            return metal_mps_ir::invalid!(
                "Einsum: equation has {} operands, node has {} inputs",
                self.inputs.len(),
                ranks.len()
            );
        }
        let mut ell_rank = 0usize;
        let mut in_labels = vec![];
        for (t, &r) in self.inputs.iter().zip(ranks) {
            let n = t.labels.len();
            let labels = match t.ellipsis {
                None => {
                    if r != n {
                        return metal_mps_ir::invalid!(
                            "Einsum: term of {n} labels for an input of rank {r}"
                        );
                    }
                    t.labels.clone()
                }
                Some(p) => {
                    if r < n {
                        return metal_mps_ir::invalid!(
                            "Einsum: term of {n} labels for an input of rank {r}"
                        );
                    }
                    let e = r - n;
                    ell_rank = ell_rank.max(e);
                    let mut l = t.labels[..p].to_vec();
                    l.extend((0..e).map(|k| ell_label(e - 1 - k)));
                    l.extend_from_slice(&t.labels[p..]);
                    l
                }
            };
            in_labels.push(labels);
        }
        let ell: Vec<char> = (0..ell_rank).rev().map(ell_label).collect();
        let out_labels = match &self.output {
            Some(t) => {
                let mut l = t.labels.clone();
                if let Some(p) = t.ellipsis {
                    l.splice(p..p, ell.iter().copied());
                }
                for (i, c) in t.labels.iter().enumerate() {
                    if t.labels[..i].contains(c) {
                        return metal_mps_ir::invalid!("Einsum: output label '{c}' repeated");
                    }
                    if !self.inputs.iter().any(|x| x.labels.contains(c)) {
                        return metal_mps_ir::invalid!("Einsum: output label '{c}' not in inputs");
                    }
                }
                l
            }
            None => {
                let mut once: Vec<char> = vec![];
                let all: Vec<char> = self.inputs.iter().flat_map(|t| t.labels.clone()).collect();
                for &c in &all {
                    if all.iter().filter(|&&d| d == c).count() == 1 {
                        once.push(c);
                    }
                }
                once.sort_unstable();
                let mut l = ell.clone();
                l.extend(once);
                l
            }
        };
        Ok(Plan {
            in_labels,
            out_labels,
        })
    }
}

impl Operator for Einsum {
    fn name(&self) -> &str {
        "Einsum"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        check(x.dtype)?;
        let shapes: Option<Vec<&[Dim]>> = (0..ins.len())
            .map(|i| known(ins, i).map(|k| k.shape))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .collect();
        let Some(shapes) = shapes else {
            return Ok(vec![(x.dtype, None)]);
        };
        let ranks: Vec<usize> = shapes.iter().map(|s| s.len()).collect();
        let plan = self.plan(&ranks)?;
        let mut out = vec![];
        for &c in &plan.out_labels {
            let mut d: Option<Dim> = None;
            for (labels, s) in plan.in_labels.iter().zip(&shapes) {
                for (&l, dim) in labels.iter().zip(s.iter()) {
                    if l == c && *dim != Dim::Fixed(1) {
                        d = Some(dim.clone());
                    } else if l == c && d.is_none() {
                        d = Some(Dim::Fixed(1));
                    }
                }
            }
            out.push(d.unwrap_or(Dim::Fixed(1)));
        }
        Ok(vec![(x.dtype, Some(out))])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let xs: Vec<&Tensor> = (0..ins.len()).map(|i| arg(ins, i)).collect::<Result<_>>()?;
        let dtype = xs.first().map(|x| x.dtype()).unwrap_or(DType::F32);
        check(dtype)?;
        for x in &xs {
            if x.dtype() != dtype {
                return metal_mps_ir::invalid!("Einsum: inputs of {} and {}", dtype, x.dtype());
            }
        }
        let ranks: Vec<usize> = xs.iter().map(|x| x.rank()).collect();
        let plan = self.plan(&ranks)?;
        // Every label and its size.
        let mut labels: Vec<char> = plan.out_labels.clone();
        for l in &plan.in_labels {
            for &c in l {
                if !labels.contains(&c) {
                    labels.push(c);
                }
            }
        }
        let mut size = vec![1usize; labels.len()];
        for (l, x) in plan.in_labels.iter().zip(&xs) {
            for (&c, &d) in l.iter().zip(x.shape()) {
                let k = labels.iter().position(|&e| e == c).unwrap_or(0);
                if d != 1 {
                    if size[k] != 1 && size[k] != d {
                        return metal_mps_ir::invalid!(
                            "Einsum: label sizes {} and {d} disagree",
                            size[k]
                        );
                    }
                    size[k] = d;
                }
            }
        }
        // Zero-size letters keep 0 (a dim of 1 with a 0 elsewhere is broadcast).
        for (l, x) in plan.in_labels.iter().zip(&xs) {
            for (&c, &d) in l.iter().zip(x.shape()) {
                let k = labels.iter().position(|&e| e == c).unwrap_or(0);
                if d == 0 {
                    size[k] = 0;
                }
            }
        }
        // Stride of each label in each input (summed over repeats; 0 where broadcast).
        let mut lstrides = vec![vec![0usize; labels.len()]; xs.len()];
        for (i, (l, x)) in plan.in_labels.iter().zip(&xs).enumerate() {
            let st = metal_mps_ir::strides(x.shape());
            for (a, &c) in l.iter().enumerate() {
                let k = labels.iter().position(|&e| e == c).unwrap_or(0);
                if x.shape()[a] != 1 || size[k] == 1 {
                    lstrides[i][k] += st[a];
                }
            }
        }
        let n_out_l = plan.out_labels.len();
        let out_shape: Vec<usize> = size[..n_out_l].to_vec();
        let total = checked_numel(&size)?;
        let y = dispatch_dtype!(dtype, T => contract::<T>(&xs, &size, &lstrides, out_shape, total, out)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn check(d: DType) -> Result<()> {
    if d == DType::Bool {
        return metal_mps_ir::unsupported!("Einsum on BOOL tensors");
    }
    Ok(())
}

fn contract<T: Element>(
    xs: &[&Tensor],
    size: &[usize],
    lstrides: &[Vec<usize>],
    out_shape: Vec<usize>,
    total: usize,
    out: &mut Out,
) -> Result<Tensor> {
    let n_out = checked_numel(&out_shape)?;
    let float = T::DTYPE.is_float();
    let data: Vec<&[T]> = xs
        .iter()
        .map(|x| x.as_slice::<T>())
        .collect::<Result<_>>()?;
    let mut accf = vec![0.0f64; n_out];
    let mut acci = vec![0i64; n_out];
    let n_l = size.len();
    let n_ol = out_shape.len();
    let inner: usize = size[n_ol..].iter().product();
    let mut idx = vec![0usize; n_l];
    let mut offs = vec![0usize; xs.len()];
    if total > 0 {
        for flat in 0..total {
            let o = flat / inner.max(1);
            if float {
                let mut p = 1.0f64;
                for (d, &off) in data.iter().zip(&offs) {
                    p *= d[off].to_f64();
                }
                accf[o] += p;
            } else {
                let mut p = 1i64;
                for (d, &off) in data.iter().zip(&offs) {
                    p = p.wrapping_mul(d[off].to_i64());
                }
                acci[o] = acci[o].wrapping_add(p);
            }
            for l in (0..n_l).rev() {
                idx[l] += 1;
                for (off, st) in offs.iter_mut().zip(lstrides) {
                    *off += st[l];
                }
                if idx[l] < size[l] {
                    break;
                }
                for (off, st) in offs.iter_mut().zip(lstrides) {
                    *off -= st[l] * size[l];
                }
                idx[l] = 0;
            }
        }
    }
    let mut y = out.tensor(0, T::DTYPE, out_shape)?;
    let ys = y.as_slice_mut::<T>()?;
    for (k, o) in ys.iter_mut().enumerate() {
        *o = if float {
            T::from_f64(accf[k])
        } else {
            T::from_i64(acci[k])
        };
    }
    Ok(y)
}
