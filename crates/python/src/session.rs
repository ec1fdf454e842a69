//! `InferenceSession`: onnxruntime's session API over a [`metal_mps::Model`].

use crate::convert::{datum_from_py, datum_to_py, tensor_from_py, tensor_to_py};
use crate::errors::{to_py, InvalidArgument};
use crate::options::{choose_device, providers_of, SessionOptions};
use metal_mps::{Datum, Dim, Kind, Model, Tensor, TensorInfo};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use pyo3::IntoPyObjectExt;
use std::sync::Arc;

/// A model input or output as declared: `name`, `type` as onnxruntime spells
/// it (`"tensor(float)"`, `"tensor(string)"`, `"seq(tensor(float))"`,
/// `"optional(tensor(int64))"`, `"optional(seq(tensor(float)))"`) and `shape`
/// (of the tensor, or of the tensors a sequence or optional holds: ints for
/// fixed sizes, strings for symbolic ones such as `"batch"`, `None` for sizes
/// unknown until run time).
#[pyclass(module = "metal_mps", frozen, get_all)]
pub struct NodeArg {
    name: String,
    #[pyo3(name = "type")]
    type_: String,
    shape: Py<PyList>,
}

#[pymethods]
impl NodeArg {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "NodeArg(name='{}', type='{}', shape={})",
            self.name,
            self.type_,
            self.shape.bind(py).repr()?
        ))
    }
}

/// onnxruntime's type string: `tensor(float)`, `seq(tensor(float))`, `optional(...)`.
fn type_string(kind: &Kind, element: &str) -> String {
    match kind {
        Kind::Tensor => format!("tensor({element})"),
        Kind::Sequence => format!("seq(tensor({element}))"),
        Kind::Optional(inner) => format!("optional({})", type_string(inner, element)),
    }
}

fn node_arg(py: Python<'_>, info: &TensorInfo, kind: &Kind) -> PyResult<Py<NodeArg>> {
    let dims = info
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.into_bound_py_any(py),
            Dim::Sym(s) => s.into_bound_py_any(py),
            Dim::Unknown => Ok(py.None().into_bound(py)),
        })
        .collect::<PyResult<Vec<_>>>()?;
    Py::new(
        py,
        NodeArg {
            name: info.name.clone(),
            type_: type_string(kind, &info.dtype.onnx_name().to_ascii_lowercase()),
            shape: PyList::new(py, dims)?.unbind(),
        },
    )
}

/// What the model file says about itself (onnxruntime's `ModelMetadata`).
#[pyclass(module = "metal_mps", frozen, get_all)]
pub struct ModelMetadata {
    producer_name: String,
    producer_version: String,
    graph_name: String,
    graph_description: String,
    domain: String,
    description: String,
    version: i64,
    custom_metadata_map: Py<PyDict>,
}

#[pymethods]
impl ModelMetadata {
    fn __repr__(&self) -> String {
        format!(
            "ModelMetadata(producer_name='{}', graph_name='{}', domain='{}', version={})",
            self.producer_name, self.graph_name, self.domain, self.version
        )
    }
}

/// Loads an ONNX model once and runs it, from any number of Python threads
/// at once (onnxruntime's `InferenceSession`).
///
/// `path_or_bytes`: a path (str or os.PathLike) or the serialized model.
/// `providers`: `["MetalMpsExecutionProvider", "CPUExecutionProvider"]` or a
/// part of it; the first names the engine (default: `sess_options.device`).
#[pyclass(module = "metal_mps", frozen, subclass)]
pub struct InferenceSession {
    model: Arc<Model>,
    options: SessionOptions,
    inputs: Vec<Py<NodeArg>>,
    outputs: Vec<Py<NodeArg>>,
    /// What each input is (tensor, sequence, optional), in declaration order.
    input_kinds: Vec<Kind>,
    /// Every input and output is a tensor: runs take the [`Model::run`] path
    /// (arrays read in place); otherwise [`Model::run_data`].
    tensor_io: bool,
}

