// Where(cond, a, b) with broadcasting: y = a where cond, else b. A boolean is
// a u32 0 or 1 on the device. T is any element of 2, 4 or 8 bytes: elements
// are moved, not computed.

struct WhereParams {
    n: u32,
    rank: u32,
    _pad0: u32,
    _pad1: u32,
    // Output dims, dim d at [d / 4][d % 4].
    shape: array<vec4<u32>, 2>,
    // Operand k (0 cond, 1 a, 2 b), dim d at flat index 8k + d; 0 where it broadcasts.
    strides: array<vec4<u32>, 6>,
}

@group(0) @binding(0) var<uniform> p: WhereParams;
@group(0) @binding(1) var<storage, read> cond: array<u32>;
@group(0) @binding(2) var<storage, read> a: array<T>;
@group(0) @binding(3) var<storage, read> b: array<T>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

fn stride(k: u32, d: u32) -> u32 {
    let f = 8u * k + d;
    return p.strides[f / 4u][f % 4u];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    var rem = i;
    var at = vec3<u32>(0u);
    for (var k = i32(p.rank) - 1; k >= 0; k--) {
        let d = u32(k);
        let size = p.shape[d / 4u][d % 4u];
        let c = rem % size;
        rem /= size;
        at += c * vec3<u32>(stride(0u, d), stride(1u, d), stride(2u, d));
    }
    y[i] = select(b[at.z], a[at.y], cond[at.x] != 0u);
}
