// A chain of float elementwise ops fused into one pass over memory:
//   acc = x0[i]; then for each step s < NSTEPS: acc = op_s(acc, operand)
// computed in f32 whatever the storage type T. Operands x0..x4 broadcast to
// the output through their MODE:
//   0 same shape as the output (index i), 1 a single element,
//   2 general broadcast (strides per output dim, 0 on broadcast dims),
//   3 one value per channel: (i / inner) % count.
// Step op codes: < 100 the activations of common.wgsl (PA, PB their
// parameters); 100 add, 101 sub, 102 mul, 103 div, 104 pow, 105 max, 106 min
// with operand ARG; SWAP puts the operand on the left (operand - acc).

struct EwParams {
    n: u32,
    rank: u32,
    _pad0: u32,
    _pad1: u32,
    // Output dims, dim d at [d / 4][d % 4].
    shape: array<vec4<u32>, 2>,
    // Operand k, dim d at flat index 8k + d.
    strides: array<vec4<u32>, 10>,
    // Operand k: (inner, count) at flat index 2k, 2k + 1.
    chan: array<vec4<u32>, 3>,
}

override MODE0: u32 = 0u;
override MODE1: u32 = 0u;
override MODE2: u32 = 0u;
override MODE3: u32 = 0u;
override MODE4: u32 = 0u;
override NEED_COORDS: bool = false;
override NSTEPS: u32 = 0u;
override OP0: u32 = 0u;
override OP1: u32 = 0u;
override OP2: u32 = 0u;
override OP3: u32 = 0u;
override OP4: u32 = 0u;
override OP5: u32 = 0u;
override OP6: u32 = 0u;
override OP7: u32 = 0u;
override ARG0: u32 = 0u;
override ARG1: u32 = 0u;
override ARG2: u32 = 0u;
override ARG3: u32 = 0u;
override ARG4: u32 = 0u;
override ARG5: u32 = 0u;
override ARG6: u32 = 0u;
override ARG7: u32 = 0u;
override SWAP0: bool = false;
override SWAP1: bool = false;
override SWAP2: bool = false;
override SWAP3: bool = false;
override SWAP4: bool = false;
override SWAP5: bool = false;
override SWAP6: bool = false;
override SWAP7: bool = false;
override PA0: f32 = 0.0;
override PA1: f32 = 0.0;
override PA2: f32 = 0.0;
override PA3: f32 = 0.0;
override PA4: f32 = 0.0;
override PA5: f32 = 0.0;
override PA6: f32 = 0.0;
override PA7: f32 = 0.0;
override PB0: f32 = 0.0;
override PB1: f32 = 0.0;
override PB2: f32 = 0.0;
override PB3: f32 = 0.0;
override PB4: f32 = 0.0;
override PB5: f32 = 0.0;
override PB6: f32 = 0.0;
override PB7: f32 = 0.0;

@group(0) @binding(0) var<uniform> p: EwParams;
@group(0) @binding(1) var<storage, read> x0: array<T>;
@group(0) @binding(2) var<storage, read> x1: array<T>;
@group(0) @binding(3) var<storage, read> x2: array<T>;
@group(0) @binding(4) var<storage, read> x3: array<T>;
@group(0) @binding(5) var<storage, read> x4: array<T>;
@group(0) @binding(6) var<storage, read_write> y: array<T>;

fn operand_mode(k: u32) -> u32 {
    switch k {
        case 0u: { return MODE0; }
        case 1u: { return MODE1; }
        case 2u: { return MODE2; }
        case 3u: { return MODE3; }
        default: { return MODE4; }
    }
}

fn operand_offset(k: u32, i: u32, coord: ptr<function, array<u32, 8>>) -> u32 {
    switch operand_mode(k) {
        case 0u: { return i; }
        case 1u: { return 0u; }
        case 3u: {
            let inner = p.chan[k / 2u][(k % 2u) * 2u];
            let count = p.chan[k / 2u][(k % 2u) * 2u + 1u];
            return (i / inner) % count;
        }
        default: {
            var off = 0u;
            for (var d = 0u; d < p.rank; d++) {
                let f = k * 8u + d;
                off += (*coord)[d] * p.strides[f / 4u][f % 4u];
            }
            return off;
        }
    }
}

fn load(k: u32, off: u32) -> f32 {
    switch k {
        case 0u: { return f32(x0[off]); }
        case 1u: { return f32(x1[off]); }
        case 2u: { return f32(x2[off]); }
        case 3u: { return f32(x3[off]); }
        default: { return f32(x4[off]); }
    }
}

// ONNX Pow: negative bases with integral exponents keep their sign rule.
fn power(a: f32, b: f32) -> f32 {
    if (b == 0.0) {
        return 1.0;
    }
    let r = pow(abs(a), b);
    if (a < 0.0) {
        if (b != floor(b)) {
            return bitcast<f32>(0x7fc00000u);
        }
        let odd = abs(b % 2.0) == 1.0;
        return select(r, -r, odd);
    }
    return r;
}

fn step(acc: f32, op: u32, arg: u32, swap: bool, pa: f32, pb: f32, i: u32, coord: ptr<function, array<u32, 8>>) -> f32 {
    if (op < 100u) {
        return activate(op, acc, pa, pb);
    }
    let v = load(arg, operand_offset(arg, i, coord));
    let l = select(acc, v, swap);
    let r = select(v, acc, swap);
    switch op {
        case 100u: { return l + r; }
        case 101u: { return l - r; }
        case 102u: { return l * r; }
        case 103u: { return l / r; }
        case 104u: { return power(l, r); }
        case 105u: { return max(l, r); }
        default: { return min(l, r); }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    var coord: array<u32, 8>;
    if (NEED_COORDS) {
        var rem = i;
        for (var d = i32(p.rank) - 1; d >= 0; d--) {
            let size = p.shape[u32(d) / 4u][u32(d) % 4u];
            coord[d] = rem % size;
            rem /= size;
        }
    }
    var acc = load(0u, operand_offset(0u, i, &coord));
    if (NSTEPS > 0u) { acc = step(acc, OP0, ARG0, SWAP0, PA0, PB0, i, &coord); }
    if (NSTEPS > 1u) { acc = step(acc, OP1, ARG1, SWAP1, PA1, PB1, i, &coord); }
    if (NSTEPS > 2u) { acc = step(acc, OP2, ARG2, SWAP2, PA2, PB2, i, &coord); }
    if (NSTEPS > 3u) { acc = step(acc, OP3, ARG3, SWAP3, PA3, PB3, i, &coord); }
    if (NSTEPS > 4u) { acc = step(acc, OP4, ARG4, SWAP4, PA4, PB4, i, &coord); }
    if (NSTEPS > 5u) { acc = step(acc, OP5, ARG5, SWAP5, PA5, PB5, i, &coord); }
    if (NSTEPS > 6u) { acc = step(acc, OP6, ARG6, SWAP6, PA6, PB6, i, &coord); }
    if (NSTEPS > 7u) { acc = step(acc, OP7, ARG7, SWAP7, PA7, PB7, i, &coord); }
    y[i] = T(acc);
}
