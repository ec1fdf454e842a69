// Fused attention, flash style: for each (batch, head) and query row i,
//   o[i] = sum_j softmax_j(scale * q[i] . k[j] + mask[i, j]) v[j]
// without the scores in memory; math in f32 whatever T.
//
// A workgroup takes ROWS query rows of one (batch, head) in SPLITS subgroup-
// sized groups of invocations: group s owns keys s * KEYS .. s * KEYS + KEYS
// of every tile of TILE keys, and each invocation one query row, its scaled
// query and its output in registers (a Head each: eight 4 x 4 blocks, only
// ever indexed by constants, and those past D4 and DV4 vec4s never touched,
// so that no compiler puts them in memory). Tiles of K and V are copied to
// workgroup memory as f32; every invocation of a group reads the same key
// at once, so each vec4 read is a broadcast. Each invocation keeps its own
// running maximum and sum (online softmax) over its keys; the groups'
// results are combined at the end.
//
// Every operand is addressed by strides (batch, head, row, column), so that
// Q, K, V and the output may be 4-D (batch, heads, sequence, size), 3-D with
// the heads packed in the last axis, or K may be given transposed. Key/value
// head = query head / group (grouped KV heads). The mask is read as raw
// words (binding 4): MASK_KIND 0 none, 1 f32 added, 2 f16 added, 3 boolean
// (an i32 0 or 1: 0 masks the key). Keys at or past mask_len, or (CAUSAL)
// past the row's own position, are masked. A row whose keys are all masked
// gives zeros with EMPTY_ZERO, else NaN (what softmax over -inf gives). With
// NAN_ZERO a row whose scores hold a NaN gives zeros too (a softmax row with
// a NaN is all NaN, which Where(IsNaN(p), 0, p) after it zeroes).

struct AttentionParams {
    sq: u32,
    skv: u32,
    d: u32,
    dv: u32,
    heads: u32,
    group: u32,
    mask_len: u32,
    scale: f32,
    q: vec4<u32>,
    k: vec4<u32>,
    v: vec4<u32>,
    o: vec4<u32>,
    m: vec4<u32>,
}

override MASK_KIND: u32 = 0u;
override CAUSAL: bool = false;
override EMPTY_ZERO: bool = false;
override NAN_ZERO: bool = false;
// Query/key and value sizes in vec4s (at most MAX_D4, which the header
// defines: the registers' and the tiles' width).
override D4: u32 = 16u;
override DV4: u32 = 16u;

@group(0) @binding(0) var<uniform> p: AttentionParams;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<T>;
@group(0) @binding(3) var<storage, read> v: array<T>;
@group(0) @binding(4) var<storage, read> mask: array<u32>;
@group(0) @binding(5) var<storage, read_write> o: array<T>;

const ROWS: u32 = 32u;
const SPLITS: u32 = 4u;
const KEYS: u32 = 8u;
const TILE: u32 = SPLITS * KEYS;

// A tile of keys and of values: key j's vec4 c at j * MAX_D4 + c. After the
// last tile, Ks holds the combined outputs and Vs each group's statistics.
var<workgroup> Ks: array<vec4<f32>, TILE * MAX_D4>;
var<workgroup> Vs: array<vec4<f32>, TILE * MAX_D4>;

// By its bits: fast-math compilers may fold x != x away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

// The mask's addend for element e of the mask tensor.
fn mask_at(e: u32) -> f32 {
    if (MASK_KIND == 1u) {
        return bitcast<f32>(mask[e]);
    }
    if (MASK_KIND == 2u) {
        return unpack2x16float(mask[e / 2u])[e % 2u];
    }
    return select(neg_inf(), 0.0, mask[e] != 0u);
}

// Up to 32 vec4s of one row: a query, or an output.
struct Head {
    m0: mat4x4<f32>,
    m1: mat4x4<f32>,
    m2: mat4x4<f32>,
    m3: mat4x4<f32>,
    m4: mat4x4<f32>,
    m5: mat4x4<f32>,
    m6: mat4x4<f32>,
    m7: mat4x4<f32>,
}

// Block g (vec4s 4g .. 4g + 3) of key j of the tile, or of value j.
fn key_block(j: u32, g: u32) -> mat4x4<f32> {
    let i = j * MAX_D4 + g * 4u;
    return mat4x4<f32>(Ks[i], Ks[i + 1u], Ks[i + 2u], Ks[i + 3u]);
}

fn value_block(j: u32, g: u32) -> mat4x4<f32> {
    let i = j * MAX_D4 + g * 4u;
    return mat4x4<f32>(Vs[i], Vs[i + 1u], Vs[i + 2u], Vs[i + 3u]);
}