#[pymethods]
impl InferenceSession {
    #[new]
    #[pyo3(signature = (path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs))]
    fn py_new(
        py: Python<'_>,
        path_or_bytes: &Bound<'_, PyAny>,
        sess_options: Option<SessionOptions>,
        providers: Option<&Bound<'_, PyAny>>,
        provider_options: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<InferenceSession> {
        let _ = (provider_options, kwargs); // onnxruntime's per-provider settings: none apply.
        let options = sess_options.unwrap_or_default();
        let device = choose_device(providers, &options)?;
        let engine_options = options.to_options(device)?;
        let model = if let Ok(bytes) = path_or_bytes.cast::<PyBytes>() {
            let bytes = bytes.as_bytes();
            py.detach(|| Model::from_bytes(bytes, None, &engine_options))
        } else {
            let path: std::path::PathBuf = path_or_bytes.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "path_or_bytes must be a path or the model's bytes, not {}",
                    path_or_bytes
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            })?;
            py.detach(|| Model::load(&path, &engine_options))
        }
        .map_err(to_py)?;
        let input_kinds = model.input_kinds();
        let output_kinds = model.output_kinds();
        let inputs = model
            .inputs()
            .iter()
            .zip(&input_kinds)
            .map(|(i, k)| node_arg(py, i, k))
            .collect::<PyResult<_>>()?;
        let outputs = model
            .outputs()
            .iter()
            .zip(&output_kinds)
            .map(|(o, k)| node_arg(py, o, k))
            .collect::<PyResult<_>>()?;
        let tensor_io = input_kinds.iter().chain(&output_kinds).all(Kind::is_tensor);
        Ok(InferenceSession {
            model: Arc::new(model),
            options,
            inputs,
            outputs,
            input_kinds,
            tensor_io,
        })
    }

    /// The model's inputs (`NodeArg`s), in declaration order.
    fn get_inputs(&self, py: Python<'_>) -> Vec<Py<NodeArg>> {
        self.inputs.iter().map(|a| a.clone_ref(py)).collect()
    }

    /// The model's outputs (`NodeArg`s), in declaration order.
    fn get_outputs(&self, py: Python<'_>) -> Vec<Py<NodeArg>> {
        self.outputs.iter().map(|a| a.clone_ref(py)).collect()
    }

    /// Inputs that have a default value the caller may override: none (the
    /// engine treats initializers as constants).
    fn get_overridable_initializers(&self) -> Vec<Py<NodeArg>> {
        Vec::new()
    }

    fn get_modelmeta(&self, py: Python<'_>) -> PyResult<ModelMetadata> {
        let m = self.model.metadata();
        let custom = PyDict::new(py);
        for (k, v) in &m.custom {
            custom.set_item(k, v)?;
        }
        Ok(ModelMetadata {
            producer_name: m.producer_name.clone(),
            producer_version: m.producer_version.clone(),
            graph_name: m.graph_name.clone(),
            graph_description: m.graph_description.clone(),
            domain: m.domain.clone(),
            description: m.description.clone(),
            version: m.model_version,
            custom_metadata_map: custom.unbind(),
        })
    }

    /// The providers running the model: `["CPUExecutionProvider"]`, or
    /// `["MetalMpsExecutionProvider", "CPUExecutionProvider"]` on the GPU
    /// engine (nodes it lacks run on the CPU).
    fn get_providers(&self) -> Vec<&'static str> {
        providers_of(self.model.device())
    }

    fn get_session_options(&self) -> SessionOptions {
        self.options.clone()
    }

    /// Runs the model. `output_names`: the outputs to return, in that order
    /// (`None` or empty: all). `input_feed`: `{input name: value}`, a value
    /// being a numpy array for a tensor (text, bytes or str/bytes objects for
    /// a STRING tensor), a list of arrays for a sequence, `None` or the value
    /// for an optional (an optional input left out is `None`). Returns a list
    /// with a numpy array per tensor output (STRING: an object array of
    /// `str`), a list of arrays per sequence output and `None` or the value
    /// per optional output. The GIL is released while the engine runs.
    #[pyo3(signature = (output_names, input_feed, run_options=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        output_names: Option<Vec<String>>,
        input_feed: &Bound<'py, PyDict>,
        run_options: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let _ = run_options; // see RunOptions: nothing in it changes a run
        let selected = self.select_outputs(output_names)?;
        if !self.tensor_io {
            let inputs = self.data_feed(input_feed)?;
            let outputs = py.detach(|| self.model.run_data(&inputs)).map_err(to_py)?;
            return pick_data(py, &outputs, &selected);
        }
        let inputs = feed(input_feed)?;
        self.check_feed(&inputs)?;
        let outputs = py
            .detach(|| run_model(&self.model, &inputs))
            .map_err(to_py)?;
        pick(py, &outputs, &selected)
    }

    /// Starts a run on another thread and returns at once; when it is done,
    /// `callback(outputs, user_data, error)` is called with the outputs (a
    /// list of numpy arrays, empty on failure) and the error message (`""`
    /// on success).
    #[pyo3(signature = (output_names, input_feed, callback, user_data, run_options=None))]
    fn run_async(
        &self,
        output_names: Option<Vec<String>>,
        input_feed: &Bound<'_, PyDict>,
        callback: Py<PyAny>,
        user_data: Py<PyAny>,
        run_options: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let _ = run_options;
        let selected = self.select_outputs(output_names)?;
        let inputs = if self.tensor_io {
            let inputs = feed(input_feed)?;
            self.check_feed(&inputs)?;
            Feed::Tensors(inputs)
        } else {
            Feed::Data(self.data_feed(input_feed)?)
        };
        let model = Arc::clone(&self.model);
        std::thread::Builder::new()
            .name("metal_mps-run_async".into())
            .spawn(move || {
                let result = match &inputs {
                    Feed::Tensors(t) => run_model(&model, t).map(Outputs::Tensors),
                    Feed::Data(d) => model.run_data(d).map(Outputs::Data),
                };
                Python::attach(|py| {
                    let picked = result.map_err(to_py).and_then(|o| match o {
                        Outputs::Tensors(o) => pick(py, &o, &selected),
                        Outputs::Data(o) => pick_data(py, &o, &selected),
                    });
                    let (outputs, error) = match picked {
                        Ok(outputs) => (outputs, String::new()),
                        Err(e) => (Vec::new(), e.value(py).to_string()),
                    };
                    if let Err(e) = callback.call1(py, (outputs, user_data, error)) {
                        e.write_unraisable(py, Some(callback.bind(py)));
                    }
                    // The inputs hold references to arrays: release them attached.
                    drop(inputs);
                });
            })
            .map_err(|e| crate::errors::Fail::new_err(format!("cannot start a thread: {e}")))?;
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "InferenceSession(inputs={}, outputs={}, providers={:?})",
            self.model.inputs().len(),
            self.model.outputs().len(),
            providers_of(self.model.device())
        )
    }
}

