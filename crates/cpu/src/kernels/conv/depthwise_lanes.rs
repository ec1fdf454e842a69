//! Depthwise convolutions on small planes with 16 channels in the lanes of
//! an AVX-512 vector (onnxruntime's NCHWc layout, for one kernel).
//!
//! On a plane of a few hundred pixels the plane-by-plane kernel
//! ([`super::depthwise`]) spends more on each plane's padded copy, partial
//! chunks and epilogue than on its multiply-adds: 3-4× onnxruntime's time on
//! MobileNetV2's 7×7 and 14×14 layers. Here a task takes 16 channels of one
//! image: 16×16 transposes copy their planes into a zero-padded buffer of
//! pixels, each pixel 16 channels wide; every output pixel is then one vector
//! of 16 channels, summed over the taps with each tap's 16 weights as one
//! vector, finished in registers, and transposed back into the 16 output
//! planes.

use super::Geometry;
use crate::kernels::packed::Finish;
use crate::kernels::vector::avx512_allowed;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Channels per vector, and per task.
pub(super) const LANES: usize = 16;

/// Output pixels per plane up to which the lanes kernel runs (the padded
/// buffer of 16-channel pixels stays within the L2 cache).
const MAX_PIXELS: usize = 32 * 32;

/// A task's memory, kept by each thread.
#[derive(Default)]
struct Scratch {
    /// The padded input, pixels of 16 channels.
    padded: Vec<f32>,
    /// What decides which elements of `padded` are padding, zeroed for: the
    /// input plane's size, the top and left pads, the padded size.
    held: Option<[usize; 6]>,
    /// The output pixels.
    out: Vec<f32>,
    /// Each tap's 16 weights.
    weights: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Whether this CPU runs the lanes kernel on `g` (multiplier 1, no residual):
/// the planes are small and there is at least one full group of channels.
pub(super) fn fits(g: &Geometry, residual: bool) -> bool {
    g.m == g.c
        && g.c >= LANES
        && !residual
        && g.oh * g.ow <= MAX_PIXELS
        && g.h * g.w <= 4 * MAX_PIXELS
        && avx512_allowed()
}

/// The rows and columns of the padded input that the windows read.
fn padded_size(g: &Geometry) -> (usize, usize) {
    let rows = (g.oh - 1) * g.stride[0] + (g.kh - 1) * g.dilation[0] + 1;
    let cols = (g.ow - 1) * g.stride[1] + (g.kw - 1) * g.dilation[1] + 1;
    (rows, cols)
}

/// Channels `c0..c0 + 16` of image `n`: input planes `x` (`[N, C, h, w]`),
/// weights `w` (`[C, kH·kW]`), into output planes `y` (`[N, C, oh, ow]`),
/// with the bias and `finish` applied.
///
/// # Safety
/// [`fits`] holds for `g`; `y` is valid for writes of these 16 planes, which
/// no other task touches during the call.
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn channels(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    finish: &Finish,
    n: usize,
    c0: usize,
    y: *mut f32,
) {
    let (hw, ohw, khw) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let (rows, cols) = padded_size(g);
    let key = [g.h, g.w, g.pad[0], g.pad[1], rows, cols];
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Scratch {
            padded,
            held,
            out,
            weights,
        } = &mut *scratch;
        // The padding is the same for every task of a geometry: zeroed once.
        if *held != Some(key) {
            padded.clear();
            padded.resize(rows * cols * LANES, 0.0);
            *held = Some(key);
        }
        out.resize(ohw * LANES, 0.0);
        weights.resize(khw * LANES, 0.0);
        gather_taps(&w[c0 * khw..][..LANES * khw], khw, weights.as_mut_ptr());
        let planes = x[(n * g.c + c0) * hw..][..LANES * hw].as_ptr();
        gather_pixels(g, planes, padded.as_mut_ptr(), cols, rows);
        let bias = bias.map_or(_mm512_setzero_ps(), |b| _mm512_loadu_ps(b[c0..].as_ptr()));
        sum_taps(
            g,
            padded.as_ptr(),
            cols,
            weights.as_ptr(),
            bias,
            finish,
            out.as_mut_ptr(),
        );
        let y = y.add((n * g.c + c0) * ohw);
        scatter_planes(out.as_ptr(), ohw, y);
        if finish.clamp_only().is_none() {
            for l in 0..LANES {
                finish.apply(std::slice::from_raw_parts_mut(y.add(l * ohw), ohw));
            }
        }
    })
}

