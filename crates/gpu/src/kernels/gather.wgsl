// Gather with indices known only at run time (an embedding lookup): output
// element (o, j, e) is data[(o * axis_dim + index[j]) * inner + e]. Index j is
// an i32, or the low word of an i64 (INDEX64). Negative indices count from the
// end. The engine checks every index on the host before the run; one still out
// of range is clamped, so that no read leaves the buffer. T is any element of
// 2, 4 or 8 bytes.

struct GatherParams {
    n: u32,
    inner: u32,
    count: u32,
    axis_dim: u32,
}

override INDEX64: bool = false;

@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(1) var<storage, read> data: array<T>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    let e = i % p.inner;
    let row = i / p.inner;
    let j = row % p.count;
    let o = row / p.count;
    // An index within [-axis_dim, axis_dim) fits an i32: its low word is its value.
    var k = bitcast<i32>(indices[select(j, 2u * j, INDEX64)]);
    if (k < 0) {
        k += i32(p.axis_dim);
    }
    let at = u32(clamp(k, 0, i32(p.axis_dim) - 1));
    y[i] = data[(o * p.axis_dim + at) * p.inner + e];
}
