// The second pass of a split-K product (gemm_tiled.wgsl or gemm_coop.wgsl
// with SPLITS > 1):
// adds the partial sums of the splits and applies the product's epilogue,
//   y[i] = act(alpha * sum_s part[s * len + i] + beta * C[row, col] (+ R[i])),
// where the output is [.., rows, inner] and C is read at row * c_srow +
// col * c_scol, col = i % inner (a convolution's bias: inner = the plane,
// c_srow = 1, c_scol = 0). T is the storage type of C, R and y.

struct SplitParams {
    len: u32,
    splits: u32,
    inner: u32,
    rows: u32,
    c_srow: u32,
    c_scol: u32,
    alpha: f32,
    beta: f32,
}

override ACT: u32 = 0u;
override ACT_A: f32 = 0.0;
override ACT_B: f32 = 0.0;
override HAS_C: bool = false;
override HAS_RES: bool = false;

@group(0) @binding(0) var<uniform> p: SplitParams;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<T>;
@group(0) @binding(3) var<storage, read> res: array<T>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.len) {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += part[s * p.len + i];
    }
    var r = p.alpha * sum;
    if (HAS_C) {
        let row = (i / p.inner) % p.rows;
        r += p.beta * f32(c[row * p.c_srow + (i % p.inner) * p.c_scol]);
    }
    if (HAS_RES) {
        r += f32(res[i]);
    }
    y[i] = T(activate(ACT, r, ACT_A, ACT_B));
}
