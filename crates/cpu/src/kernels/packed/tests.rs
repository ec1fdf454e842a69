//! The packed product against a naive triple loop, over shapes that cross
//! every boundary: partial row panels, partial column panels, several blocks
//! of taps, a sub-range of row panels, and each epilogue; and each
//! micro-kernel on one tile (and the paired kernels on two, the quad ones on
//! four) against the same
//! loop, with clamps of both bounds and NaN and infinities among the values. Every kernel this CPU runs is
//! checked: the portable one and the vector one of the architecture (AVX2/FMA
//! on x86-64 when the CPU has it, NEON on AArch64).

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

/// Every set of micro-kernels this CPU runs.
fn kernels() -> Vec<Kernel> {
    let mut kernels = vec![portable::KERNEL];
    #[cfg(target_arch = "x86_64")]
    kernels.extend(x86::every_kernel());
    #[cfg(target_arch = "aarch64")]
    kernels.extend(aarch64::kernel());
    kernels
}

/// Every AArch64 CPU has NEON: the NEON kernel must be the one chosen there
/// (and so the one the tests below check beside the portable one).
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_kernel_is_detected() {
    assert!(aarch64::kernel().is_some(), "NEON not detected");
    assert_eq!(kernels().len(), 2);
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
        check_multiply(&c)?;
    }
}

/// Wide enough for several blocks of column tiles (`NC_BYTES`) and of taps,
/// with an odd tile count, a partial last tile and a partial last panel.
#[test]
fn wide_products_cross_the_tile_blocks() {
    let c = Case {
        m: 13,
        k: 700,
        cols: 41 * NR + 5,
        pad: 2,
        first_panel: 0,
        bias: true,
        residual: true,
        activation: Activation::Unary(UnaryOp::Relu),
        seed: 7,
    };
    assert!(c.cols.div_ceil(NR) * NR * 4 * c.k.div_ceil(c.k.div_ceil(KC)) > 2 * NC_BYTES);
    check_multiply(&c).unwrap();
}

