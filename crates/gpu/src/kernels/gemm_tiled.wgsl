// Tiled matrix product with workgroup memory and register blocking; the core of
// MatMul, Gemm and convolution (implicit GEMM). Appended after an "io" file
// that defines how A, B and the output are addressed:
//   fn gemm_dims() -> vec3<u32>                     // M, N, K
//   fn gemm_setup(batch: u32)                       // once per workgroup
//   fn a_elem(batch: u32, m: u32, k: u32) -> f32    // 0 outside the matrix
//   struct BCol; fn b_col(batch: u32, n: u32) -> BCol
//   struct BTile; fn b_tile(col: BCol, k0: u32) -> BTile // per column and k-tile
//   fn b_elem(t: BTile, k: u32) -> f32              // k in t's tile; 0 outside the matrix
//   fn out_col(batch: u32, n: u32) -> u32           // the output's element (0, n)
//   fn out_row_stride() -> u32                      // ... and (m, n) is m strides on
//   fn out_len() -> u32                             // the output's elements
//   fn addend(batch: u32, m: u32, n: u32, i: u32) -> f32 // bias, residual of
//                                                   // (m, n), the output's element i
//   fn finish(i: u32, v: f32, a: f32)              // activation, store
//
// 256 invocations (16 x 16) compute a BM x BN tile, each a TM x TN block.
// TM, TN are 4 or 8 (BM = 16 TM, BN = 16 TN); BK = 16.
// A_KFAST: consecutive k of A are contiguous in memory (load pattern).
// B_NFAST: consecutive n of B are contiguous in memory (load pattern).
//
// Split-K (SPLITS > 1, for grids too small to fill the GPU): the dispatch's z
// is batch * SPLITS + split; each workgroup sums one run of k-tiles and stores
// the raw sums in its slice of `part` (f32, laid out like the output); the
// launcher's second call (split_sum.wgsl) adds the slices and applies the
// epilogue there.

override TM: u32 = 8u;
override TN: u32 = 8u;
override A_KFAST: bool = true;
override B_NFAST: bool = true;
override SPLITS: u32 = 1u;

// Binding 6 is free in this kernel (the io files' wide views are the
// cooperative-matrix kernel's); with one split the launcher binds the output.
@group(0) @binding(6) var<storage, read_write> part: array<f32>;

const BK: u32 = 16u;
const MAX_BM: u32 = 128u;

// [k][m] and [k][n], 4 floats per element. Within row k, column c is kept
// at c ^ swizzle(k): stores with k varying fastest (A_KFAST for A, !B_NFAST
// for B) then fall on 8 banks instead of one, while a vec4 of 4 aligned
// columns stays one vec4 (the swizzle moves whole vec4s within the row).
var<workgroup> As: array<vec4<f32>, 512>;
var<workgroup> Bs: array<vec4<f32>, 512>;

fn swizzle(k: u32) -> u32 {
    return (k & 7u) << 2u;
}

fn put_a(k: u32, m: u32, v: f32) {
    let i = k * (16u * TM) + (m ^ swizzle(k));
    As[i / 4u][i % 4u] = v;
}

