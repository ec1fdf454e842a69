//! Tensors as the serving protocols carry them: little-endian row-major
//! bytes, and for BYTES (STRING) tensors Triton's serialization, each element
//! a 4-byte little-endian length followed by its bytes. KServe-v2's binary
//! data extension, gRPC's raw contents and Triton's backend API all use it.

use crate::{checked_numel, DType, Error, Result, Tensor};
use std::borrow::Cow;

/// The wire bytes of `t`: its storage, or its serialized strings.
pub fn tensor_bytes(t: &Tensor) -> Result<Cow<'_, [u8]>> {
    if t.dtype() != DType::String {
        return Ok(Cow::Borrowed(t.as_bytes()));
    }
    Ok(Cow::Owned(encode_strings(t.as_strings()?)?))
}

/// A tensor of `dtype` and `shape` from its wire bytes.
pub fn tensor_from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor> {
    if dtype != DType::String {
        return Tensor::from_bytes(dtype, shape, bytes);
    }
    let n = checked_numel(&shape)?;
    Tensor::from_strings(shape, decode_strings(bytes, n)?)
}

/// Serializes strings, each as its u32 little-endian length and its bytes.
pub fn encode_strings(strings: &[Vec<u8>]) -> Result<Vec<u8>> {
    let total = strings
        .iter()
        .try_fold(0usize, |n, s| n.checked_add(4)?.checked_add(s.len()))
        .ok_or_else(|| Error::TooLarge("serialized BYTES tensor".into()))?;
    let mut out = Vec::new();
    out.try_reserve_exact(total)
        .map_err(|_| Error::OutOfMemory { bytes: total })?;
    for s in strings {
        let len = u32::try_from(s.len()).map_err(|_| {
            Error::TooLarge(format!(
                "a BYTES element of {} bytes (the wire format holds at most 4 GiB per element)",
                s.len()
            ))
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s);
    }
    Ok(out)
}

/// Reads exactly `count` serialized strings that fill `bytes`.
pub fn decode_strings(bytes: &[u8], count: usize) -> Result<Vec<Vec<u8>>> {
    // Each element takes at least its 4-byte length: a count beyond that is a lie.
    if count > bytes.len() / 4 {
        return Err(Error::Invalid(format!(
            "{} bytes cannot hold {count} serialized BYTES elements (each takes a 4-byte length)",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    let mut rest = bytes;
    for i in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(Error::Invalid(format!(
                "BYTES element {i} of {count}: the data ends inside its 4-byte length"
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(Error::Invalid(format!(
                "BYTES element {i} of {count} declares {len} bytes but {} remain",
                tail.len()
            )));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(Error::Invalid(format!(
            "{} bytes are left after the {count} BYTES elements the shape holds",
            rest.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_in_tritons_layout() {
        let s = vec![b"ab".to_vec(), Vec::new(), "é".as_bytes().to_vec()];
        let wire = encode_strings(&s).unwrap();
        // Written out by hand from Triton's layout (u32 LE length, then the bytes).
        assert_eq!(
            wire,
            [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0, 2, 0, 0, 0, 0xc3, 0xa9]
        );
        assert_eq!(decode_strings(&wire, 3).unwrap(), s);
        let t = tensor_from_bytes(DType::String, vec![3, 1], &wire).unwrap();
        assert_eq!(tensor_bytes(&t).unwrap().as_ref(), &wire[..]);
    }

    #[test]
    fn malformed_data_is_refused_with_the_reason() {
        let msg = |b: &[u8], n| decode_strings(b, n).unwrap_err().to_string();
        assert!(msg(&[5, 0, 0, 0, b'a'], 1).contains("declares 5 bytes"));
        assert!(msg(&[1, 0, 0, 0, b'a', 9], 1).contains("left after"));
        assert!(msg(&[0, 0, 0, 0], 2).contains("cannot hold 2"));
        assert!(msg(&[0, 0, 0, 0, 0, 0], 1).contains("left after"));
        assert!(msg(&[0; 8], usize::MAX).contains("cannot hold"));
    }
}
