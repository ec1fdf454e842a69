//! StringSplit (opset 20): splits every string like Python's `str.split`, pads
//! the rows with empty strings to the longest, and counts the pieces.

use crate::support::{arg, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct StringSplit {
    /// `None` (attribute absent or empty): split on runs of whitespace.
    delimiter: Option<Vec<u8>>,
    /// The most splits from the left; `None` is unlimited.
    maxsplit: Option<usize>,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let delimiter = cx.attrs.bytes("delimiter")?.filter(|d| !d.is_empty());
    // Python's split treats a negative maxsplit as unlimited.
    let maxsplit = cx
        .attrs
        .opt_int("maxsplit")?
        .and_then(|m| usize::try_from(m).ok());
    Ok(Op::Dyn(DynOp::new(StringSplit {
        delimiter,
        maxsplit,
    })))
}

/// Python's `str.isspace` for one character (it includes the ASCII
/// separators 0x1C-0x1F, which Rust's `is_whitespace` does not).
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `s.split()` / `s.split(None, maxsplit)`: runs of whitespace separate, and
/// no piece is empty; the last piece keeps its trailing whitespace.
fn split_whitespace(s: &str, maxsplit: Option<usize>) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut rest = s.trim_start_matches(is_space);
    while !rest.is_empty() {
        if maxsplit.is_some_and(|m| parts.len() == m) {
            parts.push(rest.as_bytes().to_vec());
            break;
        }
        let end = rest.find(is_space).unwrap_or(rest.len());
        parts.push(rest.as_bytes()[..end].to_vec());
        rest = rest[end..].trim_start_matches(is_space);
    }
    parts
}

/// `s.split(delimiter, maxsplit)`: every occurrence separates, so pieces may be empty.
fn split_on(s: &[u8], delimiter: &[u8], maxsplit: Option<usize>) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + delimiter.len() <= s.len() {
        if maxsplit.is_some_and(|m| parts.len() == m) {
            break;
        }
        if &s[i..i + delimiter.len()] == delimiter {
            parts.push(s[start..i].to_vec());
            i += delimiter.len();
            start = i;
        } else {
            i += 1;
        }
    }
    parts.push(s[start..].to_vec());
    parts
}

impl StringSplit {
    fn split(&self, s: &[u8]) -> Vec<Vec<u8>> {
        match &self.delimiter {
            Some(d) => split_on(s, d, self.maxsplit),
            None => split_whitespace(&String::from_utf8_lossy(s), self.maxsplit),
        }
    }
}

impl Operator for StringSplit {
    fn name(&self) -> &str {
        "StringSplit"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if x.dtype != DType::String {
            return metal_mps_ir::invalid!("StringSplit takes STRING, not {}", x.dtype);
        }
        let shape = x.shape.map(<[Dim]>::to_vec);
        let y = shape.clone().map(|mut s| {
            s.push(Dim::Unknown);
            s
        });
        Ok(vec![(DType::String, y), (DType::I64, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let pieces: Vec<Vec<Vec<u8>>> = x.as_strings()?.iter().map(|s| self.split(s)).collect();
        let width = pieces.iter().map(Vec::len).max().unwrap_or(0);
        let counts: Vec<i64> = pieces.iter().map(|p| p.len() as i64).collect();
        let total = pieces
            .len()
            .checked_mul(width)
            .ok_or_else(|| metal_mps_ir::Error::TooLarge("StringSplit output".into()))?;
        let mut y = metal_mps_ir::limits::try_vec::<Vec<u8>>(total)?;
        for (row, p) in y.chunks_mut(width.max(1)).zip(pieces) {
            for (slot, piece) in row.iter_mut().zip(p) {
                *slot = piece;
            }
        }
        let mut shape = x.shape().to_vec();
        shape.push(width);
        Ok(vec![
            Tensor::from_strings(shape, y)?,
            Tensor::from_vec(x.shape().to_vec(), counts)?,
        ])
    }

    fn takes_strings(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    // Expected values are Python's own `str.split` results.
    #[test]
    fn splits_like_python() {
        assert_eq!(
            split_whitespace("  a b\t\nc ", None),
            strs(&["a", "b", "c"])
        );
        assert_eq!(split_whitespace(" a b c ", Some(1)), strs(&["a", "b c "]));
        assert_eq!(split_whitespace("   ", None), strs(&[]));
        assert_eq!(split_whitespace("a\u{1f}b", None), strs(&["a", "b"]));
        assert_eq!(split_on(b"a,,b,", b",", None), strs(&["a", "", "b", ""]));
        assert_eq!(split_on(b"a,b,c", b",", Some(1)), strs(&["a", "b,c"]));
        assert_eq!(split_on(b"", b",", None), strs(&[""]));
        assert_eq!(split_on(b"a--b---c", b"--", None), strs(&["a", "b", "-c"]));
    }
}