/// Transposes the 16 channels' weights `w` (`khw` taps each) into each
/// tap's 16 weights at `weights`.
#[target_feature(enable = "avx512f")]
unsafe fn gather_taps(w: &[f32], khw: usize, weights: *mut f32) {
    let mut block = [_mm512_setzero_ps(); LANES];
    for t0 in (0..khw).step_by(LANES) {
        let len = LANES.min(khw - t0);
        let mask = lanes_mask(len);
        for (l, v) in block.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask, w.as_ptr().add(l * khw + t0));
        }
        transpose(&mut block);
        for (j, v) in block.iter().enumerate().take(len) {
            _mm512_storeu_ps(weights.add((t0 + j) * LANES), *v);
        }
    }
}

/// Transposes the 16 planes at `planes` (`h·w` floats each) into pixels of
/// 16 channels at their padded positions in `padded` (`rows×cols` pixels).
#[target_feature(enable = "avx512f")]
unsafe fn gather_pixels(
    g: &Geometry,
    planes: *const f32,
    padded: *mut f32,
    cols: usize,
    rows: usize,
) {
    let hw = g.h * g.w;
    let mut block = [_mm512_setzero_ps(); LANES];
    // The input pixel (iy, ix) of the block's next pixel.
    let (mut iy, mut ix) = (0, 0);
    for p0 in (0..hw).step_by(LANES) {
        let len = LANES.min(hw - p0);
        let mask = lanes_mask(len);
        for (l, v) in block.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask, planes.add(l * hw + p0));
        }
        transpose(&mut block);
        for v in block.iter().take(len) {
            let (py, px) = (iy + g.pad[0], ix + g.pad[1]);
            if py < rows && px < cols {
                _mm512_storeu_ps(padded.add((py * cols + px) * LANES), *v);
            }
            ix += 1;
            if ix == g.w {
                (iy, ix) = (iy + 1, 0);
            }
        }
    }
}

/// Each output pixel's sum over the taps, plus `bias`, clamped when the
/// activation is a clamp, into `out` (`oh·ow` pixels of 16 channels).
#[target_feature(enable = "avx512f,fma")]
unsafe fn sum_taps(
    g: &Geometry,
    padded: *const f32,
    cols: usize,
    weights: *const f32,
    bias: __m512,
    finish: &Finish,
    out: *mut f32,
) {
    let (lo, hi) = finish
        .clamp_only()
        .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let run = Run {
        g,
        padded,
        cols,
        weights,
        bias,
        lo: _mm512_set1_ps(lo),
        hi: _mm512_set1_ps(hi),
        out,
    };
    for oy in 0..g.oh {
        // Eight pixels at a time keep both FMA units busy (each sum waits on
        // its last multiply-add); the rest of the row in one go.
        let mut ox = 0;
        while ox + 8 <= g.ow {
            run.pixels::<8>(oy, ox);
            ox += 8;
        }
        match g.ow - ox {
            0 => {}
            1 => run.pixels::<1>(oy, ox),
            2 => run.pixels::<2>(oy, ox),
            3 => run.pixels::<3>(oy, ox),
            4 => run.pixels::<4>(oy, ox),
            5 => run.pixels::<5>(oy, ox),
            6 => run.pixels::<6>(oy, ox),
            _ => run.pixels::<7>(oy, ox),
        }
    }
}

/// What [`sum_taps`] reads and writes.
struct Run<'a> {
    g: &'a Geometry,
    padded: *const f32,
    cols: usize,
    weights: *const f32,
    bias: __m512,
    lo: __m512,
    hi: __m512,
    out: *mut f32,
}

