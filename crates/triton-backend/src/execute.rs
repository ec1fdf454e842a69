//! `TRITONBACKEND_ModelInstanceExecute`: N requests in, one batched run, N responses out.
//!
//! 1. Create a response per request, then read and check each request; a bad
//!    request gets its error in its own response and leaves the batch.
//! 2. Group the good requests that agree on every non-batch dimension, gather
//!    each group's inputs into one tensor per input, run the model once per group.
//! 3. Scatter each output's rows back to the requests that asked for it.
//! 4. Send every response, report statistics for every request and the batch,
//!    and release every request.
//!
//! Once responses exist the function always returns success: errors travel in
//! the responses (Triton then owns nothing of ours, and we own every request).

use crate::batch::{group, split_rows};
use crate::error::{BackendError, Result};
use crate::instance::InstanceState;
use crate::model::{FaultInjection, ModelState};
use crate::panic::{boundary, guard};
use crate::request::{self, RequestData};
use crate::stats::{self, now_ns, Times};
use crate::{ffi, log, memory, response};
use metal_mps::{DType, Tensor};

/// One request on its way through an execute call.
struct Pending<'r> {
    request: *mut ffi::TRITONBACKEND_Request,
    /// Null when Triton could not create one (then the request is only released).
    response: *mut ffi::TRITONBACKEND_Response,
    data: Option<RequestData<'r>>,
    error: Option<BackendError>,
    compute: (u64, u64),
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceExecute(
    instance: *mut ffi::TRITONBACKEND_ModelInstance,
    requests: *mut *mut ffi::TRITONBACKEND_Request,
    request_count: u32,
) -> *mut ffi::TRITONSERVER_Error {
    boundary("TRITONBACKEND_ModelInstanceExecute", || {
        // Until responses exist an error return leaves the requests with Triton.
        // SAFETY: Triton runs one execute call per instance at a time, so the state is ours alone.
        let state = unsafe { InstanceState::of(instance) }?;
        let requests = if request_count == 0 || requests.is_null() {
            &[][..]
        } else {
            // SAFETY: Triton passes `request_count` live requests.
            unsafe { std::slice::from_raw_parts(requests, request_count as usize) }
        };
        // From here on we own the requests: never return an error, even on a panic.
        if let Err(e) = guard("execute", || {
            execute(instance, state, requests);
            Ok(())
        }) {
            log::error(&format!(
                "instance '{}': {e}; some requests may not have been answered",
                state.name
            ));
        }
        Ok(())
    })
}

fn execute(
    instance: *mut ffi::TRITONBACKEND_ModelInstance,
    state: &mut InstanceState,
    requests: &[*mut ffi::TRITONBACKEND_Request],
) {
    let exec_start = now_ns();
    let model = state.model_state.clone();
    let mut pending: Vec<Pending> = requests
        .iter()
        .map(|&request| {
            let (response, error) = match response::create(request) {
                Ok(r) => (r, None),
                Err(e) => (std::ptr::null_mut(), Some(e)),
            };
            Pending {
                request,
                response,
                data: None,
                error,
                compute: (0, 0),
            }
        })
        .collect();
    for p in pending.iter_mut().filter(|p| p.error.is_none()) {
        // SAFETY: the request is live until released at the end of this function.
        match unsafe { request::read(&model, p.request) } {
            Ok(d) => p.data = Some(d),
            Err(e) => p.error = Some(e),
        }
    }

    let shapes: Vec<Option<&[Vec<usize>]>> = pending
        .iter()
        .map(|p| p.data.as_ref().map(|d| &d.shapes[..]))
        .collect();
    let groups = group(&shapes, model.config.max_batch_size > 0);
    let mut batch_times = Times {
        exec_start,
        ..Times::default()
    };
    let mut executed = 0u64;
    for (k, g) in groups.iter().enumerate() {
        let start = now_ns();
        let result = guard("running the model", || {
            run_group(state, &model, &pending, g)
        });
        let end = now_ns();
        if k == 0 {
            batch_times.compute_start = start;
        }
        batch_times.compute_end = end;
        let batches: Vec<usize> = g
            .iter()
            .map(|&i| pending[i].data.as_ref().map_or(0, |d| d.batch))
            .collect();
        executed += batches.iter().sum::<usize>() as u64;
        match result.and_then(|outputs| scatter(&model, &mut pending, g, &batches, &outputs)) {
            Ok(()) => {}
            Err(e) => {
                for &i in g {
                    pending[i].error.get_or_insert_with(|| e.clone());
                }
            }
        }
        for &i in g {
            pending[i].compute = (start, end);
        }
    }
    batch_times.exec_end = now_ns();
    // Counted now: the input slices dangle once the requests are released.
    let failed = pending.iter().filter(|p| p.error.is_some()).count();
    let buffers: usize = pending
        .iter_mut()
        .filter_map(|p| p.data.take())
        .map(|d| d.buffers.iter().map(Vec::len).sum::<usize>())
        .sum();

    // Statistics go in before the responses: a client that reads the statistics as soon as its
    // response arrives must find its request counted.
    for p in &pending {
        let (compute_start, compute_end) = p.compute;
        let times = Times {
            exec_start,
            compute_start,
            compute_end,
            exec_end: batch_times.exec_end,
        };
        stats::report_request(instance, p.request, p.error.is_none(), times);
    }
    if executed > 0 {
        stats::report_batch(instance, executed, batch_times);
    }
    for p in pending.iter().filter(|p| !p.response.is_null()) {
        // SAFETY: the response is live and sent once.
        unsafe { response::send(p.response, p.error.as_ref()) };
    }
    for p in &pending {
        if let Err(e) = crate::error::tri!(
            "releasing a request",
            ffi::TRITONBACKEND_RequestRelease(p.request, ffi::TRITONSERVER_REQUEST_RELEASE_ALL)
        ) {
            log::error(&e.message);
        }
    }
    memory::report(instance, state);
    let summary = || {
        format!(
            "model '{}' instance '{}': {} request(s), {failed} in error, {buffers} input buffer(s), {} group(s), batch {executed}, compute {:.3} ms, total {:.3} ms",
            model.name,
            state.name,
            pending.len(),
            groups.len(),
            batch_times.compute_end.saturating_sub(batch_times.compute_start) as f64 / 1e6,
            batch_times.exec_end.saturating_sub(exec_start) as f64 / 1e6,
        )
    };
    if model.settings.verbose {
        log::info(&summary());
    } else {
        log::verbose(summary);
    }
}

