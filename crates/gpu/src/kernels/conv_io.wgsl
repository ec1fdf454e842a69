// Addressing of a 2-D convolution as a matrix product (implicit GEMM; 1-D
// convolutions have H = 1). Per group g (the dispatch's z):
//   M = output channels of the group, N = batch * OH * OW, K = ICg * KH * KW,
//   A[m, k] = W[g * OCg + m, k]            (weights, [OC, ICg * KH * KW])
//   B[k, n] = X[img, g * ICg + ic, ih, iw] (gathered; 0 in the padding)
//   y[img, g * OCg + m, oh, ow] = act(acc + bias[oc] (+ R[same index]))
// Kernel size, strides and dilations are override constants: the divisions by
// them compile to multiplications.

struct ConvParams {
    batch: u32,
    ic: u32,
    ih: u32,
    iw: u32,
    oc: u32,
    oh: u32,
    ow: u32,
    icg: u32,
    ocg: u32,
    pad_h: u32,
    pad_w: u32,
    _pad0: u32,
}

override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override DH: u32 = 1u;
override DW: u32 = 1u;
override ACT: u32 = 0u;
override ACT_A: f32 = 0.0;
override ACT_B: f32 = 0.0;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> w: array<T>;
@group(0) @binding(2) var<storage, read> x: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;
// W and X again, eight f16 per element, for the wide loads of gemm_coop.wgsl
// (bound only where the launcher chose them: A_WIDE, B_WIDE).
@group(0) @binding(6) var<storage, read> w8: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> x8: array<vec4<u32>>;

fn gemm_dims() -> vec3<u32> {
    return vec3<u32>(p.ocg, p.batch * p.oh * p.ow, p.icg * KH * KW);
}

fn gemm_setup(g: u32) {}

fn a_elem(g: u32, m: u32, k: u32) -> f32 {
    let kk = p.icg * KH * KW;
    if (m >= p.ocg || k >= kk) {
        return 0.0;
    }
    return f32(w[(g * p.ocg + m) * kk + k]);
}

// W[g * OCg + m, k..k+8]: needs K a multiple of 8.
fn a_wide(g: u32, m: u32, k: u32) -> vec4<u32> {
    let kk = p.icg * KH * KW;
    if (m >= p.ocg || k >= kk) {
        return vec4<u32>(0u);
    }
    return w8[((g * p.ocg + m) * kk + k) / 8u];
}

struct BCol {
    // Offset of channel 0 of this group in the image, or -1 past N.
    base: i32,
    // Top-left input position of the window.
    h0: i32,
    w0: i32,
}

fn b_col(g: u32, n: u32) -> BCol {
    let plane = p.oh * p.ow;
    if (n >= p.batch * plane) {
        return BCol(-1, 0, 0);
    }
    let img = n / plane;
    let q = n % plane;
    let oh = q / p.ow;
    let ow = q % p.ow;
    let base = (img * p.ic + g * p.icg) * p.ih * p.iw;
    return BCol(i32(base), i32(oh * SH) - i32(p.pad_h), i32(ow * SW) - i32(p.pad_w));
}

fn b_elem(col: BCol, k: u32) -> f32 {
    if (col.base < 0 || k >= p.icg * KH * KW) {
        return 0.0;
    }
    let ic = k / (KH * KW);
    let r = k % (KH * KW);
    let ih = col.h0 + i32((r / KW) * DH);
    let iw = col.w0 + i32((r % KW) * DW);
    if (ih < 0 || iw < 0 || ih >= i32(p.ih) || iw >= i32(p.iw)) {
        return 0.0;
    }
    return f32(x[u32(col.base) + (ic * p.ih + u32(ih)) * p.iw + u32(iw)]);
}

// X[img, g * ICg + k, pixel n..n+8] of a 1x1 convolution with unit strides
// and no padding (B's columns are the pixels): needs IH * IW a multiple of 8.
fn b_wide(col: BCol, k: u32) -> vec4<u32> {
    if (col.base < 0 || k >= p.icg) {
        return vec4<u32>(0u);
    }
    return x8[(u32(col.base) + k * p.ih * p.iw + u32(col.h0) * p.iw + u32(col.w0)) / 8u];
}

fn out_index(g: u32, m: u32, n: u32) -> u32 {
    let plane = p.oh * p.ow;
    return ((n / plane) * p.oc + g * p.ocg + m) * plane + n % plane;
}

fn out_len() -> u32 {
    return p.batch * p.oc * p.oh * p.ow;
}

fn epilogue(g: u32, m: u32, n: u32, v: f32) {
    var r = v;
    if (HAS_BIAS) {
        r += f32(bias[g * p.ocg + m]);
    }
    let i = out_index(g, m, n);
    if (HAS_RES) {
        r += f32(res[i]);
    }
    y[i] = T(activate(ACT, r, ACT_A, ACT_B));
}
