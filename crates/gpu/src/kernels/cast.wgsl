// Element type conversion T -> U (f32, f16, i32, i64), one invocation per
// element. Float to integer conversions saturate and map NaN to 0, as Rust's
// `as` does (the header defines U_IS_INT, T_IS_FLOAT, U_MAX, U_LIMIT).
// TO_BOOL: to a boolean (an i32 0 or 1 on the device): whether x is not zero
// (NaN is true, as numpy's bool(nan)).

struct CastParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override TO_BOOL: bool = false;

@group(0) @binding(0) var<uniform> p: CastParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<U>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid, 256u);
    if (i >= p.n) {
        return;
    }
    let v = x[i];
    if (TO_BOOL) {
        // Floats by their bits: fast math may take NaN != 0 for false.
        var nonzero = v != T(0);
        if (T_IS_FLOAT) {
            nonzero = (bitcast<u32>(f32(v)) & 0x7fffffffu) != 0u;
        }
        y[i] = select(U(0), U(1), nonzero);
        return;
    }
    if (T_IS_FLOAT && U_IS_INT) {
        let f = f32(v);
        if (f != f) {
            y[i] = U(0);
            return;
        }
        if (f >= U_LIMIT) {
            y[i] = U_MAX;
            return;
        }
    }
    y[i] = U(v);
}
