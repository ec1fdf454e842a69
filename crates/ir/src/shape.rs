//! Shapes whose dimensions may be symbolic (a dynamic batch, say).

use std::fmt;

/// One dimension of a value's shape as known before running.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named size bound at run time (`batch`, `N`, ...); equal names are equal sizes.
    Sym(String),
    /// Not known until run time.
    Unknown,
}

impl Dim {
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A shape before running: `None` when even the rank is unknown.
pub type Shape = Vec<Dim>;

/// All dimensions fixed?
pub fn fixed_shape(shape: &[Dim]) -> Option<Vec<usize>> {
    shape.iter().map(Dim::fixed).collect()
}

pub fn from_fixed(shape: &[usize]) -> Shape {
    shape.iter().map(|&d| Dim::Fixed(d)).collect()
}

/// The largest rank a value may have. ONNX sets no limit, but a rank read from
/// a declared size (the length of a shape input) must not size an allocation:
/// numpy stops at 64 too.
pub const MAX_RANK: usize = 64;

/// A shape of `rank` unknown dims, where `rank` comes from model data (the
/// declared length of a shape input); refused beyond [`MAX_RANK`].
pub fn unknown_shape(rank: usize) -> crate::Result<Shape> {
    if rank > MAX_RANK {
        return crate::invalid!(
            "a shape input of {rank} elements gives an output of rank {rank}; \
             the largest rank supported is {MAX_RANK}"
        );
    }
    Ok(vec![Dim::Unknown; rank])
}

/// `[1, batch, 3]` style.
pub fn display_shape(shape: Option<&[Dim]>) -> String {
    match shape {
        None => "[?..]".to_string(),
        Some(s) => format!(
            "[{}]",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// ONNX/numpy multidirectional broadcasting of two fixed shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Broadcasting of symbolic shapes: a fixed 1 yields to the other side, equal
/// dims stay, anything else unknown.
pub fn broadcast_dims(a: &[Dim], b: &[Dim]) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let one = Dim::Fixed(1);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            &a[i + a.len() - rank]
        } else {
            &one
        };
        let db = if i + b.len() >= rank {
            &b[i + b.len() - rank]
        } else {
            &one
        };
        out.push(match (da, db) {
            (x, y) if x == y => x.clone(),
            (Dim::Fixed(1), y) => y.clone(),
            (x, Dim::Fixed(1)) => x.clone(),
            (Dim::Fixed(_), Dim::Fixed(_)) => return None,
            (Dim::Fixed(x), _) | (_, Dim::Fixed(x)) => Dim::Fixed(*x),
            _ => Dim::Unknown,
        });
    }
    Some(out)
}

/// Row-major strides of a shape, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Steps the row-major multi-index `idx` over `shape` to the next element,
/// moving `offset` by `strides` (the offset of each dim's step); after the
/// last element both wrap back to their start.
#[inline]
pub fn step_index(idx: &mut [usize], offset: &mut usize, shape: &[usize], strides: &[usize]) {
    for d in (0..shape.len()).rev() {
        idx[d] += 1;
        *offset += strides[d];
        if idx[d] < shape[d] {
            return;
        }
        *offset -= strides[d] * shape[d];
        idx[d] = 0;
    }
}

/// A strided walk over fewer dims: size-1 dims dropped, and each
/// `(size, stride)` merged into the one before it when the two are contiguous
/// (outer stride = size × stride of the inner). Same elements, same order.
pub fn coalesce(dims: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &(size, stride) in dims.iter().filter(|d| d.0 != 1) {
        match out.last_mut() {
            Some(last) if last.1 == size * stride => *last = (last.0 * size, stride),
            _ => out.push((size, stride)),
        }
    }
    out
}

/// Resolves a possibly negative axis against a rank.
pub fn normalize_axis(axis: i64, rank: usize) -> crate::Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return crate::invalid!("axis {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}
