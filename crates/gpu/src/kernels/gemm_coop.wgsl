// Matrix product on cooperative matrices (tensor cores, Apple simdgroup
// matrices): the same contract as gemm_tiled.wgsl (an io file defines
// gemm_dims, a_elem, b_col, b_tile, b_elem, out_col, addend, finish...), f16
// operands, f32 accumulation.
// The io file also defines the wide loads, used where the launcher found the
// operand's layout allows them (A_WIDE, B_WIDE):
//   fn a_wide(batch: u32, m: u32, k: u32) -> vec4<u32>  // A[m, k..k+8], 0 outside
//   fn b_wide(col: BCol, k: u32) -> vec4<u32>           // the 8 f16 at B[k, n] in memory
// each eight f16 in one 16-byte load. A_WIDE needs A_KFAST; with B_NFAST the
// eight elements of b_wide run along n (col is the first's), else along k.
//
// The header defines the fragment size CT (8 on Metal, 16 on NVIDIA), the
// k-tile's depth in fragments CT_K (COOP_K_FRAGMENTS in context.rs) and the
// aliases CM_A, CM_B (f16) and CM_C (f32) of coop_matCTxCT. The workgroup tile
// is CM_ROWS x CM_COLS fragments (8 or 4 each: 8CT x 8CT, or a half or a
// quarter of it for outputs with 64 rows or few columns); 256 invocations form
// 8 subgroups of 32 in a 2 x 4 grid, each owning CM_ROWS / 2 x CM_COLS / 4
// fragments; BK = CT_K * CT (4: 20 % faster at 4096^3 than 2 on an H100). The
// workgroup memory, sized for the largest tile whatever the shape, is
// coop_workgroup_bytes in context.rs.
// Workgroup tiles have padded strides (multiples of 8 elements): A row-major
// (m, k); B row-major (k, n), or with B_COLMAJOR (wide loads along k: B_WIDE
// without B_NFAST) column-major (n, k), so that each load's eight k stay
// together, and the fragments are read column-major.
//
// Split-K (SPLITS > 1) as in gemm_tiled.wgsl: z = batch * SPLITS + split, raw
// sums to the split's slice of `part` (binding 8), split_sum.wgsl finishes.
// OUT_WIDE (no split-K; the launcher checked that every row of the output,
// and the residual, can be read and written eight f16 at a time from any
// multiple of 8 along n): each lane writes eight outputs of a row in one
// 16-byte store to `part`, the output then (the io file's addends8 and
// result), instead of the scalar epilogue's one f16 per store.

override A_KFAST: bool = true;
override B_NFAST: bool = true;
override A_WIDE: bool = false;
override B_WIDE: bool = false;
override B_COLMAJOR: bool = false;
override SPLITS: u32 = 1u;
override OUT_WIDE: bool = false;
override CM_ROWS: u32 = 8u;
override CM_COLS: u32 = 8u;

// With split-K the f32 partial sums (as bits, four per element); with one
// split the output, eight f16 per element (written only with OUT_WIDE).
@group(0) @binding(8) var<storage, read_write> part: array<vec4<u32>>;

override BM: u32 = CM_ROWS * CT;
override BN: u32 = CM_COLS * CT;
// The side of the largest tile, which sizes workgroup memory and registers.
const MAX_SIDE: u32 = 8u * CT;
const BKC: u32 = CT_K * CT;
const LDA: u32 = BKC + 8u;
const LDB: u32 = MAX_SIDE + 8u;
// Row stride of the column-major B tile.
const LDBK: u32 = BKC + 8u;
// Elements of A and of B each invocation moves per k-tile (at most PER).
override PER_A: u32 = BM * BKC / 256u;
override PER_B: u32 = BN * BKC / 256u;
const PER: u32 = MAX_SIDE * BKC / 256u;
// Eight-element vectors of A and of B per k-tile, and per invocation (at
// most PERV).
override VECS_A: u32 = BM * BKC / 8u;
override VECS_B: u32 = BN * BKC / 8u;
override PERV_A: u32 = (VECS_A + 255u) / 256u;
override PERV_B: u32 = (VECS_B + 255u) / 256u;
const PERV: u32 = (MAX_SIDE * BKC / 8u + 255u) / 256u;

var<workgroup> Ash: array<f16, MAX_SIDE * LDA>;
var<workgroup> Bsh: array<f16, max(BKC * LDB, MAX_SIDE * LDBK)>;
var<workgroup> Csh: array<f32, 8u * CT * CT>;
// Elements of one fragment each lane writes.
const ROWS_PER_LANE: u32 = CT * CT / 32u;

