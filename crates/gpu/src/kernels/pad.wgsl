// Constant-mode Pad of 4-byte elements: the output element at coordinate c
// reads the input at c - begin when that lies inside the input, else takes
// `value` (the element's bits). Negative pads crop.

struct PadParams {
    n: u32,
    rank: u32,
    value: u32,
    _pad0: u32,
    out_shape: array<vec4<u32>, 2>,
    in_shape: array<vec4<u32>, 2>,
    begin: array<vec4<i32>, 2>,
}

@group(0) @binding(0) var<uniform> p: PadParams;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    var rem = i;
    var s = 0u;
    var stride = 1u;
    var inside = true;
    for (var k = i32(p.rank) - 1; k >= 0; k--) {
        let u = u32(k);
        let size = p.out_shape[u / 4u][u % 4u];
        let in_size = p.in_shape[u / 4u][u % 4u];
        let c = i32(rem % size) - p.begin[u / 4u][u % 4u];
        rem /= size;
        if (c < 0 || c >= i32(in_size)) {
            inside = false;
        } else {
            s += u32(c) * stride;
        }
        stride *= in_size;
    }
    if (inside) {
        dst[i] = src[s];
    } else {
        dst[i] = T(p.value);
    }
}
