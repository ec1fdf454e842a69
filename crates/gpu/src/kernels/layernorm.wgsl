// LayerNormalization (RMSNormalization with RMS) over rows of `cols`
// contiguous elements: one workgroup of 256 per row, f32 statistics. The
// variance is the mean of squared deviations from the mean (two passes, no
// cancellation); with RMS the mean is 0. `scale` and `bias` have `cols`
// elements.

struct NormParams {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad0: u32,
}

override RMS: bool = false;
override HAS_BIAS: bool = false;

@group(0) @binding(0) var<uniform> p: NormParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> scale: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

var<workgroup> red: array<f32, 256>;

// The sum of every invocation's `v` (all 256 must call it).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg.y * nwg.x + wg.x;
    // Uniform per workgroup: the whole workgroup leaves together.
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    let n = f32(p.cols);
    var mean = 0.0;
    if (!RMS) {
        var s = 0.0;
        for (var j = lid; j < p.cols; j += 256u) {
            s += f32(x[base + j]);
        }
        mean = workgroup_sum(lid, s) / n;
    }
    var q = 0.0;
    for (var j = lid; j < p.cols; j += 256u) {
        let d = f32(x[base + j]) - mean;
        q += d * d;
    }
    let inv = 1.0 / sqrt(workgroup_sum(lid, q) / n + p.eps);
    for (var j = lid; j < p.cols; j += 256u) {
        var r = (f32(x[base + j]) - mean) * inv * f32(scale[j]);
        if (HAS_BIAS) {
            r += f32(bias[j]);
        }
        y[base + j] = T(r);
    }
}