// Writes one accumulator fragment through the subgroup's scratch tile.
fn flush(frag: CM_C, sg: u32, lane: u32, batch: u32, split: u32, m: u32, n: u32, dims: vec3<u32>) {
    let off = sg * CT * CT;
    coopStoreT(frag, &Csh[off], CT);
    workgroupBarrier();
    // A lane keeps one column (its part of the output index computed once)
    // and reads all its addends before its first store.
    let nn = n + lane % CT;
    let first = m + lane / CT;
    let end = min(m + CT, dims.x);
    if (nn < dims.y) {
        let col = out_col(batch, nn);
        let stride = out_row_stride();
        var add: array<f32, ROWS_PER_LANE>;
        if (SPLITS == 1u) {
            for (var r = 0u; r < ROWS_PER_LANE; r++) {
                let mm = first + r * (32u / CT);
                if (mm < end) {
                    add[r] = addend(batch, mm, nn, col + mm * stride);
                }
            }
        }
        for (var r = 0u; r < ROWS_PER_LANE; r++) {
            let mm = first + r * (32u / CT);
            if (mm < end) {
                let v = Csh[off + (mm - m) * CT + lane % CT];
                let at = col + mm * stride;
                if (SPLITS > 1u) {
                    let e = split * out_len() + at;
                    part[e / 4u][e % 4u] = bitcast<u32>(v);
                } else {
                    finish(at, v, add[r]);
                }
            }
        }
    }
    workgroupBarrier();
}

// Lanes per row of a fragment with OUT_WIDE, eight outputs each.
const ROW_LANES: u32 = CT / 8u;

// flush with OUT_WIDE: lane pairs (CT = 16) or single lanes (CT = 8) write a
// row of the fragment, eight outputs per 16-byte store.
fn flush_wide(frag: CM_C, sg: u32, lane: u32, batch: u32, m: u32, n: u32, dims: vec3<u32>) {
    let off = sg * CT * CT;
    coopStoreT(frag, &Csh[off], CT);
    workgroupBarrier();
    let r = lane / ROW_LANES;
    let c = (lane % ROW_LANES) * 8u;
    let mm = m + r;
    let nn = n + c;
    if (r < CT && mm < dims.x && nn < dims.y) {
        var v: array<f32, 8>;
        for (var j = 0u; j < 8u; j++) {
            v[j] = Csh[off + r * CT + c + j];
        }
        let at = out_col(batch, nn) + mm * out_row_stride();
        let a = addends8(batch, mm, nn, at);
        var o: vec4<u32>;
        for (var j = 0u; j < 4u; j++) {
            let lo = result(v[2u * j], a[2u * j]);
            let hi = result(v[2u * j + 1u], a[2u * j + 1u]);
            o[j] = pack2x16float(vec2<f32>(lo, hi));
        }
        part[at / 8u] = o;
    }
    workgroupBarrier();
}

// Where an invocation's loads of a k-tile go, fixed across tiles.
struct Lane {
    lid: u32,
    batch: u32,
    m0: u32,
    n0: u32,
    // The column of B this invocation loads, on the paths that fix it
    // (scalar loads along n, wide loads along n).
    col: BCol,
    // The column of each wide load along k, with B_COLMAJOR.
    cols: array<BCol, PERV>,
}

// The registers of one k-tile: f32 scalars, or eight f16 per vec4<u32> on the
// wide paths.
struct Staged {
    a: array<f32, PER>,
    b: array<f32, PER>,
    aw: array<vec4<u32>, PERV>,
    bw: array<vec4<u32>, PERV>,
}

// Row and first column of wide vector v of a tile with `cols` contiguous columns.
fn vec_pos(v: u32, cols: u32) -> vec2<u32> {
    return vec2<u32>(v / (cols / 8u), (v % (cols / 8u)) * 8u);
}

