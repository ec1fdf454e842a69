// BatchNormalization (inference) with parameters computed at run time:
// y = (x - mean[c]) / sqrt(var[c] + eps) * scale[c] + bias[c], channel
// c = (i / inner) % channels, in f32. (Constant parameters are folded into a
// preceding Conv, or into a per-channel multiply-add, at load.)

struct BnParams {
    n: u32,
    channels: u32,
    inner: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: BnParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> scale: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> mean: array<T>;
@group(0) @binding(5) var<storage, read> variance: array<T>;
@group(0) @binding(6) var<storage, read_write> y: array<T>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    let c = (i / p.inner) % p.channels;
    let inv = 1.0 / sqrt(f32(variance[c]) + p.eps);
    y[i] = T((f32(x[i]) - f32(mean[c])) * inv * f32(scale[c]) + f32(bias[c]));
}
