//! A model's configuration, from config.pbtxt, a load request's JSON, or
//! nothing (auto-complete), to the [`ServingConfig`] the server applies.
//!
//! The semantics (auto-complete, validation against the model, engine
//! settings from `parameters`) are those of `metal-mps-model-config`, shared
//! with the Triton backend; this module adds what only a server decides:
//! instances, the queue and the batcher.

use crate::batcher::{BatchPolicy, DynamicBatching};
use crate::pbtxt;
use crate::serving_config::{QueueTimeout, ServingConfig, TensorSpec};
use metal_mps::Device;
use metal_mps_model_config::{
    ConfigError, EngineSettings, InstanceKind, ModelConfig, TensorConfig,
};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Server-wide defaults a config may leave open.
#[derive(Clone, Debug)]
pub struct ConfigDefaults {
    /// Queue bound when `default_queue_policy.max_queue_size` is 0.
    pub max_queue_size: usize,
    /// `max_batch_size` auto-complete gives a model that can batch.
    pub default_max_batch_size: i64,
}

/// Backends and platforms whose models this server runs: its own, and
/// Triton's ONNX Runtime ones (the same model.onnx files).
const BACKENDS: [&str; 3] = ["", "metal_mps", "onnxruntime"];
const PLATFORMS: [&str; 2] = ["", "onnxruntime_onnx"];

/// Reads the configuration of the model in `model_dir` named `name`:
/// `override_json` (a load request's `config`) if given, else
/// `config.pbtxt` if present, else an empty config to auto-complete.
pub fn read_config(
    model_dir: &Path,
    name: &str,
    override_json: Option<&Value>,
) -> Result<ModelConfig, String> {
    let json = match override_json {
        Some(v) => pbtxt::check_json(v)?,
        None => {
            let path = model_dir.join("config.pbtxt");
            match std::fs::read_to_string(&path) {
                Ok(text) => pbtxt::parse_pbtxt(&text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            }
        }
    };
    let mut config: ModelConfig =
        serde_json::from_value(json).map_err(|e| format!("config: {e}"))?;
    if config.name.is_empty() {
        config.name = name.to_string();
    } else if config.name != name {
        return Err(format!(
            "config name '{}' does not match the model directory name '{name}'",
            config.name
        ));
    }
    if !BACKENDS.contains(&config.backend.as_str()) {
        return Err(field_error("backend", &config.backend, &BACKENDS[1..]));
    }
    if !PLATFORMS.contains(&config.platform.as_str()) {
        return Err(field_error("platform", &config.platform, &PLATFORMS[1..]));
    }
    if config.backend.is_empty() && config.platform.is_empty() {
        config.backend = "metal_mps".into();
    }
    Ok(config)
}

fn field_error(field: &str, value: &str, allowed: &[&str]) -> String {
    format!("config field '{field}' is '{value}'; metal-mps serve runs ONNX models: use one of {allowed:?} or leave it out")
}

/// The device of every instance `instance_group` asks for (one instance of
/// KIND_AUTO when it is empty; `count` 0 or unset is 1). KIND_AUTO and KIND_MODEL follow the
/// `engine` parameter (GPU when an adapter exists, by default); KIND_GPU
/// needs a GPU adapter; KIND_CPU runs on the CPU engine.
pub fn instance_devices(
    config: &ModelConfig,
    settings: &EngineSettings,
    gpu_available: bool,
) -> Result<Vec<Device>, ConfigError> {
    let default = [metal_mps_model_config::InstanceGroup::default()];
    let groups = if config.instance_group.is_empty() {
        &default[..]
    } else {
        &config.instance_group[..]
    };
    let mut devices = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        if let Some(key) = g.extra.keys().find(|k| !g.extra[*k].is_null()) {
            return Err(ConfigError::new(
                format!("instance_group[{i}].{key}"),
                "is not supported by metal-mps serve",
            ));
        }
        if g.count < 0 {
            return Err(ConfigError::new(
                format!("instance_group[{i}].count"),
                format!("is {}; it must be at least 1", g.count),
            ));
        }
        let device = match g.kind {
            InstanceKind::Cpu => Device::Cpu,
            InstanceKind::Gpu if gpu_available => Device::Gpu,
            InstanceKind::Gpu => {
                return Err(ConfigError::new(
                    format!("instance_group[{i}].kind"),
                    "is KIND_GPU but no GPU adapter is available; use KIND_MODEL (GPU when available, else CPU) or KIND_CPU",
                ))
            }
            InstanceKind::Auto | InstanceKind::Model => settings.engine.resolve(gpu_available)?,
        };
        // An unset count (0) means one instance, as in Triton.
        devices.extend(std::iter::repeat_n(device, g.count.max(1) as usize));
    }
    Ok(devices)
}

