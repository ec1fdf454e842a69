// Shared by every kernel: the activation functions fused into epilogues and the
// elementwise kernel, and the linear invocation index of 2-D dispatches.
//
// Activation codes (see `ops::act_code` on the Rust side):
// 0 none, 1 relu, 2 sigmoid, 3 tanh, 4 sqrt, 5 exp, 6 log, 7 neg, 8 abs,
// 9 leaky relu (a = alpha), 10 hard sigmoid (a = alpha, b = beta),
// 11 hard swish, 12 clamp (a = min, b = max), 13 lower bound a only,
// 14 upper bound b only, 15 gelu (erf), 16 NaN to a.

fn stable_tanh(x: f32) -> f32 {
    // tanh from exp of a non-positive argument: no overflow, no NaN for large |x|.
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, x < 0.0);
}

// erf(x) within 5e-7: the odd rational approximation of `metal_mps_ir::math::erf_f32`.
fn erf_approx(x: f32) -> f32 {
    let z = clamp(x, -3.9, 3.9);
    let z2 = z * z;
    var p = -2.7261423e-10;
    p = p * z2 + 2.7706814e-8;
    p = p * z2 - 2.101024e-6;
    p = p * z2 - 5.6925064e-5;
    p = p * z2 - 7.3499063e-4;
    p = p * z2 - 2.9546e-3;
    p = p * z2 - 1.6096033e-2;
    var q = -1.4566072e-5;
    q = q * z2 - 2.1337406e-4;
    q = q * z2 - 1.682827e-3;
    q = q * z2 - 7.373329e-3;
    q = q * z2 - 1.426474e-2;
    return select(z * p / q, sign(x), abs(x) >= 3.9);
}

fn activate(code: u32, x: f32, a: f32, b: f32) -> f32 {
    switch code {
        case 1u: { return max(x, 0.0); }
        case 2u: { return 1.0 / (1.0 + exp(-x)); }
        case 3u: { return stable_tanh(x); }
        case 4u: { return sqrt(x); }
        case 5u: { return exp(x); }
        case 6u: { return log(x); }
        case 7u: { return -x; }
        case 8u: { return abs(x); }
        case 9u: { return select(x, a * x, x < 0.0); }
        case 10u: { return clamp(a * x + b, 0.0, 1.0); }
        case 11u: { return x * clamp(x / 6.0 + 0.5, 0.0, 1.0); }
        case 12u: { return min(max(x, a), b); }
        case 13u: { return max(x, a); }
        case 14u: { return min(x, b); }
        case 15u: { return 0.5 * x * (1.0 + erf_approx(x * 0.70710677)); }
        // NaN by its bits: `x != x` may be folded away under fast math (Metal).
        case 16u: { return select(x, a, (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u); }
        default: { return x; }
    }
}

// Invocation index of a dispatch laid out by `ops::grid` (x fastest, then y).
fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, local: u32, size: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * size + local;
}

// Eight f16 packed in pairs (one 16-byte load), as f32.
fn unpack8(w: vec4<u32>) -> array<f32, 8> {
    var o: array<f32, 8>;
    for (var j = 0u; j < 4u; j++) {
        let h = unpack2x16float(w[j]);
        o[2u * j] = h.x;
        o[2u * j + 1u] = h.y;
    }
    return o;
}
