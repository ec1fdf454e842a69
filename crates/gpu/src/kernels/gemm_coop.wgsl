// Matrix product on cooperative matrices (tensor cores, Apple simdgroup
// matrices): the same contract as gemm_tiled.wgsl (an io file defines
// gemm_dims, a_elem, b_col, b_elem, epilogue), f16 operands, f32 accumulation.
//
// The header defines the fragment size CT (8 on Metal, 16 on NVIDIA) and the
// aliases CM_A, CM_B (f16) and CM_C (f32) of coop_matCTxCT. 256 invocations
// form 8 subgroups of 32 in a 2 x 4 grid; each subgroup owns a 4CT x 2CT block
// (4 x 2 fragments) of the 8CT x 8CT workgroup tile; BK = 2CT.
// Workgroup tiles are row-major with padded strides (multiples of 8 elements).

override A_KFAST: bool = true;
override B_NFAST: bool = true;

const BM: u32 = 8u * CT;
const BN: u32 = 8u * CT;
const BKC: u32 = 2u * CT;
const LDA: u32 = BKC + 8u;
const LDB: u32 = BN + 8u;
// Elements of A (and of B) each invocation moves per k-tile.
const PER: u32 = CT * CT / 16u;

var<workgroup> Ash: array<f16, BM * LDA>;
var<workgroup> Bsh: array<f16, BKC * LDB>;
var<workgroup> Csh: array<f32, 8u * CT * CT>;

// Writes one accumulator fragment through the subgroup's scratch tile.
fn flush(frag: CM_C, sg: u32, lane: u32, batch: u32, m: u32, n: u32, dims: vec3<u32>) {
    let off = sg * CT * CT;
    coopStoreT(frag, &Csh[off], CT);
    workgroupBarrier();
    for (var e = lane; e < CT * CT; e += 32u) {
        let mm = m + e / CT;
        let nn = n + e % CT;
        if (mm < dims.x && nn < dims.y) {
            epilogue(batch, mm, nn, Csh[off + e]);
        }
    }
    workgroupBarrier();
}

// Reads the k-tile starting at k0 into registers (f32 from the io hooks).
fn load_tile(k0: u32, lid: u32, batch: u32, m0: u32, n0: u32, col: BCol, b_n_fixed: u32, b_k_first: u32,
             b_k_step: u32, ra: ptr<function, array<f32, PER>>, rb: ptr<function, array<f32, PER>>) {
    for (var j = 0u; j < PER; j++) {
        let e = lid + 256u * j;
        var mm: u32;
        var kk: u32;
        if (A_KFAST) { mm = e / BKC; kk = e % BKC; } else { mm = e % BM; kk = e / BM; }
        (*ra)[j] = a_elem(batch, m0 + mm, k0 + kk);
        if (B_NFAST) {
            (*rb)[j] = b_elem(col, k0 + b_k_first + b_k_step * j);
        } else {
            (*rb)[j] = b_elem(b_col(batch, n0 + e / BKC), k0 + e % BKC);
        }
    }
}

// Writes the registers of load_tile to the workgroup tiles as f16.
fn store_tile(lid: u32, b_n_fixed: u32, b_k_first: u32, b_k_step: u32,
              ra: ptr<function, array<f32, PER>>, rb: ptr<function, array<f32, PER>>) {
    for (var j = 0u; j < PER; j++) {
        let e = lid + 256u * j;
        var mm: u32;
        var kk: u32;
        if (A_KFAST) { mm = e / BKC; kk = e % BKC; } else { mm = e % BM; kk = e / BM; }
        Ash[mm * LDA + kk] = f16((*ra)[j]);
        if (B_NFAST) {
            Bsh[(b_k_first + b_k_step * j) * LDB + b_n_fixed] = f16((*rb)[j]);
        } else {
            Bsh[(e % BKC) * LDB + e / BKC] = f16((*rb)[j]);
        }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let dims = gemm_dims();
    let batch = wg.z;
    gemm_setup(batch);
    let m0 = wg.y * BM;
    let n0 = wg.x * BN;
    let sg = lid / 32u;
    let lane = lid % 32u;
    let wm = (sg / 4u) * (4u * CT);
    let wn = (sg % 4u) * (2u * CT);

    let b_n_fixed = lid % BN;
    let b_k_first = lid / BN;
    let b_k_step = 256u / BN;
    let col = b_col(batch, n0 + b_n_fixed);

    var c00 = CM_C();
    var c01 = CM_C();
    var c10 = CM_C();
    var c11 = CM_C();
    var c20 = CM_C();
    var c21 = CM_C();
    var c30 = CM_C();
    var c31 = CM_C();
    var ra: array<f32, PER>;
    var rb: array<f32, PER>;

    // naga treats every condition on a local variable as non-uniform, and
    // cooperative ops must not sit under one: the multiply runs unconditionally
    // in the loop body, loads and stores of the next tile are the conditional part.
    let tiles = (dims.z + BKC - 1u) / BKC;
    load_tile(0u, lid, batch, m0, n0, col, b_n_fixed, b_k_first, b_k_step, &ra, &rb);
    store_tile(lid, b_n_fixed, b_k_first, b_k_step, &ra, &rb);
    workgroupBarrier();
    for (var t = 0u; t < tiles; t++) {
        let more = t + 1u < tiles;
        if (more) {
            load_tile((t + 1u) * BKC, lid, batch, m0, n0, col, b_n_fixed, b_k_first, b_k_step, &ra, &rb);
        }
        for (var ks = 0u; ks < BKC; ks += CT) {
            let ia0 = (wm + 0u * CT) * LDA + ks;
            let ia1 = (wm + 1u * CT) * LDA + ks;
            let ia2 = (wm + 2u * CT) * LDA + ks;
            let ia3 = (wm + 3u * CT) * LDA + ks;
            let ib0 = ks * LDB + wn;
            let ib1 = ks * LDB + wn + CT;
            let a0 = coopLoadT<CM_A>(&Ash[ia0], LDA);
            let a1 = coopLoadT<CM_A>(&Ash[ia1], LDA);
            let a2 = coopLoadT<CM_A>(&Ash[ia2], LDA);
            let a3 = coopLoadT<CM_A>(&Ash[ia3], LDA);
            let b0 = coopLoadT<CM_B>(&Bsh[ib0], LDB);
            let b1 = coopLoadT<CM_B>(&Bsh[ib1], LDB);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        workgroupBarrier();
        if (more) {
            store_tile(lid, b_n_fixed, b_k_first, b_k_step, &ra, &rb);
        }
        workgroupBarrier();
    }

    let m = m0 + wm;
    let n = n0 + wn;
    flush(c00, sg, lane, batch, m, n, dims);
    flush(c01, sg, lane, batch, m, n + CT, dims);
    flush(c10, sg, lane, batch, m + CT, n, dims);
    flush(c11, sg, lane, batch, m + CT, n + CT, dims);
    flush(c20, sg, lane, batch, m + 2u * CT, n, dims);
    flush(c21, sg, lane, batch, m + 2u * CT, n + CT, dims);
    flush(c30, sg, lane, batch, m + 3u * CT, n, dims);
    flush(c31, sg, lane, batch, m + 3u * CT, n + CT, dims);
}
