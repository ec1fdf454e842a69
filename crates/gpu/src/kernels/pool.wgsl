// MaxPool and AveragePool over 1-D (H = 1) and 2-D windows, one invocation
// per output element, computed in f32. Semantics of the CPU engine: NaN wins
// a max; with INCLUDE_PAD the divisor counts the taps inside the padded
// extent, otherwise the taps inside the input.

struct PoolParams {
    n: u32,
    ih: u32,
    iw: u32,
    oh: u32,
    ow: u32,
    pad_h: u32,
    pad_w: u32,
    // End pads, for the INCLUDE_PAD divisor.
    end_h: u32,
    end_w: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override KH: u32 = 1u;
override KW: u32 = 1u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override DH: u32 = 1u;
override DW: u32 = 1u;
override IS_MAX: bool = true;
override INCLUDE_PAD: bool = false;

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

// Taps of one axis whose position lies before the padded end.
fn taps_in_padded(start: i32, k: u32, d: u32, input: u32, end: u32) -> u32 {
    var c = 0u;
    for (var t = 0u; t < k; t++) {
        if (start + i32(t * d) <= i32(input + end) - 1) {
            c++;
        }
    }
    return c;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    let plane = p.oh * p.ow;
    let nc = i / plane;
    let q = i % plane;
    let h0 = i32((q / p.ow) * SH) - i32(p.pad_h);
    let w0 = i32((q % p.ow) * SW) - i32(p.pad_w);
    let base = nc * p.ih * p.iw;
    var acc = select(0.0, bitcast<f32>(0xff800000u), IS_MAX);
    var count = 0u;
    for (var kh = 0u; kh < KH; kh++) {
        let ih = h0 + i32(kh * DH);
        if (ih < 0 || ih >= i32(p.ih)) {
            continue;
        }
        for (var kw = 0u; kw < KW; kw++) {
            let iw = w0 + i32(kw * DW);
            if (iw < 0 || iw >= i32(p.iw)) {
                continue;
            }
            let v = f32(x[base + u32(ih) * p.iw + u32(iw)]);
            if (IS_MAX) {
                if (v > acc || v != v) {
                    acc = v;
                }
            } else {
                acc += v;
            }
            count++;
        }
    }
    if (!IS_MAX) {
        var div = count;
        if (INCLUDE_PAD) {
            div = taps_in_padded(h0, KH, DH, p.ih, p.end_h) * taps_in_padded(w0, KW, DW, p.iw, p.end_w);
        }
        acc = acc / f32(max(div, 1u));
    }
    y[i] = T(acc);
}