impl InferenceSession {
    /// onnxruntime checks in Python that every input is fed and raises
    /// `ValueError` with this message; scripts catch it as such.
    fn check_feed(&self, inputs: &[(String, Tensor)]) -> PyResult<()> {
        let missing: Vec<&str> = self
            .model
            .inputs()
            .iter()
            .map(|i| i.name.as_str())
            .filter(|n| !inputs.iter().any(|(f, _)| f == n))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(missing_inputs(
            &missing,
            &mut inputs.iter().map(|(n, _)| n.as_str()),
        ))
    }

    /// The feed of a model with sequence or optional inputs or outputs: one
    /// value per input in declaration order, each converted as its declared
    /// kind says. An optional input left out of the feed is `None` (as in
    /// onnxruntime); any other missing input is the `ValueError` of
    /// [`InferenceSession::check_feed`]; an unknown name is [`InvalidArgument`].
    fn data_feed(&self, input_feed: &Bound<'_, PyDict>) -> PyResult<Vec<Datum>> {
        let declared = self.model.inputs();
        let mut values: Vec<Option<Datum>> = vec![None; declared.len()];
        let mut fed: Vec<String> = Vec::with_capacity(input_feed.len());
        for (k, v) in input_feed.iter() {
            let name: String = k
                .extract()
                .map_err(|_| PyTypeError::new_err("input_feed keys must be input names (str)"))?;
            let i = declared
                .iter()
                .position(|d| d.name == name)
                .ok_or_else(|| {
                    let all: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
                    InvalidArgument::new_err(format!(
                        "unknown input '{name}' (the model's inputs: {})",
                        all.join(", ")
                    ))
                })?;
            values[i] = Some(datum_from_py(&name, &v, &self.input_kinds[i])?);
            fed.push(name);
        }
        let missing: Vec<&str> = declared
            .iter()
            .zip(&self.input_kinds)
            .zip(&values)
            .filter(|((_, kind), v)| v.is_none() && !matches!(kind, Kind::Optional(_)))
            .map(|((d, _), _)| d.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(missing_inputs(
                &missing,
                &mut fed.iter().map(String::as_str),
            ));
        }
        Ok(values
            .into_iter()
            .map(|v| v.unwrap_or(Datum::Optional(None)))
            .collect())
    }

