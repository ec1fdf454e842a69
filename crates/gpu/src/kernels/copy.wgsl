// Strided copy of a region: element at coordinate c of `shape` goes from
// src[src_off + c . src_stride] to dst[dst_off + c . dst_stride]. Transpose,
// Concat (one dispatch per input), Split (one per output) and slices are all
// this. T is any element of 2, 4 or 8 bytes.

struct CopyParams {
    n: u32,
    rank: u32,
    src_off: u32,
    dst_off: u32,
    shape: array<vec4<u32>, 2>,
    src_stride: array<vec4<u32>, 2>,
    dst_stride: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: CopyParams;
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
    var s = p.src_off;
    var d = p.dst_off;
    for (var k = i32(p.rank) - 1; k >= 0; k--) {
        let u = u32(k);
        let size = p.shape[u / 4u][u % 4u];
        let c = rem % size;
        rem /= size;
        s += c * p.src_stride[u / 4u][u % 4u];
        d += c * p.dst_stride[u / 4u][u % 4u];
    }
    dst[d] = src[s];
}
