// ReduceSum/Mean/Max/Min over any set of axes, in f32. The host coalesces
// dims: output element o sits at input offset sum(coord_d * out_stride_d)
// over the kept dims; reduced element r adds sum(rcoord_d * red_stride_d).
// `per_thread`: one invocation per output; `per_wg`: one workgroup per
// output (long reductions). OP: 0 sum, 1 mean, 2 max, 3 min (NaN wins).

struct ReduceParams {
    n_out: u32,
    count: u32,
    out_rank: u32,
    red_rank: u32,
    out_shape: array<vec4<u32>, 2>,
    out_stride: array<vec4<u32>, 2>,
    red_shape: array<vec4<u32>, 2>,
    red_stride: array<vec4<u32>, 2>,
}

override OP: u32 = 0u;

@group(0) @binding(0) var<uniform> p: ReduceParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

var<workgroup> red: array<f32, 256>;

fn identity() -> f32 {
    switch OP {
        case 2u: { return bitcast<f32>(0xff800000u); }
        case 3u: { return bitcast<f32>(0x7f800000u); }
        default: { return 0.0; }
    }
}

fn combine(a: f32, v: f32) -> f32 {
    switch OP {
        case 2u: { return select(a, v, v > a || v != v); }
        case 3u: { return select(a, v, v < a || v != v); }
        default: { return a + v; }
    }
}

fn finish(a: f32) -> f32 {
    if (OP == 1u) {
        return a / f32(p.count);
    }
    return a;
}

fn out_base(o: u32) -> u32 {
    var rem = o;
    var off = 0u;
    for (var d = i32(p.out_rank) - 1; d >= 0; d--) {
        let u = u32(d);
        let size = p.out_shape[u / 4u][u % 4u];
        off += (rem % size) * p.out_stride[u / 4u][u % 4u];
        rem /= size;
    }
    return off;
}

fn red_offset(r: u32) -> u32 {
    var rem = r;
    var off = 0u;
    for (var d = i32(p.red_rank) - 1; d >= 0; d--) {
        let u = u32(d);
        let size = p.red_shape[u / 4u][u % 4u];
        off += (rem % size) * p.red_stride[u / 4u][u % 4u];
        rem /= size;
    }
    return off;
}

@compute @workgroup_size(256)
fn per_thread(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let o = linear_index(wg, nwg, lid, 256u);
    if (o >= p.n_out) {
        return;
    }
    let base = out_base(o);
    var acc = identity();
    for (var r = 0u; r < p.count; r++) {
        acc = combine(acc, f32(x[base + red_offset(r)]));
    }
    y[o] = T(finish(acc));
}

@compute @workgroup_size(256)
fn per_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let o = wg.y * nwg.x + wg.x;
    if (o >= p.n_out) {
        return;
    }
    let base = out_base(o);
    var acc = identity();
    for (var r = lid; r < p.count; r += 256u) {
        acc = combine(acc, f32(x[base + red_offset(r)]));
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = combine(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        y[o] = T(finish(red[0]));
    }
}