// Reads the k-tile starting at k0 into registers.
fn load_tile(k0: u32, l: Lane, s: ptr<function, Staged>) {
    let bt = b_tile(l.col, k0);
    for (var j = 0u; j < PER_A; j++) {
        let e = l.lid + 256u * j;
        if (!A_WIDE) {
            var mm: u32;
            var kk: u32;
            if (A_KFAST) { mm = e / BKC; kk = e % BKC; } else { mm = e % BM; kk = e / BM; }
            (*s).a[j] = a_elem(l.batch, l.m0 + mm, k0 + kk);
        }
    }
    for (var j = 0u; j < PER_B; j++) {
        let e = l.lid + 256u * j;
        if (!B_WIDE) {
            if (B_NFAST) {
                (*s).b[j] = b_elem(bt, k0 + e / BN);
            } else {
                (*s).b[j] = b_elem(b_tile(b_col(l.batch, l.n0 + e / BKC), k0), k0 + e % BKC);
            }
        }
    }
    for (var j = 0u; j < PERV_A; j++) {
        let v = l.lid + 256u * j;
        if (A_WIDE && v < VECS_A) {
            let p = vec_pos(v, BKC);
            (*s).aw[j] = a_wide(l.batch, l.m0 + p.x, k0 + p.y);
        }
    }
    for (var j = 0u; j < PERV_B; j++) {
        let v = l.lid + 256u * j;
        if (v < VECS_B) {
            if (B_WIDE && B_NFAST) {
                (*s).bw[j] = b_wide(l.col, k0 + vec_pos(v, BN).x);
            }
            if (B_WIDE && !B_NFAST) {
                let p = vec_pos(v, BKC);
                var col: BCol;
                if (B_COLMAJOR) {
                    col = l.cols[j];
                } else {
                    col = b_col(l.batch, l.n0 + p.x);
                }
                (*s).bw[j] = b_wide(col, k0 + p.y);
            }
        }
    }
}

