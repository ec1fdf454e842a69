// An f16 tensor [N, C_IN, HW] copied to [N, HW, C], eight channels of one
// pixel per invocation (one 16-byte store), channels C_IN..C zero: the input of
// the cooperative-matrix convolutions on NHWC tiles (conv_io.wgsl). C is a
// multiple of 8, at least C_IN.
// Consecutive invocations take consecutive pixels, so each of the eight
// loads of a subgroup reads consecutive halves.

struct NhwcParams {
    // Vectors of eight channels: N * HW * C / 8.
    n: u32,
    hw: u32,
    // C / 8.
    c8: u32,
    c_in: u32,
}

@group(0) @binding(0) var<uniform> p: NhwcParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<u32>>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    let q = i % p.hw;
    // Image and channel block: channel c0 of image img is this vector's first.
    let row8 = i / p.hw;
    let img = row8 / p.c8;
    let c0 = (row8 % p.c8) * 8u;
    let base = (img * p.c_in + c0) * p.hw + q;
    var h: array<f32, 8>;
    for (var j = 0u; j < 8u; j++) {
        if (c0 + j < p.c_in) {
            h[j] = f32(x[base + j * p.hw]);
        }
    }
    var v: vec4<u32>;
    for (var j = 0u; j < 4u; j++) {
        v[j] = pack2x16float(vec2<f32>(h[2u * j], h[2u * j + 1u]));
    }
    y[(img * p.hw + q) * p.c8 + row8 % p.c8] = v;
}
