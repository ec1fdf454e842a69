// Addressing of MatMul and Gemm for the GEMM cores (gemm_tiled, gemm_coop):
// y[b, m, n] = act(alpha * sum_k A[b, m, k] B[b, k, n] + beta * C[m, n] (+ R[b, m, n])).
// A and B are read through element strides, so transposed operands and
// broadcast batch dimensions need no copy. T is the storage type.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    _pad0: u32,
    a_sm: u32,
    a_sk: u32,
    b_sk: u32,
    b_sn: u32,
    c_sm: u32,
    c_sn: u32,
    alpha: f32,
    beta: f32,
    // Batch dimensions, outermost first, padded in front with 1.
    batch_shape: vec4<u32>,
    a_bstride: vec4<u32>,
    b_bstride: vec4<u32>,
}

// Activation fused into the epilogue (codes in common.wgsl).
override ACT: u32 = 0u;
override ACT_A: f32 = 0.0;
override ACT_B: f32 = 0.0;
// Gemm's C input, broadcast to [M, N] through c_sm, c_sn.
override HAS_C: bool = false;
// A residual of the output's shape, added before the activation.
override HAS_RES: bool = false;

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read> c: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;
// A and B again, eight f16 per element, for the wide loads of gemm_coop.wgsl
// (bound only where the launcher chose them: A_WIDE, B_WIDE).
@group(0) @binding(6) var<storage, read> a8: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> b8: array<vec4<u32>>;
// The residual again, eight f16 per element, for gemm_coop.wgsl's OUT_WIDE.
@group(0) @binding(9) var<storage, read> res8: array<vec4<u32>>;

fn gemm_dims() -> vec3<u32> {
    return vec3<u32>(p.m, p.n, p.k);
}

fn batch_offset(batch: u32, strides: vec4<u32>) -> u32 {
    var rem = batch;
    var off = 0u;
    for (var d = 3; d >= 0; d--) {
        let size = p.batch_shape[d];
        off += (rem % size) * strides[d];
        rem /= size;
    }
    return off;
}

// Offsets of this workgroup's batch in A and B, set once by gemm_setup.
var<private> a_off: u32;
var<private> b_off: u32;

fn gemm_setup(batch: u32) {
    a_off = batch_offset(batch, p.a_bstride);
    b_off = batch_offset(batch, p.b_bstride);
}

fn a_elem(batch: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    return f32(a[a_off + m * p.a_sm + k * p.a_sk]);
}

// A[m, k..k+8]: k fastest with unit stride, and every offset a multiple of 8.
fn a_wide(batch: u32, m: u32, k: u32) -> vec4<u32> {
    if (m >= p.m || k >= p.k) {
        return vec4<u32>(0u);
    }
    return a8[(a_off + m * p.a_sm + k) / 8u];
}

struct BCol {
    base: u32,
    valid: bool,
}

fn b_col(batch: u32, n: u32) -> BCol {
    return BCol(b_off + n * p.b_sn, n < p.n);
}

// No state per k-tile: the column's base serves every k.
alias BTile = BCol;

fn b_tile(col: BCol, k0: u32) -> BTile {
    return col;
}

fn b_elem(col: BTile, k: u32) -> f32 {
    if (!col.valid || k >= p.k) {
        return 0.0;
    }
    return f32(b[col.base + k * p.b_sk]);
}

// The eight elements from B[k, n] on along B's unit-stride axis (offsets
// multiples of 8, and N or K too, whichever that axis is).
fn b_wide(col: BCol, k: u32) -> vec4<u32> {
    if (!col.valid || k >= p.k) {
        return vec4<u32>(0u);
    }
    return b8[(col.base + k * p.b_sk) / 8u];
}

// The output's element (m, n) is out_col(batch, n) + m * out_row_stride().
fn out_col(batch: u32, n: u32) -> u32 {
    return batch * p.m * p.n + n;
}

fn out_row_stride() -> u32 {
    return p.n;
}

fn out_len() -> u32 {
    let b = p.batch_shape;
    return b.x * b.y * b.z * b.w * p.m * p.n;
}

// What element (m, n), the output's element i, adds to the product: beta C,
// residual. The cores read it for several elements before storing any, so
// that the loads overlap instead of each waiting behind the last store.
fn addend(batch: u32, m: u32, n: u32, i: u32) -> f32 {
    var r = 0.0;
    if (HAS_C) {
        r += p.beta * f32(c[m * p.c_sm + n * p.c_sn]);
    }
    if (HAS_RES) {
        r += f32(res[i]);
    }
    return r;
}

// The output's value from the product's v and its addend a: alpha v + a,
// activated.
fn result(v: f32, a: f32) -> f32 {
    return activate(ACT, p.alpha * v + a, ACT_A, ACT_B);
}

// Stores the output's element i: result(v, a).
fn finish(i: u32, v: f32, a: f32) {
    y[i] = T(result(v, a));
}

// The addends of elements (m, n..n+8), the output's i..i+8 (i a multiple of
// 8): beta C, residual (one 16-byte load).
fn addends8(batch: u32, m: u32, n: u32, i: u32) -> array<f32, 8> {
    var a: array<f32, 8>;
    if (HAS_RES) {
        a = unpack8(res8[i / 8u]);
    }
    if (HAS_C) {
        for (var j = 0u; j < 8u; j++) {
            a[j] += p.beta * f32(c[m * p.c_sm + (n + j) * p.c_sn]);
        }
    }
    return a;
}
