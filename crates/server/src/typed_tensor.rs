//! Tensor data in gRPC's typed `InferTensorContents` lists.

use crate::error::{ServerError, ServerResult};
use crate::pb::InferTensorContents;
use metal_mps::{BoolByte, DType, Tensor};

/// Builds a tensor of `dtype` and `shape` from the typed list KServe-v2
/// assigns to `dtype`. FP16 has none: it must come as raw contents.
pub fn tensor_from_contents(
    name: &str,
    dtype: DType,
    shape: Vec<usize>,
    c: &InferTensorContents,
) -> ServerResult<Tensor> {
    let numel = crate::request::element_count(name, &shape)?;
    let count = |n: usize, list: &str| {
        if n == numel {
            Ok(())
        } else {
            Err(ServerError::invalid_arg(format!(
                "unexpected number of elements for input '{name}': shape {shape:?} needs {numel}, \
                 {list} holds {n}"
            )))
        }
    };
    let range = |v: i64| {
        ServerError::invalid_arg(format!(
            "input '{name}': {v} is out of range for {}",
            dtype.kserve_name()
        ))
    };
    let t = match dtype {
        DType::F32 => {
            count(c.fp32_contents.len(), "fp32_contents")?;
            Tensor::from_slice(shape, &c.fp32_contents)
        }
        DType::I64 => {
            count(c.int64_contents.len(), "int64_contents")?;
            Tensor::from_slice(shape, &c.int64_contents)
        }
        DType::I32 => {
            count(c.int_contents.len(), "int_contents")?;
            Tensor::from_slice(shape, &c.int_contents)
        }
        DType::I16 => {
            count(c.int_contents.len(), "int_contents")?;
            let v = c
                .int_contents
                .iter()
                .map(|&x| i16::try_from(x).map_err(|_| range(x.into())))
                .collect::<ServerResult<Vec<_>>>()?;
            Tensor::from_vec(shape, v)
        }
        DType::I8 => {
            count(c.int_contents.len(), "int_contents")?;
            let v = c
                .int_contents
                .iter()
                .map(|&x| i8::try_from(x).map_err(|_| range(x.into())))
                .collect::<ServerResult<Vec<_>>>()?;
            Tensor::from_vec(shape, v)
        }
        DType::U8 => {
            count(c.uint_contents.len(), "uint_contents")?;
            let v = c
                .uint_contents
                .iter()
                .map(|&x| u8::try_from(x).map_err(|_| range(x.into())))
                .collect::<ServerResult<Vec<_>>>()?;
            Tensor::from_vec(shape, v)
        }
        DType::Bool => {
            count(c.bool_contents.len(), "bool_contents")?;
            let v: Vec<BoolByte> = c.bool_contents.iter().map(|&b| BoolByte(b as u8)).collect();
            Tensor::from_vec(shape, v)
        }
        DType::U16 => {
            count(c.uint_contents.len(), "uint_contents")?;
            let v = c
                .uint_contents
                .iter()
                .map(|&x| u16::try_from(x).map_err(|_| range(x.into())))
                .collect::<ServerResult<Vec<_>>>()?;
            Tensor::from_vec(shape, v)
        }
        DType::U32 => {
            count(c.uint_contents.len(), "uint_contents")?;
            Tensor::from_slice(shape, &c.uint_contents)
        }
        DType::U64 => {
            count(c.uint64_contents.len(), "uint64_contents")?;
            Tensor::from_slice(shape, &c.uint64_contents)
        }
        DType::F64 => {
            count(c.fp64_contents.len(), "fp64_contents")?;
            Tensor::from_slice(shape, &c.fp64_contents)
        }
        DType::String => {
            count(c.bytes_contents.len(), "bytes_contents")?;
            Tensor::from_strings(shape, c.bytes_contents.iter().map(|b| b.to_vec()).collect())
        }
        DType::F16 | DType::BF16 => {
            return Err(ServerError::invalid_arg(format!(
                "input '{name}': {} has no typed contents; send it in raw_input_contents",
                dtype.kserve_name()
            )))
        }
        d => {
            return Err(ServerError::invalid_arg(format!(
                "input '{name}': {d} tensors have no KServe-v2 data type"
            )))
        }
    };
    Ok(t?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lists_decode() {
        let c = InferTensorContents {
            int_contents: vec![1, -2, 3],
            ..Default::default()
        };
        let t = tensor_from_contents("x", DType::I8, vec![3], &c).unwrap();
        assert_eq!(t.to_f64_vec(), vec![1.0, -2.0, 3.0]);
        assert!(tensor_from_contents("x", DType::I32, vec![2], &c).is_err());
        let big = InferTensorContents {
            int_contents: vec![1000],
            ..Default::default()
        };
        assert!(tensor_from_contents("x", DType::I8, vec![1], &big).is_err());
    }

    #[test]
    fn bytes_contents_decode_as_strings() {
        let c = InferTensorContents {
            bytes_contents: vec!["ab".into(), "".into()],
            ..Default::default()
        };
        let t = tensor_from_contents("x", DType::String, vec![2, 1], &c).unwrap();
        assert_eq!(t.as_strings().unwrap(), [b"ab".to_vec(), Vec::new()]);
        assert!(tensor_from_contents("x", DType::String, vec![3], &c).is_err());
    }
}
