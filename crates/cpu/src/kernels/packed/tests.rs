//! The packed product against a naive triple loop, over shapes that cross
//! every boundary: partial row panels, partial column panels, several blocks
//! of taps, a sub-range of row panels, and each epilogue.

use super::*;
use proptest::prelude::*;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Packs `b` (`k×cols`, row-major) into panels of `NR` columns, `k·NR` floats each.
fn pack_rhs(b: &[f32], k: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; cols.div_ceil(NR) * NR * k];
    for p in 0..k {
        for j in 0..cols.div_ceil(NR) {
            for l in 0..NR.min(cols - j * NR) {
                out[j * k * NR + p * NR + l] = b[p * cols + j * NR + l];
            }
        }
    }
    out
}

/// The column tiles of packed panels.
fn tiles(rhs: &[f32], k: usize, cols: usize) -> Vec<Columns> {
    (0..cols.div_ceil(NR))
        .map(|j| Columns {
            c: j * NR,
            len: NR.min(cols - j * NR),
            b: rhs[j * k * NR..].as_ptr(),
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    k: usize,
    cols: usize,
    /// Extra columns of `C` past `cols` (row stride `cols + pad`): never written.
    pad: usize,
    first_panel: usize,
    bias: bool,
    residual: bool,
    activation: Activation,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let activation = prop_oneof![
        Just(Activation::None),
        Just(Activation::Unary(UnaryOp::Relu)),
        Just(Activation::Unary(UnaryOp::Sigmoid)),
    ];
    (
        1usize..=20,
        1usize..=600,
        1usize..=40,
        0usize..=3,
        0usize..=2,
    )
        .prop_flat_map(move |(m, k, cols, pad, first)| {
            let first_panel = first.min(m.div_ceil(MR) - 1);
            (
                any::<bool>(),
                any::<bool>(),
                activation.clone(),
                any::<u64>(),
            )
                .prop_map(move |(bias, residual, activation, seed)| Case {
                    m,
                    k,
                    cols,
                    pad,
                    first_panel,
                    bias,
                    residual,
                    activation,
                    seed,
                })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn multiply_matches_naive_product(c in case()) {
        let (m, k, cols) = (c.m, c.k, c.cols);
        let ldc = cols + c.pad;
        let a = values(m * k, c.seed);
        let b = values(k * cols, c.seed ^ 0x9e37);
        let bias = values(m, c.seed ^ 0x51);
        let residual = values(m * ldc, c.seed ^ 0x77);
        let sentinel = 12345.0;
        let mut got = vec![sentinel; m * ldc];
        let ep = Epilogue {
            bias: c.bias.then_some(&bias[..]),
            residual: c.residual.then_some(residual.as_ptr()),
            activation: c.activation,
        };
        let packed = PackedLhs::pack(&a, m, k);
        let panels = c.first_panel..m.div_ceil(MR);
        let rhs = pack_rhs(&b, k, cols);
        let tiles = tiles(&rhs, k, cols);
        // The same panels through explicit offsets: the indirect addressing.
        let offsets: Vec<usize> = (0..k).map(|p| p * NR).collect();
        for (tile, offsets) in every_tile_fn()
            .into_iter()
            .flat_map(|t| [(t, None), (t, Some(&offsets[..]))])
        {
            got.fill(sentinel);
            // SAFETY: `got` and `residual` hold m rows of ldc ≥ cols elements.
            unsafe { multiply_with(tile, &packed, panels.clone(), &tiles, offsets, got.as_mut_ptr(), ldc, &ep) };
            check(&c, &got, &a, &b, &bias, &residual, sentinel)?;
        }
    }
}

fn check(
    c: &Case,
    got: &[f32],
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    residual: &[f32],
    sentinel: f32,
) -> Result<(), TestCaseError> {
    let (m, k, cols) = (c.m, c.k, c.cols);
    let ldc = cols + c.pad;
    for r in 0..m {
        for j in 0..ldc {
            let v = got[r * ldc + j];
            if r < c.first_panel * MR || j >= cols {
                prop_assert_eq!(
                    v,
                    sentinel,
                    "({}, {}) outside the product was written",
                    r,
                    j
                );
                continue;
            }
            let mut want: f64 = (0..k)
                .map(|p| a[r * k + p] as f64 * b[p * cols + j] as f64)
                .sum();
            if c.bias {
                want += bias[r] as f64;
            }
            if c.residual {
                want += residual[r * ldc + j] as f64;
            }
            let want = c.activation.apply(want as f32) as f64;
            let tol = 1e-5 * (k as f64).sqrt() + 1e-5 * want.abs();
            prop_assert!(
                (v as f64 - want).abs() <= tol,
                "({}, {}): {} vs {}",
                r,
                j,
                v,
                want
            );
        }
    }
    Ok(())
}
