// Addressing of a 2-D convolution as a matrix product (implicit GEMM; 1-D
// convolutions have H = 1). Per group g (the dispatch's z):
//   M = output channels of the group, N = batch * OH * OW, K = ICg * KH * KW,
//   A[m, k] = W[g * OCg + m, k]            (weights, [OC, K])
//   B[k, n] = X[img, g * ICg + ic, ih, iw] (gathered; 0 in the padding)
//   y[img, g * OCg + m, oh, ow] = act(acc + bias[oc] (+ R[same index]))
// K runs over (ic, kh, kw), ONNX's weight layout, or with TAP_MAJOR over
// (kh, kw, ic): weights [OC, KH, KW, ICg], reordered at load. Then a k-tile
// spans at most two taps of the window, whose bounds b_tile checks once per
// tile instead of per element; that needs ICg at least the kernel's k-tile
// depth (TAP_MAJOR_MIN_CHANNELS in conv.rs), or a single tap (1x1), where both
// orders agree.
// With NHWC the gather reads the input as [N, IH, IW, IC] (the launcher's
// copy of X in that order): with TAP_MAJOR, eight consecutive k are eight
// channels of one tap, one 16-byte load (b_wide along k).
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
override TAP_MAJOR: bool = false;
override NHWC: bool = false;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> w: array<T>;
@group(0) @binding(2) var<storage, read> x: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;
// W and X again, eight f16 per element, for the wide loads of gemm_coop.wgsl
// (bound only where the launcher chose them: A_WIDE, B_WIDE); with NHWC, x8
// is the input in NHWC order.
@group(0) @binding(6) var<storage, read> w8: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> x8: array<vec4<u32>>;
// The residual again, eight f16 per element, for gemm_coop.wgsl's OUT_WIDE.
@group(0) @binding(9) var<storage, read> res8: array<vec4<u32>>;

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
    // Offset of the window's first tap in channel 0 of this group (negative
    // when that tap lies in the padding).
    base: i32,
    // Top-left input position of the window.
    h0: i32,
    w0: i32,
    // n < N.
    valid: bool,
}

fn b_col(g: u32, n: u32) -> BCol {
    let plane = p.oh * p.ow;
    if (n >= p.batch * plane) {
        return BCol(0, 0, 0, false);
    }
    let img = n / plane;
    let q = n % plane;
    let h0 = i32((q / p.ow) * SH) - i32(p.pad_h);
    let w0 = i32((q % p.ow) * SW) - i32(p.pad_w);
    if (NHWC) {
        let base = i32(img * p.ih * p.iw * p.ic + g * p.icg) + (h0 * i32(p.iw) + w0) * i32(p.ic);
        return BCol(base, h0, w0, true);
    }
    let base = i32((img * p.ic + g * p.icg) * p.ih * p.iw) + h0 * i32(p.iw) + w0;
    return BCol(base, h0, w0, true);
}

// Distance between consecutive channels of one pixel.
fn channel_stride() -> u32 {
    return select(p.ih * p.iw, 1u, NHWC);
}

// Whether tap r (= kh * KW + kw) of the column's window lies in the image.
fn tap_inside(col: BCol, r: u32) -> bool {
    let ih = col.h0 + i32((r / KW) * DH);
    let iw = col.w0 + i32((r % KW) * DW);
    return col.valid && ih >= 0 && iw >= 0 && ih < i32(p.ih) && iw < i32(p.iw);
}

// Offset of tap r from the window's first tap.
fn tap_offset(r: u32) -> i32 {
    let pixels = (r / KW) * DH * p.iw + (r % KW) * DW;
    return i32(select(pixels, pixels * p.ic, NHWC));
}

// A column's gather state for the k-tile from k0 (b_tile). With TAP_MAJOR:
// the channel of k0, and the offsets and insideness of k0's tap (at that
// channel) and of the next tap (at channel 0).
struct BTile {
    col: BCol,
    k0: u32,
    ic0: u32,
    off0: i32,
    in0: bool,
    off1: i32,
    in1: bool,
}