/// [`multiply_with`] with every kernel, through packed panels and offsets,
/// against the naive product.
fn check_multiply(c: &Case) -> Result<(), TestCaseError> {
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
    for (kernel, offsets) in kernels()
        .into_iter()
        .flat_map(|t| [(t, None), (t, Some(&offsets[..]))])
    {
        got.fill(sentinel);
        // SAFETY: `got` and `residual` hold m rows of ldc ≥ cols elements.
        unsafe {
            multiply_with(
                kernel,
                &packed,
                panels.clone(),
                &tiles,
                offsets,
                got.as_mut_ptr(),
                ldc,
                &ep,
            )
        };
        check(c, &got, &a, &b, &bias, &residual, sentinel).map_err(|e| {
            TestCaseError::fail(format!(
                "{} kernels, offsets {}: {e}",
                kernel.name,
                offsets.is_some()
            ))
        })?;
    }
    Ok(())
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

/// Where a special value goes in a tile case.
#[derive(Debug, Clone, Copy)]
enum Spot {
    A,
    B,
    C,
    Residual,
}

/// One micro-kernel call: a tile of `rows × cols` (at most `MR × NR`) over
/// `kc` taps, with every part of the epilogue chosen separately.
#[derive(Debug, Clone)]
struct TileCase {
    rows: usize,
    cols: usize,
    kc: usize,
    /// Extra columns of `C` past `cols`: never written.
    pad: usize,
    /// `None`: a packed panel; `Some(gap)`: taps `NR + gap` floats apart
    /// through explicit offsets, in reverse order when `reversed`.
    gap: Option<usize>,
    reversed: bool,
    accumulate: bool,
    last: bool,
    bias: bool,
    residual: bool,
    bounds: (f32, f32),
    /// A NaN or an infinity at a position picked by `seed`.
    special: Option<(Spot, f32)>,
    seed: u64,
}

fn tile_case() -> impl Strategy<Value = TileCase> {
    let bounds = prop_oneof![
        Just((f32::NEG_INFINITY, f32::INFINITY)),
        Just((0.0, f32::INFINITY)),
        Just((-0.5, 0.75)),
        Just((f32::NEG_INFINITY, 0.3)),
    ];
    let spot = prop_oneof![
        Just(Spot::A),
        Just(Spot::B),
        Just(Spot::C),
        Just(Spot::Residual)
    ];
    let value = prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)];
    (
        (1..=MR, 1..=NR, 1usize..=40, 0usize..=3),
        (proptest::option::of(0usize..=5), any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        bounds,
        proptest::option::weighted(0.4, (spot, value)),
        any::<u64>(),
    )
        .prop_map(
            |(
                (rows, cols, kc, pad),
                (gap, reversed),
                (accumulate, last, bias, residual),
                bounds,
                special,
                seed,
            )| {
                TileCase {
                    rows,
                    cols,
                    kc,
                    pad,
                    gap,
                    reversed,
                    accumulate,
                    last,
                    bias,
                    residual,
                    bounds,
                    special,
                    seed,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tile_kernels_match_naive_tile(t in tile_case()) {
        let ldc = t.cols + t.pad;
        let stride = NR + t.gap.unwrap_or(0);
        // The packed layout is that of the offsets with no gap, in order.
        let reversed = t.reversed && t.gap.is_some();
        let tap = |p: usize| if reversed { t.kc - 1 - p } else { p } * stride;
        let offsets: Vec<usize> = (0..t.kc).map(tap).collect();
        let mut a = values(t.kc * MR, t.seed);
        let mut b = values((t.kc - 1) * stride + NR, t.seed ^ 0x9e37);
        let mut start = values(MR * ldc, t.seed ^ 0x33);
        let mut residual = values(MR * ldc, t.seed ^ 0x77);
        let bias: [f32; MR] = values(MR, t.seed ^ 0x51).try_into().unwrap();
        if let Some((spot, v)) = t.special {
            let at = (t.seed >> 8) as usize;
            // Inside the tile's rows and columns, so that it reaches the output.
            let (r, j, p) = (at % t.rows, (at >> 8) % t.cols, (at >> 16) % t.kc);
            match spot {
                Spot::A => a[p * MR + r] = v,
                Spot::B => b[offsets[p] + j] = v,
                Spot::C => start[r * ldc + j] = v,
                Spot::Residual => residual[r * ldc + j] = v,
            }
        }
        let (lo, hi) = t.bounds;
        let ops = TileOps {
            accumulate: t.accumulate,
            last: t.last,
            bias: if t.bias { bias } else { [0.0; MR] },
            residual: if t.residual { residual.as_ptr() } else { std::ptr::null() },
            lo,
            hi,
        };
        // The tile as a plain loop in f64: tap p of column j is b[offsets[p] + j].
        let want = |r: usize, j: usize| -> f64 {
            let mut v: f64 = (0..t.kc)
                .map(|p| a[p * MR + r] as f64 * b[offsets[p] + j] as f64)
                .sum();
            if t.accumulate {
                v += start[r * ldc + j] as f64;
            }
            if t.last {
                if t.bias {
                    v += bias[r] as f64;
                }
                if t.residual {
                    v += residual[r * ldc + j] as f64;
                }
                // NaN is neither below nor above a bound.
                if !v.is_nan() {
                    v = v.max(lo as f64).min(hi as f64);
                }
            }
            v
        };
        // Each kernel on the tile alone, the pair kernels with the tile as
        // either of two, and the quad kernels as any of four where its rows
        // allow (the first panel of a quad has MR rows). The other tiles: the
        // same taps into their own copies of C.
        for kernel in kernels() {
            let mut runs = vec![("tile", 0)];
            if kernel.pair.is_some() {
                runs.extend([("pair", 0), ("pair", 1)]);
            }
            if kernel.quad.is_some() {
                let first = if t.rows == MR { 0 } else { 2 };
                runs.extend((first..4).map(|side| ("quad", side)));
            }
            for (shape, side) in runs {
                let mut c = start.clone();
                let mut others = vec![start.clone(); 3];
                let dest = Dest { c: c.as_mut_ptr(), ldc, rows: t.rows, cols: t.cols };
                // Destination `i` of a pair or quad: the tile's at `side`; a
                // quad's first panel has MR rows, its second and a pair the tile's.
                let mut others = others.iter_mut();
                let dests: Vec<Dest> = (0..4)
                    .map(|i| match i == side {
                        true => dest,
                        false => Dest {
                            c: others.next().expect("three others").as_mut_ptr(),
                            rows: if shape == "quad" && i < 2 { MR } else { t.rows },
                            ..dest
                        },
                    })
                    .collect();
                let d: Vec<&Dest> = dests.iter().collect();
                let offsets_ptr = if t.gap.is_some() { offsets.as_ptr() } else { std::ptr::null() };
                // SAFETY: `a` holds kc·MR floats, every tap of `b` NR floats,
                // `c`, `others` and `residual` MR rows of ldc ≥ cols elements.
                unsafe {
                    match (shape, kernel.pair, kernel.quad) {
                        ("pair", Some(pair), _) => pair(t.kc, a.as_ptr(), [b.as_ptr(); 2], offsets_ptr, [d[0], d[1]], [&ops; 2]),
                        ("quad", _, Some(quad)) => quad(t.kc, [a.as_ptr(); 2], [b.as_ptr(); 2], offsets_ptr, [d[0], d[1], d[2], d[3]], [&ops; 4]),
                        _ => (kernel.tile)(t.kc, a.as_ptr(), b.as_ptr(), offsets_ptr, &dest, &ops),
                    }
                }
                let name = format!("{} kernel ({shape}, side {side})", kernel.name);
                for r in 0..MR {
                    for j in 0..ldc {
                        let got = c[r * ldc + j];
                        if r >= t.rows || j >= t.cols {
                            prop_assert_eq!(got.to_bits(), start[r * ldc + j].to_bits(),
                                "{}: ({}, {}) outside the tile was written", name, r, j);
                            continue;
                        }
                        let want = want(r, j);
                        let ok = if want.is_nan() || want.is_infinite() {
                            (got as f64 == want) || (got.is_nan() && want.is_nan())
                        } else {
                            (got as f64 - want).abs() <= 1e-5 * (t.kc as f64).sqrt() + 1e-5 * want.abs()
                        };
                        prop_assert!(ok, "{}: ({}, {}): {} vs {}", name, r, j, got, want);
                    }
                }
            }
        }
    }
}
