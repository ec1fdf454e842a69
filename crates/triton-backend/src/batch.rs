//! The FFI-free part of execution: checking one request's tensors against the
//! configuration, grouping requests that can run as one batch, and cutting a
//! batched output back into per-request pieces.

use crate::error::{BackendError, Result};
use crate::ffi;
use metal_mps::DType;
use metal_mps_model_config::TensorConfig;
use std::ops::Range;

/// Triton's data type code for a metal_mps element type.
pub fn triton_dtype(d: DType) -> ffi::TRITONSERVER_DataType {
    match d {
        DType::F32 => ffi::TRITONSERVER_TYPE_FP32,
        DType::F16 => ffi::TRITONSERVER_TYPE_FP16,
        DType::I8 => ffi::TRITONSERVER_TYPE_INT8,
        DType::I16 => ffi::TRITONSERVER_TYPE_INT16,
        DType::I32 => ffi::TRITONSERVER_TYPE_INT32,
        DType::I64 => ffi::TRITONSERVER_TYPE_INT64,
        DType::U8 => ffi::TRITONSERVER_TYPE_UINT8,
        DType::Bool => ffi::TRITONSERVER_TYPE_BOOL,
        DType::F64 => ffi::TRITONSERVER_TYPE_FP64,
        DType::BF16 => ffi::TRITONSERVER_TYPE_BF16,
        DType::U16 => ffi::TRITONSERVER_TYPE_UINT16,
        DType::U32 => ffi::TRITONSERVER_TYPE_UINT32,
        DType::U64 => ffi::TRITONSERVER_TYPE_UINT64,
        DType::String => ffi::TRITONSERVER_TYPE_BYTES,
        // The 8-, 4- and 2-bit types have no Triton data type: such model
        // inputs and outputs are refused when the configuration is validated.
        _ => ffi::TRITONSERVER_TYPE_INVALID,
    }
}