fn block_dot(a: mat4x4<f32>, b: mat4x4<f32>) -> vec4<f32> {
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
}

// The query's dot product with key j of the tile.
fn key_dot(qh: Head, j: u32) -> f32 {
    var acc = block_dot(qh.m0, key_block(j, 0u));
    if (D4 > 4u) { acc += block_dot(qh.m1, key_block(j, 1u)); }
    if (D4 > 8u) { acc += block_dot(qh.m2, key_block(j, 2u)); }
    if (D4 > 12u) { acc += block_dot(qh.m3, key_block(j, 3u)); }
    if (D4 > 16u) { acc += block_dot(qh.m4, key_block(j, 4u)); }
    if (D4 > 20u) { acc += block_dot(qh.m5, key_block(j, 5u)); }
    if (D4 > 24u) { acc += block_dot(qh.m6, key_block(j, 6u)); }
    if (D4 > 28u) { acc += block_dot(qh.m7, key_block(j, 7u)); }
    return acc.x + acc.y + acc.z + acc.w;
}

// o * a + w * (value j of the tile).
fn add_value(o: Head, a: f32, w: f32, j: u32) -> Head {
    var r = o;
    r.m0 = r.m0 * a + value_block(j, 0u) * w;
    if (DV4 > 4u) { r.m1 = r.m1 * a + value_block(j, 1u) * w; }
    if (DV4 > 8u) { r.m2 = r.m2 * a + value_block(j, 2u) * w; }
    if (DV4 > 12u) { r.m3 = r.m3 * a + value_block(j, 3u) * w; }
    if (DV4 > 16u) { r.m4 = r.m4 * a + value_block(j, 4u) * w; }
    if (DV4 > 20u) { r.m5 = r.m5 * a + value_block(j, 5u) * w; }
    if (DV4 > 24u) { r.m6 = r.m6 * a + value_block(j, 6u) * w; }
    if (DV4 > 28u) { r.m7 = r.m7 * a + value_block(j, 7u) * w; }
    return r;
}

// Adds o * f to row r of Ks (or writes it, when first).
fn gather_row(o: Head, f: f32, r: u32, first: bool) {
    var blocks = array<mat4x4<f32>, 8>(o.m0, o.m1, o.m2, o.m3, o.m4, o.m5, o.m6, o.m7);
    for (var c = 0u; c < DV4; c++) {
        let part = blocks[c / 4u][c % 4u] * f;
        if (first) {
            Ks[r * MAX_D4 + c] = part;
        } else {
            Ks[r * MAX_D4 + c] += part;
        }
    }
}