/// `dynamic_batching.default_queue_policy`, which the shared config types
/// keep as an unparsed extra.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct QueuePolicy {
    timeout_action: String,
    #[serde(deserialize_with = "lenient_u64")]
    default_timeout_microseconds: u64,
    allow_timeout_override: bool,
    #[serde(deserialize_with = "lenient_u64")]
    max_queue_size: u64,
}

/// Protobuf's JSON writes 64-bit integers as strings; accept both.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a count"))),
        Value::String(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("\"{s}\" is not a count"))),
        other => Err(serde::de::Error::custom(format!("{other} is not a count"))),
    }
}

/// Builds what the server applies from a complete, validated config.
pub fn serving_config(
    config: &ModelConfig,
    defaults: &ConfigDefaults,
) -> Result<ServingConfig, ConfigError> {
    let max_batch_size = usize::try_from(config.max_batch_size)
        .map_err(|_| ConfigError::new("max_batch_size", "must be 0 or more"))?;
    let specs = |list: &[TensorConfig], what: &str| -> Result<Vec<TensorSpec>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, t)| {
                Ok(TensorSpec {
                    name: t.name.clone(),
                    dtype: t.dtype(&format!("{what}[{i}]"))?,
                    dims: t.dims.clone(),
                })
            })
            .collect()
    };
    let mut queue = QueuePolicy::default();
    let mut dynamic = None;
    if let Some(db) = &config.dynamic_batching {
        if let Some(p) = db
            .extra
            .get("default_queue_policy")
            .filter(|p| !p.is_null())
        {
            queue = serde_json::from_value(p.clone()).map_err(|e| {
                ConfigError::new("dynamic_batching.default_queue_policy", e.to_string())
            })?;
        }
        if let Some(key) = db
            .extra
            .iter()
            .find(|(k, v)| {
                !matches!(k.as_str(), "default_queue_policy" | "preserve_ordering") && !v.is_null()
            })
            .map(|(k, _)| k)
        {
            return Err(ConfigError::new(
                format!("dynamic_batching.{key}"),
                "is not supported by metal-mps serve",
            ));
        }
        let mut preferred = Vec::new();
        for &p in &db.preferred_batch_size {
            if p < 1 || p as usize > max_batch_size {
                return Err(ConfigError::new(
                    "dynamic_batching.preferred_batch_size",
                    format!("contains {p}; each size must be between 1 and max_batch_size ({max_batch_size})"),
                ));
            }
            preferred.push(p as usize);
        }
        preferred.sort_unstable();
        if max_batch_size > 0 {
            dynamic = Some(DynamicBatching {
                preferred,
                max_delay: Duration::from_micros(db.max_queue_delay_microseconds),
            });
        }
    }
    let delay_on_timeout = match queue.timeout_action.as_str() {
        "" | "REJECT" => false,
        "DELAY" => true,
        other => {
            return Err(ConfigError::new(
                "dynamic_batching.default_queue_policy.timeout_action",
                format!("is '{other}'; use REJECT or DELAY"),
            ))
        }
    };
    Ok(ServingConfig {
        name: config.name.clone(),
        platform: if config.platform.is_empty() {
            config.backend.clone()
        } else {
            config.platform.clone()
        },
        max_batch_size,
        inputs: specs(&config.input, "input")?,
        outputs: specs(&config.output, "output")?,
        policy: BatchPolicy {
            max_batch_size,
            dynamic,
            max_queue_size: if queue.max_queue_size == 0 {
                defaults.max_queue_size
            } else {
                queue.max_queue_size as usize
            },
            delay_on_timeout,
        },
        queue_timeout: QueueTimeout {
            default: (queue.default_timeout_microseconds > 0)
                .then(|| Duration::from_micros(queue.default_timeout_microseconds)),
            allow_override: queue.allow_timeout_override,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(pbtxt: Option<&str>) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "mm-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        if let Some(t) = pbtxt {
            std::fs::write(d.join("config.pbtxt"), t).unwrap();
        }
        d
    }

    fn defaults() -> ConfigDefaults {
        ConfigDefaults {
            max_queue_size: 100,
            default_max_batch_size: 4,
        }
    }

    #[test]
    fn missing_config_is_empty_and_named() {
        let c = read_config(&dir_with(None), "m", None).unwrap();
        assert_eq!((c.name.as_str(), c.backend.as_str()), ("m", "metal_mps"));
    }

    #[test]
    fn wrong_name_and_backend_are_refused() {
        assert!(read_config(&dir_with(Some("name: \"x\"")), "m", None)
            .unwrap_err()
            .contains("does not match"));
        assert!(
            read_config(&dir_with(Some("backend: \"tensorrt\"")), "m", None)
                .unwrap_err()
                .contains("'backend'")
        );
    }

    #[test]
    fn batching_and_queue_policy_are_read() {
        let text = r#"
            max_batch_size: 8
            input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
            output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
            instance_group [ { kind: KIND_CPU count: 2 } ]
            dynamic_batching {
              preferred_batch_size: [ 8, 4 ]
              max_queue_delay_microseconds: 500
              default_queue_policy { max_queue_size: 3 default_timeout_microseconds: 1000 allow_timeout_override: true }
            }"#;
        let c = read_config(&dir_with(Some(text)), "m", None).unwrap();
        let settings = EngineSettings::from_sources(&c, |_| None).unwrap();
        let devices = instance_devices(&c, &settings, false).unwrap();
        assert_eq!(devices, vec![Device::Cpu, Device::Cpu]);
        let s = serving_config(&c, &defaults()).unwrap();
        assert_eq!(s.max_batch_size, 8);
        let d = s.policy.dynamic.as_ref().unwrap();
        assert_eq!(
            (d.preferred.as_slice(), d.max_delay),
            (&[4, 8][..], Duration::from_micros(500))
        );
        assert_eq!(s.policy.max_queue_size, 3);
        assert_eq!(s.queue_timeout.default, Some(Duration::from_millis(1)));
        assert!(s.queue_timeout.allow_override);
    }

    #[test]
    fn kind_gpu_without_adapter_is_refused() {
        let c = read_config(
            &dir_with(Some("instance_group [ { kind: KIND_GPU } ]")),
            "m",
            None,
        )
        .unwrap();
        let settings = EngineSettings::from_sources(&c, |_| None).unwrap();
        let e = instance_devices(&c, &settings, false).unwrap_err();
        assert_eq!(e.field, "instance_group[0].kind");
        assert_eq!(
            instance_devices(&c, &settings, true).unwrap(),
            vec![Device::Gpu]
        );
    }

    #[test]
    fn preferred_size_above_max_is_refused() {
        let text = "max_batch_size: 2 dynamic_batching { preferred_batch_size: [ 4 ] }";
        let c = read_config(&dir_with(Some(text)), "m", None).unwrap();
        let e = serving_config(&c, &defaults()).unwrap_err();
        assert_eq!(e.field, "dynamic_batching.preferred_batch_size");
    }
}