/// Triton's name of a data type code, for messages (`FP32`, `BYTES`, ...).
pub fn triton_dtype_name(code: ffi::TRITONSERVER_DataType) -> &'static str {
    const NAMES: [&str; 15] = [
        "INVALID", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
        "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// One input of one request as Triton describes it.
#[derive(Clone, Debug)]
pub struct InputDesc {
    pub dtype: ffi::TRITONSERVER_DataType,
    pub shape: Vec<i64>,
    pub byte_size: u64,
}

/// Checks a request's input against its configuration entry and returns the
/// shape to run with. `max_batch_size > 0` means the first dimension is the
/// request's batch, at most `max_batch_size`.
pub fn check_input(
    config: &TensorConfig,
    dtype: DType,
    max_batch_size: i64,
    input: &InputDesc,
) -> Result<Vec<usize>> {
    let name = &config.name;
    if input.dtype != triton_dtype(dtype) {
        return Err(BackendError::invalid_arg(format!(
            "input '{name}' has data type {} but the model expects {}",
            triton_dtype_name(input.dtype),
            dtype.kserve_name()
        )));
    }
    let batched = max_batch_size > 0;
    let expected = || {
        let dims: Vec<String> = config
            .dims
            .iter()
            .map(|d| if *d < 0 { "-1".into() } else { d.to_string() })
            .collect();
        if batched {
            format!("[batch (1..={max_batch_size}), {}]", dims.join(", "))
        } else {
            format!("[{}]", dims.join(", "))
        }
    };
    let dims = if batched {
        input.shape.get(1..)
    } else {
        Some(&input.shape[..])
    };
    let matches = dims.is_some_and(|dims| {
        dims.len() == config.dims.len()
            && dims
                .iter()
                .zip(&config.dims)
                .all(|(&d, &c)| d >= 0 && (c < 0 || c == d))
    });
    let batch_ok = !batched
        || input
            .shape
            .first()
            .is_some_and(|&b| b >= 1 && b <= max_batch_size);
    if !matches || !batch_ok {
        return Err(BackendError::invalid_arg(format!(
            "input '{name}' has shape {:?} but the model expects {}",
            input.shape,
            expected()
        )));
    }
    let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
    let need = metal_mps_ir::checked_bytes(dtype, &shape)
        .map_err(|e| BackendError::invalid_arg(format!("input '{name}': {e}")))?;
    // BYTES elements vary in length: their data is checked as it is decoded.
    if dtype != DType::String && input.byte_size != need as u64 {
        return Err(BackendError::invalid_arg(format!(
            "input '{name}' carries {} bytes but shape {:?} of {} needs {need}",
            input.byte_size,
            input.shape,
            dtype.kserve_name()
        )));
    }
    Ok(shape)
}

/// Splits requests into groups that run as one batch: with batching, requests
/// whose inputs agree on every dimension after the first (in order of first
/// appearance); without, one group per request. `shapes[r]` holds request r's
/// input shapes; `None` marks a request that will not run.
pub fn group(shapes: &[Option<&[Vec<usize>]>], batched: bool) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (r, s) in shapes.iter().enumerate() {
        let Some(s) = s else { continue };
        let joins = |g: &Vec<usize>| {
            let first = shapes[g[0]].expect("groups hold only running requests");
            batched
                && first
                    .iter()
                    .zip(s.iter())
                    .all(|(a, b)| a.get(1..) == b.get(1..))
        };
        match groups.iter_mut().find(|g| joins(g)) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups
}

/// The byte range and shape of each request's rows in a batched output of
/// `shape` (`shape[0]` is the sum of `batches`) whose elements take `elem` bytes.
pub fn split_rows(
    name: &str,
    shape: &[usize],
    elem: usize,
    batches: &[usize],
) -> Result<Vec<(Range<usize>, Vec<usize>)>> {
    let total: usize = batches.iter().sum();
    if shape.first() != Some(&total) {
        return Err(BackendError::internal(format!(
            "model output '{name}' has shape {shape:?}, whose first dimension should be the batch of {total}"
        )));
    }
    let row: usize = shape[1..].iter().product::<usize>() * elem;
    let mut start = 0;
    Ok(batches
        .iter()
        .map(|&b| {
            let mut s = shape.to_vec();
            s[0] = b;
            let range = start..start + b * row;
            start = range.end;
            (range, s)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dims: &[i64]) -> TensorConfig {
        TensorConfig {
            name: "input".into(),
            data_type: "TYPE_FP32".into(),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    fn desc(dtype: ffi::TRITONSERVER_DataType, shape: &[i64]) -> InputDesc {
        let n: i64 = shape.iter().product();
        InputDesc {
            dtype,
            shape: shape.to_vec(),
            byte_size: (n.max(0) * 4) as u64,
        }
    }

    #[test]
    fn good_inputs_pass() {
        let c = cfg(&[3, -1]);
        assert_eq!(
            check_input(
                &c,
                DType::F32,
                8,
                &desc(ffi::TRITONSERVER_TYPE_FP32, &[2, 3, 5])
            )
            .unwrap(),
            vec![2, 3, 5]
        );
        assert_eq!(
            check_input(
                &c,
                DType::F32,
                0,
                &desc(ffi::TRITONSERVER_TYPE_FP32, &[3, 7])
            )
            .unwrap(),
            vec![3, 7]
        );
    }

    #[test]
    fn wrong_dtype_shape_batch_or_size_are_invalid_arg() {
        let c = cfg(&[3, 4]);
        let check = |d: InputDesc| check_input(&c, DType::F32, 4, &d).unwrap_err();
        let e = check(desc(ffi::TRITONSERVER_TYPE_INT64, &[1, 3, 4]));
        assert_eq!(e.code, ffi::TRITONSERVER_ERROR_INVALID_ARG);
        assert_eq!(
            e.message,
            "input 'input' has data type INT64 but the model expects FP32"
        );
        let e = check(desc(ffi::TRITONSERVER_TYPE_FP32, &[1, 3, 5]));
        assert_eq!(
            e.message,
            "input 'input' has shape [1, 3, 5] but the model expects [batch (1..=4), 3, 4]"
        );
        assert!(check(desc(ffi::TRITONSERVER_TYPE_FP32, &[5, 3, 4]))
            .message
            .contains("batch (1..=4)"));
        assert!(check(desc(ffi::TRITONSERVER_TYPE_FP32, &[0, 3, 4]))
            .message
            .contains("shape [0, 3, 4]"));
        assert!(check(desc(ffi::TRITONSERVER_TYPE_FP32, &[3, 4]))
            .message
            .contains("shape [3, 4]"));
        let mut short = desc(ffi::TRITONSERVER_TYPE_FP32, &[1, 3, 4]);
        short.byte_size -= 4;
        assert_eq!(
            check(short).message,
            "input 'input' carries 44 bytes but shape [1, 3, 4] of FP32 needs 48"
        );
        let neg = check_input(
            &cfg(&[-1]),
            DType::F32,
            0,
            &desc(ffi::TRITONSERVER_TYPE_FP32, &[-3]),
        )
        .unwrap_err();
        assert!(neg.message.contains("[-3]"));
    }

    #[test]
    fn grouping_by_trailing_shape() {
        let a = vec![vec![1, 3, 4]];
        let b = vec![vec![2, 3, 4]];
        let c = vec![vec![1, 3, 5]];
        let shapes: Vec<Option<&[Vec<usize>]>> = vec![Some(&a), None, Some(&b), Some(&c), Some(&a)];
        assert_eq!(group(&shapes, true), vec![vec![0, 2, 4], vec![3]]);
        assert_eq!(
            group(&shapes, false),
            vec![vec![0], vec![2], vec![3], vec![4]]
        );
        assert!(group(&[None, None], true).is_empty());
    }

    #[test]
    fn rows_split_by_batch() {
        let parts = split_rows("y", &[3, 2, 2], 4, &[1, 2]).unwrap();
        assert_eq!(parts, vec![(0..16, vec![1, 2, 2]), (16..48, vec![2, 2, 2])]);
        let e = split_rows("y", &[4, 2], 4, &[1, 2]).unwrap_err();
        assert!(e.message.contains("batch of 3"), "{e}");
    }

    #[test]
    fn dtype_codes_round_trip_names() {
        for d in DType::ALL.into_iter().filter(|&d| d.has_protocol_type()) {
            assert_eq!(triton_dtype_name(triton_dtype(d)), d.kserve_name());
        }
        assert_eq!(triton_dtype_name(99), "UNKNOWN");
    }
}
