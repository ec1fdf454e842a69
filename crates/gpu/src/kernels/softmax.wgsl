// Softmax along one axis: rows of `len` elements at stride `inner`
// (element j of row (o, r) is at (o * len + j) * inner + r), in f32.
// `row_wg`: one workgroup of 256 per row (contiguous rows, inner = 1);
// `row_thread`: one invocation per row (strided rows).

struct SoftmaxParams {
    rows: u32,
    len: u32,
    inner: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: SoftmaxParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn row_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = wg.y * nwg.x + wg.x;
    // Uniform per workgroup: the whole workgroup leaves together.
    if (row >= p.rows) {
        return;
    }
    let base = row * p.len;
    var m = bitcast<f32>(0xff800000u);
    for (var j = lid; j < p.len; j += 256u) {
        m = max(m, f32(x[base + j]));
    }
    red[lid] = m;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    m = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = lid; j < p.len; j += 256u) {
        sum += exp(f32(x[base + j]) - m);
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    for (var j = lid; j < p.len; j += 256u) {
        y[base + j] = T(exp(f32(x[base + j]) - m) * inv);
    }
}

@compute @workgroup_size(256)
fn row_thread(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let row = linear_index(wg, nwg, lid, 256u);
    if (row >= p.rows) {
        return;
    }
    let base = (row / p.inner) * p.len * p.inner + row % p.inner;
    var m = bitcast<f32>(0xff800000u);
    for (var j = 0u; j < p.len; j++) {
        m = max(m, f32(x[base + j * p.inner]));
    }
    var sum = 0.0;
    for (var j = 0u; j < p.len; j++) {
        sum += exp(f32(x[base + j * p.inner]) - m);
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < p.len; j++) {
        y[base + j * p.inner] = T(exp(f32(x[base + j * p.inner]) - m) * inv);
    }
}
