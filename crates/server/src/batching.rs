//! Merging the tensors of several requests along the batch (first)
//! dimension, and splitting a batched result back.

use crate::error::{ServerError, ServerResult};
use metal_mps::Tensor;

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
    let row_bytes = t.as_bytes().len() / total.max(1);
    let mut pieces = Vec::with_capacity(rows.len());
    let mut offset = 0;
    for &r in rows {
        let mut piece_shape = shape.to_vec();
        piece_shape[0] = r;
        let end = offset + r * row_bytes;
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
    fn split_refuses_a_non_batch_output() {
        let t = Tensor::from_vec(vec![4], vec![0f32; 4]).unwrap();
        assert!(split_batch(&t, &[1, 2], "y").is_err());
    }
}