// Masked, scaled score of key j of the tile starting at j0 for query row `row`.
fn score(qh: Head, j0: u32, j: u32, row: u32, mb: u32) -> f32 {
    let key = j0 + j;
    var x = key_dot(qh, j);
    if (MASK_KIND != 0u && key < p.mask_len && row < p.sq) {
        x += mask_at(mb + key * p.m.w);
    }
    if (key >= p.skv || key >= p.mask_len || (CAUSAL && key > row)) {
        x = neg_inf();
    }
    return x;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.y / p.heads;
    let h = wg.y % p.heads;
    let kh = h / p.group;
    let q0 = wg.x * ROWS;
    let split = lid / ROWS;
    let r = lid % ROWS;
    let row = q0 + r;

    let kb = b * p.k.x + kh * p.k.y;
    let vb = b * p.v.x + kh * p.v.y;
    let mb = b * p.m.x + h * p.m.y + row * p.m.z;

    // The scaled query, loaded once (dynamic indexing is fine here).
    var qs: array<vec4<f32>, 32>;
    if (row < p.sq) {
        let qb = b * p.q.x + h * p.q.y + row * p.q.z;
        for (var dd = 0u; dd < p.d; dd++) {
            qs[dd / 4u][dd % 4u] = f32(q[qb + dd * p.q.w]) * p.scale;
        }
    }
    let qh = Head(
        mat4x4<f32>(qs[0], qs[1], qs[2], qs[3]),
        mat4x4<f32>(qs[4], qs[5], qs[6], qs[7]),
        mat4x4<f32>(qs[8], qs[9], qs[10], qs[11]),
        mat4x4<f32>(qs[12], qs[13], qs[14], qs[15]),
        mat4x4<f32>(qs[16], qs[17], qs[18], qs[19]),
        mat4x4<f32>(qs[20], qs[21], qs[22], qs[23]),
        mat4x4<f32>(qs[24], qs[25], qs[26], qs[27]),
        mat4x4<f32>(qs[28], qs[29], qs[30], qs[31]),
    );
    var oh = Head();
    var m = neg_inf();
    var l = 0.0;

    // With CAUSAL, tiles wholly past the workgroup's last row are skipped.
    var end = p.skv;
    if (CAUSAL) {
        end = min(end, q0 + ROWS);
    }
    // Keys are read by blocks of four vec4s: zeros up to the last block's end.
    let kw = ((D4 + 3u) / 4u) * 16u;
    let vw = DV4 * 4u;
    for (var j0 = 0u; j0 < end; j0 += TILE) {
        workgroupBarrier();
        // K along whichever of its axes is contiguous in memory; zeros past
        // the keys and in the padding.
        for (var e = lid; e < TILE * kw; e += 128u) {
            var j: u32;
            var dd: u32;
            if (p.k.z == 1u) {
                j = e % TILE;
                dd = e / TILE;
            } else {
                j = e / kw;
                dd = e % kw;
            }
            var x = 0.0;
            if (j0 + j < p.skv && dd < p.d) {
                x = f32(k[kb + (j0 + j) * p.k.z + dd * p.k.w]);
            }
            Ks[j * MAX_D4 + dd / 4u][dd % 4u] = x;
        }
        for (var e = lid; e < TILE * vw; e += 128u) {
            let j = e / vw;
            let c = e % vw;
            var x = 0.0;
            if (j0 + j < p.skv && c < p.dv) {
                x = f32(v[vb + (j0 + j) * p.v.z + c * p.v.w]);
            }
            Vs[j * MAX_D4 + c / 4u][c % 4u] = x;
        }
        workgroupBarrier();

        let j = split * KEYS;
        let lo = vec4<f32>(score(qh, j0, j, row, mb), score(qh, j0, j + 1u, row, mb),
                           score(qh, j0, j + 2u, row, mb), score(qh, j0, j + 3u, row, mb));
        let hi = vec4<f32>(score(qh, j0, j + 4u, row, mb), score(qh, j0, j + 5u, row, mb),
                           score(qh, j0, j + 6u, row, mb), score(qh, j0, j + 7u, row, mb));
        let tile_max = max(max(max(lo.x, lo.y), max(lo.z, lo.w)), max(max(hi.x, hi.y), max(hi.z, hi.w)));
        let m_new = max(m, tile_max);
        // Exponents against 0 while every key so far is masked: all zero.
        let base = select(m_new, 0.0, m_new == neg_inf());
        let pl = exp(lo - base);
        let ph = exp(hi - base);
        let alpha = exp(m - base);
        l = l * alpha + dot(pl, vec4<f32>(1.0)) + dot(ph, vec4<f32>(1.0));
        oh = add_value(oh, alpha, pl.x, j);
        oh = add_value(oh, 1.0, pl.y, j + 1u);
        oh = add_value(oh, 1.0, pl.z, j + 2u);
        oh = add_value(oh, 1.0, pl.w, j + 3u);
        oh = add_value(oh, 1.0, ph.x, j + 4u);
        oh = add_value(oh, 1.0, ph.y, j + 5u);
        oh = add_value(oh, 1.0, ph.z, j + 6u);
        oh = add_value(oh, 1.0, ph.w, j + 7u);
        m = m_new;
    }

    // Combine the groups: each row's outputs and sums against the largest
    // of its groups' maxima.
    workgroupBarrier();
    Vs[split * ROWS + r] = vec4<f32>(m, l, 0.0, 0.0);
    workgroupBarrier();
    var top = neg_inf();
    for (var g = 0u; g < SPLITS; g++) {
        top = max(top, Vs[g * ROWS + r].x);
    }
    let base = select(top, 0.0, top == neg_inf());
    var total = 0.0;
    for (var g = 0u; g < SPLITS; g++) {
        let st = Vs[g * ROWS + r];
        total += exp(st.x - base) * st.y;
    }
    let f = exp(m - base);
    for (var g = 0u; g < SPLITS; g++) {
        if (split == g) {
            gather_row(oh, f, r, g == 0u);
        }
        workgroupBarrier();
    }
    if (row >= p.sq) {
        return;
    }
    let ob = b * p.o.x + h * p.o.y + row * p.o.z;
    for (var c = split; c < DV4; c += SPLITS) {
        let y4 = Ks[r * MAX_D4 + c] / total;
        for (var i = 0u; i < 4u; i++) {
            let col = c * 4u + i;
            if (col < p.dv) {
                var y = y4[i];
                if (total == 0.0) {
                    y = select(bitcast<f32>(0x7fc00000u), 0.0, EMPTY_ZERO);
                }
                if (NAN_ZERO && is_nan(total)) {
                    y = 0.0;
                }
                o[ob + col * p.o.w] = T(y);
            }
        }
    }
}