    /// Indices into the model's outputs of the requested names (all when none).
    fn select_outputs(&self, names: Option<Vec<String>>) -> PyResult<Vec<usize>> {
        let declared = self.model.outputs();
        match names {
            Some(names) if !names.is_empty() => names
                .iter()
                .map(|n| {
                    declared.iter().position(|o| o.name == *n).ok_or_else(|| {
                        let all: Vec<&str> = declared.iter().map(|o| o.name.as_str()).collect();
                        InvalidArgument::new_err(format!(
                            "invalid output name '{n}' (the model's outputs: {})",
                            all.join(", ")
                        ))
                    })
                })
                .collect(),
            _ => Ok((0..declared.len()).collect()),
        }
    }
}

/// The feed as named tensors reading the arrays in place.
fn feed(input_feed: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Tensor)>> {
    input_feed
        .iter()
        .map(|(k, v)| {
            let name: String = k
                .extract()
                .map_err(|_| PyTypeError::new_err("input_feed keys must be input names (str)"))?;
            let t = tensor_from_py(&name, &v)?;
            Ok((name, t))
        })
        .collect()
}

fn run_model(model: &Model, inputs: &[(String, Tensor)]) -> metal_mps::Result<Vec<Tensor>> {
    let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    model.run(&named)
}

/// onnxruntime checks in Python that every input is fed and raises
/// `ValueError` with this message; scripts catch it as such.
fn missing_inputs(missing: &[&str], fed: &mut dyn Iterator<Item = &str>) -> PyErr {
    let quoted = |names: &mut dyn Iterator<Item = &str>| {
        names
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    PyValueError::new_err(format!(
        "Required inputs ([{}]) are missing from input feed ([{}]).",
        quoted(&mut missing.iter().copied()),
        quoted(fed)
    ))
}

/// What `run_async` runs on its thread.
enum Feed {
    Tensors(Vec<(String, Tensor)>),
    Data(Vec<Datum>),
}

enum Outputs {
    Tensors(Vec<Tensor>),
    Data(Vec<Datum>),
}

fn pick_data<'py>(
    py: Python<'py>,
    outputs: &[Datum],
    selected: &[usize],
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    selected
        .iter()
        .map(|&i| datum_to_py(py, &outputs[i]))
        .collect()
}

fn pick<'py>(
    py: Python<'py>,
    outputs: &[Tensor],
    selected: &[usize],
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    selected
        .iter()
        .map(|&i| tensor_to_py(py, &outputs[i]))
        .collect()
}