fn put_b(k: u32, n: u32, v: f32) {
    let i = k * (16u * TN) + (n ^ swizzle(k));
    Bs[i / 4u][i % 4u] = v;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bm = 16u * TM;
    let bn = 16u * TN;
    let dims = gemm_dims();
    let batch = wg.z / SPLITS;
    let split = wg.z % SPLITS;
    gemm_setup(batch);
    let m0 = wg.y * bm;
    let n0 = wg.x * bn;
    let tx = lid % 16u;
    let ty = lid / 16u;

    // Each invocation loads TM elements of A and TN of B per k-tile; with the
    // fast patterns its column of B (or k of A) stays the same across tiles.
    let b_n_fixed = lid % bn;
    let b_k_first = lid / bn;
    let b_k_step = 256u / bn;
    let col = b_col(batch, n0 + b_n_fixed);

    var ra: array<f32, 8>;
    var rb: array<f32, 8>;
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<f32>(0.0);
    }

    let all_tiles = (dims.z + BK - 1u) / BK;
    let per_split = (all_tiles + SPLITS - 1u) / SPLITS;
    let t0 = min(split * per_split, all_tiles);
    let tiles = min(t0 + per_split, all_tiles) - t0;
    // Loads k-tile `t0 + t` into registers.
    for (var t = 0u; t <= tiles; t++) {
        if (t < tiles) {
            let k0 = (t0 + t) * BK;
            for (var j = 0u; j < TM; j++) {
                let e = lid + 256u * j;
                var mm: u32;
                var kk: u32;
                if (A_KFAST) { mm = e / BK; kk = e % BK; } else { mm = e % bm; kk = e / bm; }
                ra[j] = a_elem(batch, m0 + mm, k0 + kk);
            }
            let bt = b_tile(col, k0);
            for (var j = 0u; j < TN; j++) {
                if (B_NFAST) {
                    rb[j] = b_elem(bt, k0 + b_k_first + b_k_step * j);
                } else {
                    let e = lid + 256u * j;
                    rb[j] = b_elem(b_tile(b_col(batch, n0 + e / BK), k0), k0 + e % BK);
                }
            }
        }
        if (t > 0u) {
            // Multiply the tile already in workgroup memory.
            for (var k = 0u; k < BK; k++) {
                var av: array<vec4<f32>, 2>;
                var bv: array<vec4<f32>, 2>;
                for (var i = 0u; i < TM / 4u; i++) {
                    av[i] = As[(k * bm + ((i * 64u + ty * 4u) ^ swizzle(k))) / 4u];
                }
                for (var j = 0u; j < TN / 4u; j++) {
                    bv[j] = Bs[(k * bn + ((j * 64u + tx * 4u) ^ swizzle(k))) / 4u];
                }
                for (var i = 0u; i < TM / 4u; i++) {
                    for (var ii = 0u; ii < 4u; ii++) {
                        let a = av[i][ii];
                        for (var j = 0u; j < TN / 4u; j++) {
                            let r = (i * 4u + ii) * (TN / 4u) + j;
                            acc[r] = fma(vec4<f32>(a), bv[j], acc[r]);
                        }
                    }
                }
            }
        }
        workgroupBarrier();
        if (t < tiles) {
            for (var j = 0u; j < TM; j++) {
                let e = lid + 256u * j;
                if (A_KFAST) { put_a(e % BK, e / BK, ra[j]); } else { put_a(e / bm, e % bm, ra[j]); }
            }
            for (var j = 0u; j < TN; j++) {
                if (B_NFAST) {
                    put_b(b_k_first + b_k_step * j, b_n_fixed, rb[j]);
                } else {
                    let e = lid + 256u * j;
                    put_b(e % BK, e / BK, rb[j]);
                }
            }
        }
        workgroupBarrier();
    }

    // Each of this invocation's columns: its index in the output, computed once.
    var cols: array<u32, 8>;
    for (var j = 0u; j < TN / 4u; j++) {
        for (var c = 0u; c < 4u; c++) {
            cols[j * 4u + c] = out_col(batch, n0 + j * 64u + tx * 4u + c);
        }
    }
    let stride = out_row_stride();
    for (var i = 0u; i < TM / 4u; i++) {
        for (var ii = 0u; ii < 4u; ii++) {
            let m = m0 + i * 64u + ty * 4u + ii;
            if (m < dims.x) {
                // A row's addends are all read before its first store.
                var add: array<f32, 8>;
                if (SPLITS == 1u) {
                    for (var j = 0u; j < TN; j++) {
                        let n = n0 + (j / 4u) * 64u + tx * 4u + j % 4u;
                        if (n < dims.y) {
                            add[j] = addend(batch, m, n, cols[j] + m * stride);
                        }
                    }
                }
                for (var j = 0u; j < TN / 4u; j++) {
                    let v = acc[(i * 4u + ii) * (TN / 4u) + j];
                    let n = n0 + j * 64u + tx * 4u;
                    for (var c = 0u; c < 4u; c++) {
                        if (n + c < dims.y) {
                            let at = cols[j * 4u + c] + m * stride;
                            if (SPLITS > 1u) {
                                part[split * out_len() + at] = v[c];
                            } else {
                                finish(at, v[c], add[j * 4u + c]);
                            }
                        }
                    }
                }
            }
        }
    }
}
