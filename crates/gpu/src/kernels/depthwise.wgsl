// Convolution whose output channels each read one input channel (depthwise,
// with any channel multiplier: ICg = 1). The implicit GEMM would give every
// group a one-row product; here each invocation computes OUTS neighbouring
// outputs of one row of one channel, f32 accumulation, the same epilogue as
// conv_io.wgsl (bias, residual, activation). Bindings as conv_io.wgsl.

struct DwParams {
    // Output rows: batch * OC * OH.
    rows: u32,
    ic: u32,
    ih: u32,
    iw: u32,
    oc: u32,
    oh: u32,
    ow: u32,
    // Output channels per input channel.
    ocg: u32,
    pad_h: u32,
    pad_w: u32,
    // Invocations per output row: ceil(OW / OUTS).
    row_groups: u32,
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

const OUTS: u32 = 4u;

@group(0) @binding(0) var<uniform> p: DwParams;
@group(0) @binding(1) var<storage, read> w: array<T>;
@group(0) @binding(2) var<storage, read> x: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    let row = i / p.row_groups;
    if (row >= p.rows) {
        return;
    }
    let ow0 = (i % p.row_groups) * OUTS;
    let oh = row % p.oh;
    let nc = row / p.oh;
    let oc = nc % p.oc;
    let img = nc / p.oc;
    let base = (img * p.ic + oc / p.ocg) * p.ih * p.iw;
    let wbase = oc * KH * KW;
    let h0 = i32(oh * SH) - i32(p.pad_h);
    let w0 = i32(ow0 * SW) - i32(p.pad_w);
    var acc = array<f32, OUTS>();
    for (var kh = 0u; kh < KH; kh++) {
        let ih = h0 + i32(kh * DH);
        if (ih < 0 || ih >= i32(p.ih)) {
            continue;
        }
        let xrow = base + u32(ih) * p.iw;
        for (var kw = 0u; kw < KW; kw++) {
            let wv = f32(w[wbase + kh * KW + kw]);
            for (var o = 0u; o < OUTS; o++) {
                let iw = w0 + i32(o * SW + kw * DW);
                if (iw >= 0 && iw < i32(p.iw)) {
                    acc[o] += wv * f32(x[xrow + u32(iw)]);
                }
            }
        }
    }
    var b = 0.0;
    if (HAS_BIAS) {
        b = f32(bias[oc]);
    }
    let out_row = row * p.ow;
    for (var o = 0u; o < OUTS; o++) {
        let ow = ow0 + o;
        if (ow < p.ow) {
            var r = acc[o] + b;
            if (HAS_RES) {
                r += f32(res[out_row + ow]);
            }
            y[out_row + ow] = T(activate(ACT, r, ACT_A, ACT_B));
        }
    }
}