// Writes the registers of load_tile to the workgroup tiles as f16.
fn store_tile(l: Lane, s: ptr<function, Staged>) {
    for (var j = 0u; j < PER_A; j++) {
        let e = l.lid + 256u * j;
        if (!A_WIDE) {
            var mm: u32;
            var kk: u32;
            if (A_KFAST) { mm = e / BKC; kk = e % BKC; } else { mm = e % BM; kk = e / BM; }
            Ash[mm * LDA + kk] = f16((*s).a[j]);
        }
    }
    for (var j = 0u; j < PER_B; j++) {
        let e = l.lid + 256u * j;
        if (!B_WIDE) {
            if (B_NFAST) {
                Bsh[(e / BN) * LDB + e % BN] = f16((*s).b[j]);
            } else {
                Bsh[(e % BKC) * LDB + e / BKC] = f16((*s).b[j]);
            }
        }
    }
    for (var j = 0u; j < PERV_A; j++) {
        let v = l.lid + 256u * j;
        if (A_WIDE && v < VECS_A) {
            for (var i = 0u; i < 4u; i++) {
                let p = vec_pos(v, BKC);
                let h = vec2<f16>(unpack2x16float((*s).aw[j][i]));
                let at = p.x * LDA + p.y + 2u * i;
                Ash[at] = h.x;
                Ash[at + 1u] = h.y;
            }
        }
    }
    for (var j = 0u; j < PERV_B; j++) {
        let v = l.lid + 256u * j;
        if (v < VECS_B) {
            for (var i = 0u; i < 4u; i++) {
                if (B_WIDE) {
                    let h = vec2<f16>(unpack2x16float((*s).bw[j][i]));
                    if (B_NFAST) {
                        let p = vec_pos(v, BN);
                        let at = p.x * LDB + p.y + 2u * i;
                        Bsh[at] = h.x;
                        Bsh[at + 1u] = h.y;
                    } else if (B_COLMAJOR) {
                        let p = vec_pos(v, BKC);
                        let at = p.x * LDBK + p.y + 2u * i;
                        Bsh[at] = h.x;
                        Bsh[at + 1u] = h.y;
                    } else {
                        let p = vec_pos(v, BKC);
                        let at = (p.y + 2u * i) * LDB + p.x;
                        Bsh[at] = h.x;
                        Bsh[at + LDB] = h.y;
                    }
                }
            }
        }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let dims = gemm_dims();
    let batch = wg.z / SPLITS;
    let split = wg.z % SPLITS;
    gemm_setup(batch);
    let m0 = wg.y * BM;
    let n0 = wg.x * BN;
    let sg = lid / 32u;
    let lane = lid % 32u;
    let wm = (sg / 4u) * (CM_ROWS / 2u * CT);
    let wn = (sg % 4u) * (CM_COLS / 4u * CT);

    // Loads along n keep their column from tile to tile: (lid + 256 j) % BN
    // for scalars, the first of eight for the wide loads.
    let b_n_fixed = select(lid % BN, (lid % (BN / 8u)) * 8u, B_WIDE && B_NFAST);
    var cols: array<BCol, PERV>;
    if (B_COLMAJOR) {
        for (var j = 0u; j < PERV_B; j++) {
            cols[j] = b_col(batch, n0 + vec_pos(lid + 256u * j, BKC).x);
        }
    }
    let l = Lane(lid, batch, m0, n0, b_col(batch, n0 + b_n_fixed), cols);

    var c00 = CM_C();
    var c01 = CM_C();
    var c10 = CM_C();
    var c11 = CM_C();
    var c20 = CM_C();
    var c21 = CM_C();
    var c30 = CM_C();
    var c31 = CM_C();
    var staged: Staged;

    // naga treats every condition on a local variable as non-uniform, and
    // cooperative ops must not sit under one: the multiply runs unconditionally
    // in the loop body, loads and stores of the next tile are the conditional part.
    let all_tiles = (dims.z + BKC - 1u) / BKC;
    let per_split = (all_tiles + SPLITS - 1u) / SPLITS;
    let t0 = min(split * per_split, all_tiles);
    let tiles = min(t0 + per_split, all_tiles) - t0;
    load_tile(t0 * BKC, l, &staged);
    store_tile(l, &staged);
    workgroupBarrier();
    for (var t = 0u; t < tiles; t++) {
        let more = t + 1u < tiles;
        if (more) {
            load_tile((t0 + t + 1u) * BKC, l, &staged);
        }
        // A subgroup's fragments: rows 0-1 (and 2-3 when CM_ROWS is 8),
        // column 0 (and 1 when CM_COLS is 8).
        for (var ks = 0u; ks < BKC; ks += CT) {
            let a0 = coopLoadT<CM_A>(&Ash[wm * LDA + ks], LDA);
            let a1 = coopLoadT<CM_A>(&Ash[(wm + CT) * LDA + ks], LDA);
            var b0: CM_B;
            var b1: CM_B;
            if (B_COLMAJOR) {
                b0 = coopLoad<CM_B>(&Bsh[wn * LDBK + ks], LDBK);
            } else {
                b0 = coopLoadT<CM_B>(&Bsh[ks * LDB + wn], LDB);
            }
            c00 = coopMultiplyAdd(a0, b0, c00);
            c10 = coopMultiplyAdd(a1, b0, c10);
            if (CM_COLS == 8u) {
                if (B_COLMAJOR) {
                    b1 = coopLoad<CM_B>(&Bsh[(wn + CT) * LDBK + ks], LDBK);
                } else {
                    b1 = coopLoadT<CM_B>(&Bsh[ks * LDB + wn + CT], LDB);
                }
                c01 = coopMultiplyAdd(a0, b1, c01);
                c11 = coopMultiplyAdd(a1, b1, c11);
            }
            if (CM_ROWS == 8u) {
                let a2 = coopLoadT<CM_A>(&Ash[(wm + 2u * CT) * LDA + ks], LDA);
                let a3 = coopLoadT<CM_A>(&Ash[(wm + 3u * CT) * LDA + ks], LDA);
                c20 = coopMultiplyAdd(a2, b0, c20);
                c30 = coopMultiplyAdd(a3, b0, c30);
                if (CM_COLS == 8u) {
                    c21 = coopMultiplyAdd(a2, b1, c21);
                    c31 = coopMultiplyAdd(a3, b1, c31);
                }
            }
        }
        workgroupBarrier();
        if (more) {
            store_tile(l, &staged);
        }
        workgroupBarrier();
    }

    let m = m0 + wm;
    let n = n0 + wn;
    if (OUT_WIDE) {
        flush_wide(c00, sg, lane, batch, m, n, dims);
        flush_wide(c10, sg, lane, batch, m + CT, n, dims);
        if (CM_COLS == 8u) {
            flush_wide(c01, sg, lane, batch, m, n + CT, dims);
            flush_wide(c11, sg, lane, batch, m + CT, n + CT, dims);
        }
        if (CM_ROWS == 8u) {
            flush_wide(c20, sg, lane, batch, m + 2u * CT, n, dims);
            flush_wide(c30, sg, lane, batch, m + 3u * CT, n, dims);
            if (CM_COLS == 8u) {
                flush_wide(c21, sg, lane, batch, m + 2u * CT, n + CT, dims);
                flush_wide(c31, sg, lane, batch, m + 3u * CT, n + CT, dims);
            }
        }
        return;
    }
    flush(c00, sg, lane, batch, split, m, n, dims);
    flush(c10, sg, lane, batch, split, m + CT, n, dims);
    if (CM_COLS == 8u) {
        flush(c01, sg, lane, batch, split, m, n + CT, dims);
        flush(c11, sg, lane, batch, split, m + CT, n + CT, dims);
    }
    if (CM_ROWS == 8u) {
        flush(c20, sg, lane, batch, split, m + 2u * CT, n, dims);
        flush(c30, sg, lane, batch, split, m + 3u * CT, n, dims);
        if (CM_COLS == 8u) {
            flush(c21, sg, lane, batch, split, m + 2u * CT, n + CT, dims);
            flush(c31, sg, lane, batch, split, m + 3u * CT, n + CT, dims);
        }
    }
}
