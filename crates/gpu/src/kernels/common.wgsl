// Shared by every kernel: the activation functions fused into epilogues and the
// elementwise kernel, and the linear invocation index of 2-D dispatches.
//
// Activation codes (see `ops::act_code` on the Rust side):
// 0 none, 1 relu, 2 sigmoid, 3 tanh, 4 sqrt, 5 exp, 6 log, 7 neg, 8 abs,
// 9 leaky relu (a = alpha), 10 hard sigmoid (a = alpha, b = beta),
// 11 hard swish, 12 clamp (a = min, b = max), 13 lower bound a only,
// 14 upper bound b only.

fn stable_tanh(x: f32) -> f32 {
    // tanh from exp of a non-positive argument: no overflow, no NaN for large |x|.
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, x < 0.0);
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
        default: { return x; }
    }
}

// Invocation index of a dispatch laid out by `ops::grid` (x fastest, then y).
fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, local: u32, size: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * size + local;
}
