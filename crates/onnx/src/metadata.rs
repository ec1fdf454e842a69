//! What a model file says about itself: producer, names, version, custom properties.

use crate::proto::ModelProto;

/// The descriptive fields of a `ModelProto` and its main graph (what
/// onnxruntime's `get_modelmeta` reports). Absent fields are empty or 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelMetadata {
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    /// The model's `doc_string`.
    pub description: String,
    pub model_version: i64,
    pub graph_name: String,
    /// The main graph's `doc_string`.
    pub graph_description: String,
    /// `metadata_props`, in file order.
    pub custom: Vec<(String, String)>,
}

impl ModelMetadata {
    pub fn of(model: &ModelProto) -> ModelMetadata {
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        let graph = model.graph.as_ref();
        ModelMetadata {
            producer_name: text(&model.producer_name),
            producer_version: text(&model.producer_version),
            domain: text(&model.domain),
            description: text(&model.doc_string),
            model_version: model.model_version.unwrap_or(0),
            graph_name: graph.map(|g| text(&g.name)).unwrap_or_default(),
            graph_description: graph.map(|g| text(&g.doc_string)).unwrap_or_default(),
            custom: model
                .metadata_props
                .iter()
                .map(|p| (text(&p.key), text(&p.value)))
                .collect(),
        }
    }
}
