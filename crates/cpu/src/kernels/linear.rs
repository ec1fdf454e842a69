//! MatMul and Gemm with a constant right-hand side, packed once at load into
//! the column panels of the packed product ([`PackedRhs`]): the left-hand
//! side's rows are packed per call into row panels (a copy, small next to the
//! product), then tasks multiply runs of column tiles and add the bias and
//! activation while the tiles are still in the cache.

use super::packed::{self, Epilogue, Finish, PackedLhs, PackedRhs, MR, NR};
use super::{with_local, SharedOut};
use crate::kernels::spread::Spread;
use crate::Out;
use metal_mps_ir::{broadcast_shapes, invalid, Activation, DType, GemmAttrs, Result, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;

/// The constant `K×N` right-hand side of a MatMul, or `alpha·B'` of a Gemm,
/// in column panels.
#[derive(Debug)]
pub struct PackedLinear {
    rhs: PackedRhs,
    k: usize,
    n: usize,
}

impl PackedLinear {
    /// The weights of `MatMul(x, w)` for a 2-D FLOAT `w` (`[K, N]`).
    pub fn matmul(w: &Tensor) -> Result<PackedLinear> {
        let [k, n] = two_dims(w)?;
        Ok(PackedLinear {
            rhs: PackedRhs::pack(w.as_slice::<f32>()?, k, n),
            k,
            n,
        })
    }

    /// `alpha·B'` of a Gemm whose `B` is a 2-D FLOAT constant.
    pub fn gemm(attrs: &GemmAttrs, b: &Tensor) -> Result<PackedLinear> {
        let [rows, cols] = two_dims(b)?;
        let scaled: Vec<f32> = b
            .as_slice::<f32>()?
            .iter()
            .map(|v| attrs.alpha * v)
            .collect();
        let (k, n) = if attrs.trans_b {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let rhs = if attrs.trans_b {
            PackedRhs::pack_transposed(&scaled, n, k)
        } else {
            PackedRhs::pack(&scaled, k, n)
        };
        Ok(PackedLinear { rhs, k, n })
    }

    pub fn bytes(&self) -> usize {
        self.rhs.bytes()
    }
}

fn two_dims(w: &Tensor) -> Result<[usize; 2]> {
    match (w.dtype(), w.shape()) {
        (DType::F32, &[k, n]) => Ok([k, n]),
        (dtype, shape) => {
            invalid!("packed weights must be a 2-D FLOAT matrix, got {dtype} {shape:?}")
        }
    }
}

/// `MatMul(x, w) (+ bias)`, then the activation: `x` is `[..., M, K]` (or
/// `[K]`), the output `[..., M, N]` (or `[N]`); every leading dim of `x` is
/// a block of rows of one tall product.
pub fn matmul_packed(
    x: &Tensor,
    w: &PackedLinear,
    bias: Option<&Tensor>,
    activation: Activation,
    out: &mut Out,
) -> Result<Tensor> {
    let shape = x.shape();
    if x.dtype() != DType::F32 || shape.last() != Some(&w.k) {
        return invalid!(
            "MatMul: input is {} {shape:?}, the weights are FLOAT [{}, {}]",
            x.dtype(),
            w.k,
            w.n
        );
    }
    let mut y_shape = shape.to_vec();
    *y_shape.last_mut().expect("rank checked above") = w.n;
    let m = shape[..shape.len() - 1].iter().product();
    let bias = bias.map(|b| b.as_slice::<f32>()).transpose()?;
    if bias.is_some_and(|b| b.len() != w.n) {
        return invalid!("MatMul bias must hold {} values", w.n);
    }
    let xv = x.as_slice::<f32>()?;
    let finish = Finish::new(activation);
    let mut y = out.tensor(0, DType::F32, y_shape)?;
    product(
        Rows::Plain(xv),
        m,
        w,
        y.as_slice_mut::<f32>()?,
        &|(_, cols), values| {
            if let Some(b) = bias {
                values.iter_mut().zip(&b[cols]).for_each(|(v, b)| *v += b);
            }
            finish.apply(values);
        },
    );
    Ok(y)
}

/// `Gemm(a, B, c)` with `B` packed (times alpha): `Y = A'·(alpha·B') + beta·C`.
pub fn gemm_packed(
    attrs: &GemmAttrs,
    a: &Tensor,
    w: &PackedLinear,
    c: Option<&Tensor>,
    out: &mut Out,
) -> Result<Tensor> {
    let (m, k) = match (a.dtype(), a.shape()) {
        (DType::F32, &[r, c]) if attrs.trans_a => (c, r),
        (DType::F32, &[r, c]) => (r, c),
        (dtype, shape) => {
            return invalid!("Gemm: A must be a 2-D FLOAT matrix, got {dtype} {shape:?}")
        }
    };
    if k != w.k {
        return invalid!(
            "Gemm inner dimensions differ: A' is {m}×{k}, B' is {}×{}",
            w.k,
            w.n
        );
    }
    let n = w.n;
    let c = c.filter(|_| attrs.beta != 0.0);
    let c = match c {
        None => None,
        Some(c) => {
            if broadcast_shapes(c.shape(), &[m, n]).is_none_or(|s| s[..] != [m, n]) {
                return invalid!(
                    "Gemm C of shape {:?} does not broadcast to [{m}, {n}]",
                    c.shape()
                );
            }
            let st = super::binary::broadcast_strides(c.shape(), &[m, n]);
            Some((super::matmul::as_f32(c)?, st))
        }
    };
    let av = a.as_slice::<f32>()?;
    let rows = if attrs.trans_a {
        Rows::Transposed(av)
    } else {
        Rows::Plain(av)
    };
    let finish = Finish::new(attrs.activation);
    let mut y = out.tensor(0, DType::F32, vec![m, n])?;
    product(
        rows,
        m,
        w,
        y.as_slice_mut::<f32>()?,
        &|(i, cols), values| {
            if let Some((cv, st)) = &c {
                for (j, v) in cols.zip(values.iter_mut()) {
                    *v += attrs.beta * cv[i * st[0] + j * st[1]];
                }
            }
            finish.apply(values);
        },
    );
    Ok(y)
}

/// The left-hand side: `M×K` row-major, or stored transposed (`K×M`).
#[derive(Clone, Copy)]
enum Rows<'a> {
    Plain(&'a [f32]),
    Transposed(&'a [f32]),
}

/// What a task does to `values`, the columns `.1` of output row `.0`, once
/// they hold the product.
type RowFinish<'a> = dyn Fn((usize, std::ops::Range<usize>), &mut [f32]) + Sync + 'a;

thread_local! {
    static LHS: RefCell<PackedLhs> = RefCell::default();
}

/// `y[m×n] = rows · w`, then `finish((row, columns), values)` on each row's
/// part of each task's block of columns, while it is in the cache.
fn product(rows: Rows, m: usize, w: &PackedLinear, y: &mut [f32], finish: &RowFinish) {
    let (k, n) = (w.k, w.n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: every output is just the finish of zero.
        y.fill(0.0);
        for (row, values) in y.chunks_mut(n).enumerate() {
            finish((row, 0..n), values);
        }
        return;
    }
    let dst = SharedOut(y.as_mut_ptr());
    let fresh = |lhs: &mut PackedLhs| {
        lhs.fill_with(m, k, |i, panel| {
            for r in 0..MR.min(m - i * MR) {
                let row = i * MR + r;
                for p in 0..k {
                    panel[p * MR + r] = match rows {
                        Rows::Plain(a) => a[row * k + p],
                        Rows::Transposed(a) => a[p * m + row],
                    };
                }
            }
            for r in m.saturating_sub(i * MR).min(MR)..MR {
                (0..k).for_each(|p| panel[p * MR + r] = 0.0);
            }
        });
    };
    let run = |lhs: &PackedLhs| {
        let (panels, tiles) = (m.div_ceil(MR), n.div_ceil(NR));
        // Runs of column tiles first (each weight panel is read once), then
        // blocks of rows when there are too few tiles to go round.
        let want = 4 * rayon::current_num_threads();
        let col_tasks = tiles.min(want).max(1);
        let row_tasks = panels.min(want.div_ceil(col_tasks)).max(1);
        (0..col_tasks * row_tasks)
            .into_par_iter()
            .spread()
            .for_each(|task| {
                let (ct, rt) = (task % col_tasks, task / col_tasks);
                let tiles = ct * tiles / col_tasks..(ct + 1) * tiles / col_tasks;
                let panels = rt * panels / row_tasks..(rt + 1) * panels / row_tasks;
                let columns = tiles.start * NR..(tiles.end * NR).min(n);
                // SAFETY: the panels hold `m` rows of `k` taps and the packed
                // tiles `k` taps each; this task alone writes (then reads) rows
                // `panels` × columns `columns` of `y` (`m×n`, rows `n` apart).
                unsafe {
                    packed::multiply(
                        lhs,
                        panels.clone(),
                        &w.rhs.tiles(tiles),
                        None,
                        dst.at(0),
                        n,
                        &Epilogue::NONE,
                    );
                    for row in panels.start * MR..(panels.end * MR).min(m) {
                        let values = std::slice::from_raw_parts_mut(
                            dst.at(row * n + columns.start),
                            columns.len(),
                        );
                        finish((row, columns.clone()), values);
                    }
                }
            });
    };
    with_local(&LHS, |lhs| {
        fresh(lhs);
        run(lhs);
    });
}

#[cfg(test)]
mod tests {
    //! The packed MatMul and Gemm against an f64 triple loop, over shapes that
    //! cross the panel and tile boundaries, with every Gemm option.

    use super::*;
    use metal_mps_ir::UnaryOp;
    use proptest::prelude::*;

    fn tensor(shape: &[usize], seed: u64) -> Tensor {
        let mut s = seed | 1;
        let n = shape.iter().product();
        let v = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    fn close(got: &[f32], want: &[f64], k: usize) {
        assert_eq!(got.len(), want.len());
        let tol = 1e-5 * (k as f64 + 1.0);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= tol, "element {i}: {g} vs {w}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matmul_matches_reference(
            batch in 1usize..4, m in 1usize..20, k in 0usize..300, n in 1usize..40,
            with_bias: bool, relu: bool, seed in 0u64..1000,
        ) {
            let (x, w, b) = (tensor(&[batch, m, k], seed), tensor(&[k, n], seed + 1), tensor(&[n], seed + 2));
            let act = if relu { Activation::Unary(UnaryOp::Relu) } else { Activation::None };
            let packed = PackedLinear::matmul(&w).unwrap();
            let y = matmul_packed(&x, &packed, with_bias.then_some(&b), act, &mut Out::fresh()).unwrap();
            prop_assert_eq!(y.shape(), &[batch, m, n]);
            let (xv, wv, bv) = (x.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
            let mut want = vec![0f64; batch * m * n];
            for r in 0..batch * m {
                for j in 0..n {
                    let mut acc: f64 = (0..k).map(|p| xv[r * k + p] as f64 * wv[p * n + j] as f64).sum();
                    if with_bias {
                        acc += bv[j] as f64;
                    }
                    want[r * n + j] = if relu { acc.max(0.0) } else { acc };
                }
            }
            close(y.as_slice::<f32>().unwrap(), &want, k);
        }

        #[test]
        fn gemm_matches_reference(
            m in 1usize..20, k in 0usize..300, n in 1usize..40,
            trans_a: bool, trans_b: bool, alpha in -2f32..2.0, beta in -2f32..2.0,
            c_kind in 0usize..5, seed in 0u64..1000,
        ) {
            let a = tensor(&if trans_a { [k, m] } else { [m, k] }, seed);
            let b = tensor(&if trans_b { [n, k] } else { [k, n] }, seed + 1);
            let c_shape: Option<Vec<usize>> = match c_kind {
                0 => None,
                1 => Some(vec![n]),
                2 => Some(vec![m, 1]),
                3 => Some(vec![m, n]),
                _ => Some(vec![]),
            };
            let c = c_shape.as_ref().map(|s| tensor(s, seed + 2));
            let attrs = GemmAttrs { alpha, beta, trans_a, trans_b, activation: Activation::None };
            let packed = PackedLinear::gemm(&attrs, &b).unwrap();
            let y = gemm_packed(&attrs, &a, &packed, c.as_ref(), &mut Out::fresh()).unwrap();
            prop_assert_eq!(y.shape(), &[m, n]);
            let (av, bv) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
            let mut want = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    let acc: f64 = (0..k)
                        .map(|p| {
                            let x = if trans_a { av[p * m + i] } else { av[i * k + p] };
                            let w = if trans_b { bv[j * k + p] } else { bv[p * n + j] };
                            x as f64 * w as f64
                        })
                        .sum();
                    let cv = match (&c, c_kind) {
                        (Some(c), 1) => c.as_slice::<f32>().unwrap()[j],
                        (Some(c), 2) => c.as_slice::<f32>().unwrap()[i],
                        (Some(c), 3) => c.as_slice::<f32>().unwrap()[i * n + j],
                        (Some(c), _) => c.as_slice::<f32>().unwrap()[0],
                        (None, _) => 0.0,
                    };
                    want[i * n + j] = alpha as f64 * acc + beta as f64 * cv as f64;
                }
            }
            close(y.as_slice::<f32>().unwrap(), &want, k);
        }
    }

    /// An empty inner dimension is a sum of nothing: the output is the bias
    /// (ONNX Runtime and numpy agree), on every row of every batch.
    #[test]
    fn empty_inner_dimension_gives_the_bias() {
        let packed = PackedLinear::matmul(&tensor(&[0, 3], 1)).unwrap();
        let bias = Tensor::from_vec(vec![3], vec![-1f32, 0.5, 2.0]).unwrap();
        let y = matmul_packed(
            &tensor(&[2, 2, 0], 2),
            &packed,
            Some(&bias),
            Activation::None,
            &mut Out::fresh(),
        )
        .unwrap();
        assert_eq!(y.shape(), &[2, 2, 3]);
        assert_eq!(y.as_slice::<f32>().unwrap(), [-1f32, 0.5, 2.0].repeat(4));
    }

    #[test]
    fn wrong_inputs_are_errors() {
        let packed = PackedLinear::matmul(&tensor(&[8, 4], 1)).unwrap();
        let err = matmul_packed(
            &tensor(&[2, 7], 2),
            &packed,
            None,
            Activation::None,
            &mut Out::fresh(),
        );
        assert!(err.unwrap_err().to_string().contains("[2, 7]"));
        let bias = tensor(&[5], 3);
        let err = matmul_packed(
            &tensor(&[2, 8], 2),
            &packed,
            Some(&bias),
            Activation::None,
            &mut Out::fresh(),
        );
        assert!(err.unwrap_err().to_string().contains("bias"));
        assert!(PackedLinear::matmul(&tensor(&[2, 3, 4], 1)).is_err());
    }
}