impl Run<'_> {
    /// Output pixels `ox..ox + P` of row `oy`.
    #[inline(always)]
    unsafe fn pixels<const P: usize>(&self, oy: usize, ox: usize) {
        let g = self.g;
        let [sy, sx] = g.stride;
        let [dy, dx] = g.dilation;
        let corner = self.padded.add((oy * sy * self.cols + ox * sx) * LANES);
        let mut acc = [_mm512_setzero_ps(); P];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let wv = _mm512_loadu_ps(self.weights.add((ky * g.kw + kx) * LANES));
                let tap = corner.add((ky * dy * self.cols + kx * dx) * LANES);
                for (i, a) in acc.iter_mut().enumerate() {
                    let v = _mm512_loadu_ps(tap.add(i * sx * LANES));
                    *a = _mm512_fmadd_ps(wv, v, *a);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // `max(lo, v)`, then `min(hi, ·)`, keep NaN, as the other kernels' clamp does.
            let v = _mm512_add_ps(*a, self.bias);
            let v = _mm512_min_ps(self.hi, _mm512_max_ps(self.lo, v));
            _mm512_storeu_ps(self.out.add((oy * g.ow + ox + i) * LANES), v);
        }
    }
}

/// Transposes `ohw` pixels of 16 channels at `out` into 16 planes at `y`.
#[target_feature(enable = "avx512f")]
unsafe fn scatter_planes(out: *const f32, ohw: usize, y: *mut f32) {
    let mut block = [_mm512_setzero_ps(); LANES];
    for q0 in (0..ohw).step_by(LANES) {
        let len = LANES.min(ohw - q0);
        for (j, v) in block.iter_mut().enumerate() {
            *v = match j < len {
                true => _mm512_loadu_ps(out.add((q0 + j) * LANES)),
                false => _mm512_setzero_ps(),
            };
        }
        transpose(&mut block);
        let mask = lanes_mask(len);
        for (l, v) in block.iter().enumerate() {
            _mm512_mask_storeu_ps(y.add(l * ohw + q0), mask, *v);
        }
    }
}

/// The first `len` lanes.
fn lanes_mask(len: usize) -> __mmask16 {
    ((1u32 << len) - 1) as __mmask16
}

/// Transposes 16 vectors of 16 floats in place: lane `j` of vector `i`
/// becomes lane `i` of vector `j`.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(r: &mut [__m512; LANES]) {
    // Pairs of rows interleaved, then quads, within each 128-bit block: after
    // this, vector 4q + k holds, in block b, element 4b + k of rows 4q..4q + 4.
    let mut t = [_mm512_setzero_ps(); LANES];
    for i in 0..LANES / 2 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for q in 0..LANES / 4 {
        let (a, b, c, d) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
        r[4 * q] = _mm512_shuffle_ps::<0x44>(a, c);
        r[4 * q + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
        r[4 * q + 2] = _mm512_shuffle_ps::<0x44>(b, d);
        r[4 * q + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
    }
    // Then the 128-bit blocks: blocks 0 and 2 or 1 and 3 of two vectors,
    // twice, bring the four quads of a column together.
    for k in 0..4 {
        t[k] = _mm512_shuffle_f32x4::<0x88>(r[k], r[k + 4]);
        t[k + 4] = _mm512_shuffle_f32x4::<0xDD>(r[k], r[k + 4]);
        t[k + 8] = _mm512_shuffle_f32x4::<0x88>(r[k + 8], r[k + 12]);
        t[k + 12] = _mm512_shuffle_f32x4::<0xDD>(r[k + 8], r[k + 12]);
    }
    for k in 0..8 {
        r[k] = _mm512_shuffle_f32x4::<0x88>(t[k], t[k + 8]);
        r[k + 8] = _mm512_shuffle_f32x4::<0xDD>(t[k], t[k + 8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_matches_the_scalar_transpose() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let m: Vec<f32> = (0..LANES * LANES).map(|i| i as f32).collect();
        let mut got = vec![0f32; LANES * LANES];
        // SAFETY: the CPU has AVX-512; every pointer covers 16 floats.
        unsafe {
            let mut r = [_mm512_setzero_ps(); LANES];
            for (i, v) in r.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(m[i * LANES..].as_ptr());
            }
            transpose(&mut r);
            for (i, v) in r.iter().enumerate() {
                _mm512_storeu_ps(got[i * LANES..].as_mut_ptr(), *v);
            }
        }
        for i in 0..LANES {
            for j in 0..LANES {
                assert_eq!(got[j * LANES + i], m[i * LANES + j], "element ({i}, {j})");
            }
        }
    }
}
