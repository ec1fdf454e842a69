// A gather separable by axis (nearest-neighbour Resize): output element at
// coordinate c is x at (table[off_0 + c_0], table[off_1 + c_1], ...), each
// table entry an input index along its axis. T is any element of 2, 4 or 8
// bytes: elements are moved, not computed.

struct PickParams {
    n: u32,
    rank: u32,
    _pad0: u32,
    _pad1: u32,
    // Output dims, dim d at [d / 4][d % 4].
    shape: array<vec4<u32>, 2>,
    // Input strides, by dim.
    strides: array<vec4<u32>, 2>,
    // Where each dim's table starts in `table`.
    offsets: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: PickParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    var rem = i;
    var at = 0u;
    for (var k = i32(p.rank) - 1; k >= 0; k--) {
        let d = u32(k);
        let size = p.shape[d / 4u][d % 4u];
        let c = rem % size;
        rem /= size;
        at += table[p.offsets[d / 4u][d % 4u] + c] * p.strides[d / 4u][d % 4u];
    }
    y[i] = x[at];
}
