//! The subset of Triton's `ModelConfig` (model_config.proto) that metal_mps uses.
//!
//! Field names follow protobuf's JSON mapping, which is what
//! `TRITONBACKEND_ModelConfig` hands a backend and what
//! `TRITONBACKEND_ModelSetConfig` takes back. Every struct keeps the fields it
//! does not model in `extra`, so parsing and re-serializing a configuration
//! loses nothing (`optimization`, `model_warmup`, `sequence_batching`, ...).

use crate::error::ConfigError;
use crate::json_int::{de_i64, de_u64, de_vec_i64};
use metal_mps::DType;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A model's configuration (Triton `ModelConfig`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    pub name: String,
    pub platform: String,
    pub backend: String,
    /// Versions to serve; `None` means Triton's default (the latest one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_policy: Option<VersionPolicy>,
    /// Largest batch one request or one dynamic batch may carry; 0 means the
    /// model has no batch dimension and `dims` are the full shapes.
    #[serde(deserialize_with = "de_i64")]
    pub max_batch_size: i64,
    pub input: Vec<TensorConfig>,
    pub output: Vec<TensorConfig>,
    pub instance_group: Vec<InstanceGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<DynamicBatching>,
    /// `parameters { key: "k" value { string_value: "v" } }`.
    pub parameters: BTreeMap<String, Parameter>,
    /// File name of the model inside a version directory; empty means
    /// [`crate::DEFAULT_MODEL_FILENAME`].
    pub default_model_filename: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One input or output tensor (Triton `ModelInput` / `ModelOutput`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TensorConfig {
    pub name: String,
    /// Triton's name of the element type, e.g. `TYPE_FP32`; see [`TensorConfig::dtype`].
    pub data_type: String,
    /// Shape without the batch dimension when `max_batch_size > 0`; -1 is any size.
    #[serde(deserialize_with = "de_vec_i64")]
    pub dims: Vec<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TensorConfig {
    /// The element type, or an error naming `field` when metal_mps has no such type.
    pub fn dtype(&self, field: &str) -> Result<DType, ConfigError> {
        if let Some(d) = DType::ALL
            .into_iter()
            .find(|d| !d.has_protocol_type() && d.triton_name() == self.data_type)
        {
            return Err(ConfigError::new(
                format!("{field}.data_type"),
                format!(
                    "Triton and KServe-v2 have no {d} data type: such a tensor cannot be served"
                ),
            ));
        }
        DType::from_triton_name(&self.data_type).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.data_type"),
                format!(
                    "{} is not supported by metal_mps (use one of {})",
                    if self.data_type.is_empty() {
                        "an empty data type"
                    } else {
                        &self.data_type
                    },
                    DType::ALL
                        .into_iter()
                        .filter(|d| d.has_protocol_type())
                        .map(|d| d.triton_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }
}

/// Where instances run (Triton `ModelInstanceGroup.Kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceKind {
    #[default]
    #[serde(rename = "KIND_AUTO")]
    Auto,
    #[serde(rename = "KIND_GPU")]
    Gpu,
    #[serde(rename = "KIND_CPU")]
    Cpu,
    #[serde(rename = "KIND_MODEL")]
    Model,
}

/// A group of identical instances (Triton `ModelInstanceGroup`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceGroup {
    pub name: String,
    pub kind: InstanceKind,
    #[serde(deserialize_with = "de_i64")]
    pub count: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for InstanceGroup {
    fn default() -> Self {
        InstanceGroup {
            name: String::new(),
            kind: InstanceKind::Auto,
            count: 1,
            extra: Map::new(),
        }
    }
}

/// Triton's dynamic batcher settings (`ModelDynamicBatching`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynamicBatching {
    #[serde(deserialize_with = "de_vec_i64")]
    pub preferred_batch_size: Vec<i64>,
    #[serde(deserialize_with = "de_u64")]
    pub max_queue_delay_microseconds: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A model parameter (`ModelParameter`); only `string_value` exists in Triton.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Parameter {
    pub string_value: String,
}

/// Which versions of a model to serve (`ModelVersionPolicy`): exactly one of the three.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VersionPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<LatestVersions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specific: Option<SpecificVersions>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatestVersions {
    #[serde(deserialize_with = "de_u64")]
    pub num_versions: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpecificVersions {
    #[serde(deserialize_with = "de_vec_i64")]
    pub versions: Vec<i64>,
}

impl VersionPolicy {
    /// The versions to serve among `available` (any order), ascending.
    ///
    /// No policy, or `latest` without a count, serves the single newest version,
    /// as Triton does; `specific` serves the listed versions that exist.
    pub fn select(policy: Option<&VersionPolicy>, available: &[u64]) -> Vec<u64> {
        let mut sorted = available.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let latest = |n: u64| sorted[sorted.len().saturating_sub(n.max(1) as usize)..].to_vec();
        match policy {
            None => latest(1),
            Some(p) if p.all.is_some() => sorted,
            Some(VersionPolicy {
                specific: Some(s), ..
            }) => sorted
                .into_iter()
                .filter(|v| s.versions.contains(&(*v as i64)))
                .collect(),
            Some(VersionPolicy {
                latest: Some(l), ..
            }) => latest(l.num_versions),
            Some(_) => latest(1),
        }
    }
}

impl ModelConfig {
    /// Parses the JSON form of a configuration (what `TRITONBACKEND_ModelConfig` returns).
    pub fn from_json(json: &str) -> Result<ModelConfig, ConfigError> {
        serde_json::from_str(json).map_err(|e| {
            ConfigError::new(
                "model configuration",
                format!("is not valid JSON for a ModelConfig: {e}"),
            )
        })
    }

    /// The JSON form, for `TRITONBACKEND_ModelSetConfig` or a server's config endpoint.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ModelConfig always serializes")
    }

    /// Whether a scheduler (dynamic or sequence batching, ensemble) is configured.
    pub fn has_scheduler(&self) -> bool {
        self.dynamic_batching.is_some()
            || ["sequence_batching", "ensemble_scheduling"]
                .iter()
                .any(|k| self.extra.contains_key(*k))
    }

    /// The value of parameter `key`, if set.
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters.get(key).map(|p| p.string_value.as_str())
    }

    /// The model file's name inside a version directory.
    pub fn model_filename(&self) -> &str {
        if self.default_model_filename.is_empty() {
            crate::DEFAULT_MODEL_FILENAME
        } else {
            &self.default_model_filename
        }
    }

    /// The model file of `version` inside the model's directory `model_dir`:
    /// `<model_dir>/<version>/<default_model_filename or model.onnx>`, unchecked
    /// (see [`ModelConfig::resolve_model_file`]).
    pub fn model_path(&self, model_dir: &std::path::Path, version: u64) -> std::path::PathBuf {
        model_dir
            .join(version.to_string())
            .join(self.model_filename())
    }

    /// Checks that `default_model_filename` is a file name, not a path: no
    /// separator, not `.` or `..`, no NUL.
    pub fn check_model_filename(&self) -> Result<(), crate::ConfigError> {
        let name = self.model_filename();
        let mut parts = std::path::Path::new(name).components();
        let plain = matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        ) && !name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(crate::ConfigError::new(
                "default_model_filename",
                format!("'{name}' must be a file name inside the version folder, not a path"),
            ));
        }
        Ok(())
    }

    /// The canonical path of `version`'s model file, which must be a regular
    /// file inside `<model_dir>/<version>/` once every link is followed. A
    /// missing file and one outside the folder get the same message, which
    /// does not tell whether anything exists outside.
    pub fn resolve_model_file(
        &self,
        model_dir: &std::path::Path,
        version: u64,
    ) -> Result<std::path::PathBuf, crate::ConfigError> {
        self.check_model_filename()?;
        let name = self.model_filename();
        metal_mps_ir::resolve_within(
            &model_dir.join(version.to_string()),
            std::path::Path::new(name),
        )
        .ok_or_else(|| {
            crate::ConfigError::new(
                "default_model_filename",
                format!(
                    "version {version} has no readable model file '{name}' inside its folder \
                     (links are followed and must stay inside the version folder; set \
                     default_model_filename to use another name)"
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Triton 2.51 hands a backend for the spec's example config (abridged).
    const TRITON_JSON: &str = r#"{
        "name": "my_mps_model", "platform": "", "backend": "metal_mps", "runtime": "",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 8,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NONE",
                   "dims": ["3", "224", "224"], "is_shape_tensor": false,
                   "allow_ragged_batch": false, "optional": false}],
        "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [1000],
                    "label_filename": "", "is_shape_tensor": false}],
        "batch_input": [], "batch_output": [],
        "optimization": {"priority": "PRIORITY_DEFAULT", "input_pinned_memory": {"enable": true}},
        "instance_group": [{"name": "my_mps_model_0", "kind": "KIND_MODEL", "count": 2, "gpus": [],
                            "secondary_devices": [], "profile": [], "passive": false, "host_policy": ""}],
        "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": "100",
                             "preserve_ordering": false, "priority_levels": "0"},
        "default_model_filename": "", "cc_model_filenames": {}, "metric_tags": {},
        "parameters": {"precision": {"string_value": "fp16"}},
        "model_warmup": []
    }"#;

    #[test]
    fn parses_triton_json() {
        let c = ModelConfig::from_json(TRITON_JSON).unwrap();
        assert_eq!(c.name, "my_mps_model");
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.input[0].dims, vec![3, 224, 224]);
        assert_eq!(c.input[0].dtype("input[0]").unwrap(), DType::F32);
        assert_eq!(c.output[0].dims, vec![1000]);
        assert_eq!(c.instance_group[0].kind, InstanceKind::Model);
        assert_eq!(c.instance_group[0].count, 2);
        let db = c.dynamic_batching.as_ref().unwrap();
        assert_eq!(
            (
                db.preferred_batch_size.as_slice(),
                db.max_queue_delay_microseconds
            ),
            (&[4, 8][..], 100)
        );
        assert_eq!(c.parameter("precision"), Some("fp16"));
        assert_eq!(c.model_filename(), "model.onnx");
        assert!(c.has_scheduler());
    }

    #[test]
    fn round_trip_keeps_unknown_fields() {
        let c = ModelConfig::from_json(TRITON_JSON).unwrap();
        let again = ModelConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(c, again);
        let v: Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(
            v["optimization"]["input_pinned_memory"]["enable"],
            Value::Bool(true)
        );
        assert_eq!(v["input"][0]["format"], "FORMAT_NONE");
        assert_eq!(v["instance_group"][0]["gpus"], serde_json::json!([]));
    }

    #[test]
    fn empty_object_is_a_default_config() {
        let c = ModelConfig::from_json("{}").unwrap();
        assert_eq!(c, ModelConfig::default());
        assert!(!c.has_scheduler());
    }

    #[test]
    fn unsupported_data_type_names_the_field() {
        let t = TensorConfig {
            name: "x".into(),
            data_type: "TYPE_COMPLEX64".into(),
            ..Default::default()
        };
        let e = t.dtype("input[1]").unwrap_err().to_string();
        assert!(
            e.contains("input[1].data_type") && e.contains("TYPE_COMPLEX64"),
            "{e}"
        );
    }

    #[test]
    fn version_policies() {
        let all = VersionPolicy {
            all: Some(Map::new()),
            ..Default::default()
        };
        let latest2 = VersionPolicy {
            latest: Some(LatestVersions { num_versions: 2 }),
            ..Default::default()
        };
        let specific = VersionPolicy {
            specific: Some(SpecificVersions {
                versions: vec![1, 7],
            }),
            ..Default::default()
        };
        let avail = [3, 1, 2];
        assert_eq!(VersionPolicy::select(None, &avail), vec![3]);
        assert_eq!(VersionPolicy::select(Some(&all), &avail), vec![1, 2, 3]);
        assert_eq!(VersionPolicy::select(Some(&latest2), &avail), vec![2, 3]);
        assert_eq!(VersionPolicy::select(Some(&specific), &avail), vec![1]);
        assert_eq!(VersionPolicy::select(None, &[]), Vec::<u64>::new());
    }

    #[test]
    fn model_path_uses_default_model_filename() {
        let mut c = ModelConfig::default();
        let dir = std::path::Path::new("/repo/m");
        assert_eq!(
            c.model_path(dir, 3),
            std::path::Path::new("/repo/m/3/model.onnx")
        );
        c.default_model_filename = "net.onnx".into();
        assert_eq!(
            c.model_path(dir, 1),
            std::path::Path::new("/repo/m/1/net.onnx")
        );
    }

    #[test]
    fn default_model_filename_is_a_file_name() {
        let mut c = ModelConfig::default();
        for ok in ["model.onnx", "net.v2.onnx", "..onnx"] {
            c.default_model_filename = ok.into();
            assert!(c.check_model_filename().is_ok(), "{ok}");
        }
        for bad in [
            "/etc/shadow",
            "../model.onnx",
            "..",
            ".",
            "a/b.onnx",
            "a\\b",
            "./m.onnx",
        ] {
            c.default_model_filename = bad.into();
            let err = c.check_model_filename().unwrap_err();
            assert_eq!(err.field, "default_model_filename", "{bad}");
        }
    }

    #[test]
    fn model_file_outside_the_version_folder_is_refused_like_a_missing_one() {
        let root = std::env::temp_dir().join(format!("mm-cfg-link-{}", std::process::id()));
        std::fs::create_dir_all(root.join("m/1")).unwrap();
        std::fs::create_dir_all(root.join("m/2")).unwrap();
        std::fs::write(root.join("secret.onnx"), b"x").unwrap();
        std::fs::write(root.join("m/3.onnx"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("secret.onnx"), root.join("m/1/model.onnx")).unwrap();
        let c = ModelConfig::default();
        let outside = c.resolve_model_file(&root.join("m"), 1).unwrap_err();
        let missing = c.resolve_model_file(&root.join("m"), 2).unwrap_err();
        assert_eq!(
            outside.to_string().replace("version 1", "version 2"),
            missing.to_string()
        );
        std::fs::create_dir_all(root.join("m/3")).unwrap();
        std::fs::write(root.join("m/3/model.onnx"), b"x").unwrap();
        assert!(c.resolve_model_file(&root.join("m"), 3).is_ok());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
