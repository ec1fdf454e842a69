//! Reading one request: its inputs (possibly split across several buffers)
//! and the outputs it asks for.

use crate::batch::{check_input, InputDesc};
use crate::error::{c_string, owned_str, tri, BackendError, Result};
use crate::ffi;
use crate::model::ModelState;
use metal_mps::DType;

/// What a request brings to the batch. The byte slices point into Triton's
/// buffers and are valid until the request is released.
pub struct RequestData<'r> {
    /// Items in this request (1 when the model does not batch).
    pub batch: usize,
    /// Per model input: the shape to run with.
    pub shapes: Vec<Vec<usize>>,
    /// Per model input: its contents, in order, possibly in several pieces
    /// (none for BYTES inputs, which are decoded into `strings`).
    pub buffers: Vec<Vec<&'r [u8]>>,
    /// Per model input: the elements of a BYTES input, else empty.
    pub strings: Vec<Vec<Vec<u8>>>,
    /// Indices into the model's outputs of the outputs to return.
    pub outputs: Vec<usize>,
}

/// Reads and checks `request` against the model; any error is the request's own (INVALID_ARG mostly).
///
/// # Safety
/// `request` is a live request owned by the backend, and stays unreleased for `'r`.
pub unsafe fn read<'r>(
    model: &ModelState,
    request: *mut ffi::TRITONBACKEND_Request,
) -> Result<RequestData<'r>> {
    let mut count = 0u32;
    tri!(
        "reading the request's input count",
        ffi::TRITONBACKEND_RequestInputCount(request, &mut count)
    )?;
    for i in 0..count {
        let mut name = std::ptr::null();
        tri!(
            "reading a request input name",
            ffi::TRITONBACKEND_RequestInputName(request, i, &mut name)
        )?;
        let name = owned_str(name);
        if !model.inputs.iter().any(|m| m.name == name) {
            return Err(BackendError::invalid_arg(format!(
                "unexpected input '{name}'; the model's inputs are {}",
                quoted(model.inputs.iter().map(|m| m.name.as_str()))
            )));
        }
    }
    let max_batch_size = model.config.max_batch_size;
    let mut data = RequestData {
        batch: 1,
        shapes: Vec::new(),
        buffers: Vec::new(),
        strings: Vec::new(),
        outputs: Vec::new(),
    };
    for (k, info) in model.inputs.iter().enumerate() {
        let config = model
            .config
            .input
            .iter()
            .find(|c| c.name == info.name)
            .expect("validated: every model input is configured");
        let cname = c_string(&info.name);
        let mut input = std::ptr::null_mut();
        if crate::error::check(ffi::TRITONBACKEND_RequestInput(
            request,
            cname.as_ptr(),
            &mut input,
        ))
        .is_err()
            || input.is_null()
        {
            return Err(BackendError::invalid_arg(format!(
                "missing input '{}'",
                info.name
            )));
        }
        let (mut dtype, mut shape, mut dims, mut byte_size, mut buffer_count) =
            (0, std::ptr::null(), 0u32, 0u64, 0u32);
        tri!(
            "reading input properties",
            ffi::TRITONBACKEND_InputProperties(
                input,
                std::ptr::null_mut(),
                &mut dtype,
                &mut shape,
                &mut dims,
                &mut byte_size,
                &mut buffer_count
            )
        )?;
        let shape = if dims == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(shape, dims as usize).to_vec()
        };
        let desc = InputDesc {
            dtype,
            shape,
            byte_size,
        };
        let shape = check_input(config, info.dtype, max_batch_size, &desc)?;
        if max_batch_size > 0 {
            if k == 0 {
                data.batch = shape[0];
            } else if shape[0] != data.batch {
                return Err(BackendError::invalid_arg(format!(
                    "input '{}' has batch size {} but input '{}' has {}",
                    info.name, shape[0], model.inputs[0].name, data.batch
                )));
            }
        }
        let mut pieces = Vec::with_capacity(buffer_count as usize);
        for b in 0..buffer_count {
            let (mut ptr, mut size, mut memory_type, mut memory_type_id) =
                (std::ptr::null(), 0u64, ffi::TRITONSERVER_MEMORY_CPU, 0i64);
            tri!(
                "reading an input buffer",
                ffi::TRITONBACKEND_InputBuffer(
                    input,
                    b,
                    &mut ptr,
                    &mut size,
                    &mut memory_type,
                    &mut memory_type_id
                )
            )?;
            if memory_type == ffi::TRITONSERVER_MEMORY_GPU {
                return Err(BackendError::unsupported(format!(
                    "input '{}' is in CUDA memory, which the metal_mps backend cannot read; send it in system memory",
                    info.name
                )));
            }
            if size > 0 {
                pieces.push(std::slice::from_raw_parts(ptr.cast::<u8>(), size as usize));
            }
        }
        let carried: usize = pieces.iter().map(|p| p.len()).sum();
        if carried as u64 != byte_size {
            return Err(BackendError::invalid_arg(format!(
                "input '{}' buffers hold {carried} bytes but the input declares {byte_size}",
                info.name
            )));
        }
        if info.dtype == DType::String {
            let numel = metal_mps_ir::checked_numel(&shape)
                .map_err(|e| BackendError::invalid_arg(format!("input '{}': {e}", info.name)))?;
            let bytes = pieces.concat();
            let strings = metal_mps::wire::decode_strings(&bytes, numel).map_err(|e| {
                BackendError::invalid_arg(format!(
                    "input '{}' is not valid serialized BYTES data: {e}",
                    info.name
                ))
            })?;
            data.strings.push(strings);
            data.buffers.push(Vec::new());
        } else {
            data.strings.push(Vec::new());
            data.buffers.push(pieces);
        }
        data.shapes.push(shape);
    }
    data.outputs = requested_outputs(model, request)?;
    Ok(data)
}

/// Indices (into the model's outputs) of the outputs the request asks for;
/// all configured outputs when it names none.
unsafe fn requested_outputs(
    model: &ModelState,
    request: *mut ffi::TRITONBACKEND_Request,
) -> Result<Vec<usize>> {
    let mut count = 0u32;
    tri!(
        "reading the requested output count",
        ffi::TRITONBACKEND_RequestOutputCount(request, &mut count)
    )?;
    let index_of = |name: &str| model.outputs.iter().position(|m| m.name == name);
    if count == 0 {
        return Ok(model
            .config
            .output
            .iter()
            .filter_map(|c| index_of(&c.name))
            .collect());
    }
    (0..count)
        .map(|i| {
            let mut name = std::ptr::null();
            tri!(
                "reading a requested output name",
                ffi::TRITONBACKEND_RequestOutputName(request, i, &mut name)
            )?;
            let name = owned_str(name);
            match index_of(&name) {
                Some(k) if model.config.output.iter().any(|c| c.name == name) => Ok(k),
                _ => Err(BackendError::invalid_arg(format!(
                    "unknown output '{name}'; the model's outputs are {}",
                    quoted(model.config.output.iter().map(|c| c.name.as_str()))
                ))),
            }
        })
        .collect()
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
