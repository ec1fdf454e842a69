//! Merging the tensors of several requests along the batch (first)
//! dimension, and splitting a batched result back.

use crate::error::{ServerError, ServerResult};
use metal_mps::{DType, Tensor};

/// Concatenates tensors that agree in dtype and in every dimension but the
/// first (the batcher only groups such requests).
pub fn concat_batch(parts: &[&Tensor]) -> ServerResult<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| ServerError::internal("empty batch"))?;
    let mut shape = first.shape().to_vec();
    if shape.is_empty() {
        return Err(ServerError::internal("cannot batch a scalar tensor"));
    }
    shape[0] = parts.iter().map(|t| t.shape()[0]).sum();
    if first.dtype() == DType::String {
        let mut strings = Vec::new();
        for t in parts {
            strings.extend_from_slice(t.as_strings()?);
        }
        return Ok(Tensor::from_strings(shape, strings)?);
    }
    let mut out = Tensor::zeros(first.dtype(), shape)?;
    let mut offset = 0;
    for t in parts {
        let b = t.as_bytes();
        out.as_bytes_mut()[offset..offset + b.len()].copy_from_slice(b);
        offset += b.len();
    }
    Ok(out)
}

/// Splits `t` along its first dimension into pieces of `rows` rows each.
/// `name` names the output in the error when its first dimension is not the
/// batch (the model does not keep requests apart along it).
pub fn split_batch(t: &Tensor, rows: &[usize], name: &str) -> ServerResult<Vec<Tensor>> {
    let total: usize = rows.iter().sum();
    let shape = t.shape();
    if shape.first() != Some(&total) {
        return Err(ServerError::internal(format!(
            "output '{name}' has shape {shape:?}, whose first dimension is not the batch \
             size {total}: the model cannot be batched (set max_batch_size: 0)"
        )));
    }
    let strings = t.dtype() == DType::String;
    // Bytes per row, or elements per row for STRING tensors.
    let row_len = if strings {
        t.numel()
    } else {
        t.as_bytes().len()
    } / total.max(1);
    let mut pieces = Vec::with_capacity(rows.len());
    let mut offset = 0;
    for &r in rows {
        let mut piece_shape = shape.to_vec();
        piece_shape[0] = r;
        if strings {
            let end = offset + r * row_len;
            pieces.push(Tensor::from_strings(
                piece_shape,
                t.as_strings()?[offset..end].to_vec(),
            )?);
            offset = end;
            continue;
        }
        let end = offset + r * row_len;
        pieces.push(Tensor::from_bytes(
            t.dtype(),
            piece_shape,
            &t.as_bytes()[offset..end],
        )?);
        offset = end;
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_then_split_round_trips() {
        let a = Tensor::from_vec(vec![1, 2], vec![1f32, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![2, 2], vec![3f32, 4.0, 5.0, 6.0]).unwrap();
        let c = concat_batch(&[&a, &b]).unwrap();
        assert_eq!(c.shape(), &[3, 2]);
        let parts = split_batch(&c, &[1, 2], "y").unwrap();
        assert_eq!(parts[0].as_bytes(), a.as_bytes());
        assert_eq!(parts[1].as_bytes(), b.as_bytes());
    }

    #[test]
    fn strings_concat_and_split_by_rows() {
        let s = |v: &[&str]| v.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
        let a = Tensor::from_strings(vec![1, 2], s(&["a", "b"])).unwrap();
        let b = Tensor::from_strings(vec![2, 2], s(&["c", "", "e", "f"])).unwrap();
        let joined = concat_batch(&[&a, &b]).unwrap();
        assert_eq!(joined.shape(), &[3, 2]);
        assert_eq!(
            joined.as_strings().unwrap(),
            s(&["a", "b", "c", "", "e", "f"])
        );
        let parts = split_batch(&joined, &[1, 2], "y").unwrap();
        assert_eq!(parts[0].as_strings().unwrap(), a.as_strings().unwrap());
        assert_eq!(parts[1].as_strings().unwrap(), b.as_strings().unwrap());
        assert_eq!(parts[1].shape(), &[2, 2]);
    }

    #[test]
    fn split_refuses_a_non_batch_output() {
        let t = Tensor::from_vec(vec![4], vec![0f32; 4]).unwrap();
        assert!(split_batch(&t, &[1, 2], "y").is_err());
    }
}