fn b_tile(col: BCol, k0: u32) -> BTile {
    if (!TAP_MAJOR) {
        return BTile(col, k0, 0u, 0, false, 0, false);
    }
    let r = k0 / p.icg;
    let ic0 = k0 % p.icg;
    let off0 = col.base + tap_offset(r) + i32(ic0 * channel_stride());
    let off1 = col.base + tap_offset(r + 1u);
    return BTile(col, k0, ic0, off0, tap_inside(col, r), off1, tap_inside(col, r + 1u));
}

fn b_elem(t: BTile, k: u32) -> f32 {
    if (k >= p.icg * KH * KW) {
        return 0.0;
    }
    let cs = channel_stride();
    if (TAP_MAJOR) {
        let dk = k - t.k0;
        let ic = t.ic0 + dk;
        let next = ic >= p.icg;
        if (!select(t.in0, t.in1, next)) {
            return 0.0;
        }
        let at = select(t.off0 + i32(dk * cs), t.off1 + i32((ic - p.icg) * cs), next);
        return f32(x[u32(at)]);
    }
    let r = k % (KH * KW);
    if (!tap_inside(t.col, r)) {
        return 0.0;
    }
    let ic = k / (KH * KW);
    return f32(x[u32(t.col.base + i32(ic * cs) + tap_offset(r))]);
}

// With NHWC: channels k..k+8 of column col's tap (k along K, tap-major; B
// read along k), 0 in the padding; needs ICg and IC multiples of 8.
// Else X[img, g * ICg + k, pixel n..n+8] of a 1x1 convolution with unit
// strides and no padding (B's columns are the pixels, read along n): needs
// IH * IW a multiple of 8.
fn b_wide(col: BCol, k: u32) -> vec4<u32> {
    if (NHWC) {
        let r = k / p.icg;
        if (r >= KH * KW || !tap_inside(col, r)) {
            return vec4<u32>(0u);
        }
        return x8[u32(col.base + tap_offset(r) + i32(k - r * p.icg)) / 8u];
    }
    if (!col.valid || k >= p.icg) {
        return vec4<u32>(0u);
    }
    return x8[(u32(col.base) + k * p.ih * p.iw) / 8u];
}

// The output's element (m, n) is out_col(g, n) + m * out_row_stride(): the
// cores compute each column's part once, not each element's.
fn out_col(g: u32, n: u32) -> u32 {
    let plane = p.oh * p.ow;
    return ((n / plane) * p.oc + g * p.ocg) * plane + n % plane;
}

fn out_row_stride() -> u32 {
    return p.oh * p.ow;
}

fn out_len() -> u32 {
    return p.batch * p.oc * p.oh * p.ow;
}

// What element (m, n), the output's element i, adds to the product: bias,
// residual. The cores read it for several elements before storing any, so
// that the loads overlap instead of each waiting behind the last store.
fn addend(g: u32, m: u32, n: u32, i: u32) -> f32 {
    var r = 0.0;
    if (HAS_BIAS) {
        r += f32(bias[g * p.ocg + m]);
    }
    if (HAS_RES) {
        r += f32(res[i]);
    }
    return r;
}

// The output's value from the product's v and its addend a: activated.
fn result(v: f32, a: f32) -> f32 {
    return activate(ACT, v + a, ACT_A, ACT_B);
}

// Stores the output's element i: result(v, a).
fn finish(i: u32, v: f32, a: f32) {
    y[i] = T(result(v, a));
}

// The addends of elements (m, n..n+8), the output's i..i+8 (i a multiple of
// 8): bias, residual (one 16-byte load).
fn addends8(g: u32, m: u32, n: u32, i: u32) -> array<f32, 8> {
    var a: array<f32, 8>;
    if (HAS_RES) {
        a = unpack8(res8[i / 8u]);
    }
    if (HAS_BIAS) {
        let b = f32(bias[g * p.ocg + m]);
        for (var j = 0u; j < 8u; j++) {
            a[j] += b;
        }
    }
    return a;
}