/// Gathers the group's inputs into one tensor per model input and runs the model once.
fn run_group(
    state: &mut InstanceState,
    model: &ModelState,
    pending: &[Pending],
    g: &[usize],
) -> Result<Vec<Tensor>> {
    if model.fault == FaultInjection::PanicInExecute {
        panic!(
            "fault injection: panic in TRITONBACKEND_ModelInstanceExecute of '{}'",
            model.name
        );
    }
    let data = |i: usize| {
        pending[i]
            .data
            .as_ref()
            .expect("groups hold only requests that were read")
    };
    let batch: usize = g.iter().map(|&i| data(i).batch).sum();
    let mut tensors = Vec::with_capacity(model.inputs.len());
    for (k, info) in model.inputs.iter().enumerate() {
        let mut shape = data(g[0]).shapes[k].clone();
        if model.config.max_batch_size > 0 {
            shape[0] = batch;
        }
        if info.dtype == DType::String {
            let strings = g.iter().flat_map(|&i| data(i).strings[k].iter().cloned());
            tensors.push(Tensor::from_strings(shape, strings.collect())?);
            continue;
        }
        let mut tensor =
            Tensor::in_storage(info.dtype, shape, std::mem::take(&mut state.staging[k]))?;
        let dst = tensor.as_bytes_mut();
        let mut offset = 0;
        for piece in g.iter().flat_map(|&i| data(i).buffers[k].iter()) {
            dst[offset..offset + piece.len()].copy_from_slice(piece);
            offset += piece.len();
        }
        if offset != dst.len() {
            return Err(BackendError::internal(format!(
                "gathered {offset} bytes for input '{}' but the batch needs {}",
                info.name,
                dst.len()
            )));
        }
        tensors.push(tensor);
    }
    let named: Vec<(&str, &Tensor)> = model
        .inputs
        .iter()
        .map(|i| i.name.as_str())
        .zip(&tensors)
        .collect();
    let outputs = state.model.run(&named);
    for (k, t) in tensors.into_iter().enumerate() {
        if t.dtype() != DType::String {
            state.staging[k] = t.into_storage();
        }
    }
    Ok(outputs?)
}

/// Writes each request's rows of the requested outputs into its response.
fn scatter(
    model: &ModelState,
    pending: &mut [Pending],
    g: &[usize],
    batches: &[usize],
    outputs: &[Tensor],
) -> Result<()> {
    let batched = model.config.max_batch_size > 0;
    // Per output some request asked for: each request's byte range and shape.
    let mut parts = vec![Vec::new(); outputs.len()];
    for o in 0..outputs.len() {
        if !g.iter().any(|&i| {
            pending[i]
                .data
                .as_ref()
                .is_some_and(|d| d.outputs.contains(&o))
        }) {
            continue;
        }
        let (info, t) = (&model.outputs[o], &outputs[o]);
        if t.dtype() != info.dtype {
            return Err(BackendError::internal(format!(
                "the engine returned {} for output '{}', which the model declares {}",
                t.dtype().kserve_name(),
                info.name,
                info.dtype.kserve_name()
            )));
        }
        // Byte ranges, or element ranges for BYTES outputs.
        let elem = match t.dtype() {
            DType::String => 1,
            d => d.size(),
        };
        parts[o] = if batched {
            split_rows(&info.name, t.shape(), elem, batches)?
        } else {
            vec![(0..t.numel() * elem, t.shape().to_vec())]
        };
    }
    for (slot, &i) in g.iter().enumerate() {
        let p = &mut pending[i];
        let requested = p
            .data
            .as_ref()
            .map(|d| d.outputs.clone())
            .unwrap_or_default();
        for o in requested {
            let (range, shape) = &parts[o][slot];
            let t = &outputs[o];
            let serialized;
            let bytes = match t.dtype() {
                DType::String => {
                    serialized = metal_mps::wire::encode_strings(&t.as_strings()?[range.clone()])?;
                    &serialized[..]
                }
                _ => &t.as_bytes()[range.clone()],
            };
            // SAFETY: the response is live and not yet sent.
            let written = unsafe {
                response::add_output(p.response, &model.outputs[o].name, t.dtype(), shape, bytes)
            };
            if let Err(e) = written {
                p.error.get_or_insert(e);
                break;
            }
        }
    }
    Ok(())
}
