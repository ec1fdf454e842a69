//! Engine settings of one model: from its configuration's `parameters`, then
//! from the environment, then defaults.
//!
//! | parameter        | environment          | values                                    | default |
//! |------------------|----------------------|-------------------------------------------|---------|
//! | `engine`         |                      | `auto` (GPU when an adapter exists), `cpu`, `gpu` | `auto` |
//! | `precision`      |                      | `fp32`, `fp16`                            | `fp32`  |
//! | `max_pool_size`  | `MPS_MAX_POOL_SIZE`  | bytes: `268435456`, `256MiB`, `256M`, `1G` | 1 GiB |
//! | `max_buffer_age` | `MPS_MAX_BUFFER_AGE` | seconds: `30`, `2.5`, `30s`, `500ms`      | 60 s |
//! | `verbose`        | `MPS_VERBOSE`        | `1`/`true`/`yes`/`on`, `0`/`false`/`no`/`off` | off |
//! | `intra_op_threads` |                    | threads of the model's own CPU pool: `4`; `0` = the shared pool | `0` |
//! | `autotune`       | `METAL_MPS_GPU_AUTOTUNE` | GPU: time the tile candidates of each layer while planning: `on`/`off` (flags as `verbose`) | on for GPUs, off for software adapters |
//!
//! A parameter wins over the environment variable, which applies to every model.
//! The pool variables are read by the GPU engine itself when the parameter is
//! absent (its `PoolConfig` fields stay `None`); the parameters parse as the
//! engine parses those variables (`metal_mps_ir::units::{parse_bytes, parse_duration}`),
//! repeated here so this crate does not depend on the GPU engine.

use crate::error::ConfigError;
use crate::types::ModelConfig;
use metal_mps::{Device, Options, PoolConfig, Precision};
use metal_mps_ir::units::{parse_bytes, parse_duration};

/// The parameter keys this crate reads.
pub const PARAMETER_KEYS: [&str; 7] = [
    "engine",
    "precision",
    "max_pool_size",
    "max_buffer_age",
    "verbose",
    "intra_op_threads",
    "autotune",
];

/// The most threads `intra_op_threads` may ask for.
const MAX_THREADS: usize = 1024;

/// Which engine a model asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// The GPU engine when a GPU adapter exists, else the CPU engine.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

impl EngineChoice {
    /// The device to run on, given whether a GPU adapter exists.
    pub fn resolve(self, gpu_available: bool) -> Result<Device, ConfigError> {
        match (self, gpu_available) {
            (EngineChoice::Cpu, _) | (EngineChoice::Auto, false) => Ok(Device::Cpu),
            (EngineChoice::Gpu | EngineChoice::Auto, true) => Ok(Device::Gpu),
            (EngineChoice::Gpu, false) => Err(ConfigError::new(
                "parameters.engine",
                "is 'gpu' but this machine has no GPU adapter; use 'auto' to fall back to the CPU engine",
            )),
        }
    }
}

/// Everything that selects and tunes the engine of a model.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub engine: EngineChoice,
    pub precision: Precision,
    pub pool: PoolConfig,
    pub verbose: bool,
    /// Threads of the model's own CPU pool; `None`: the process-wide pool
    /// (as many threads as the process may use).
    pub threads: Option<usize>,
    /// GPU autotune; `None`: the engine's default (it reads
    /// `METAL_MPS_GPU_AUTOTUNE` itself).
    pub autotune: Option<bool>,
}

impl EngineSettings {
    /// Settings from `config.parameters`, falling back to the process environment.
    pub fn from_config(config: &ModelConfig) -> Result<EngineSettings, ConfigError> {
        EngineSettings::from_sources(config, |k| std::env::var(k).ok())
    }

    /// Settings from `config.parameters`, falling back to `env` (a lookup such as `std::env::var`).
    pub fn from_sources(
        config: &ModelConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<EngineSettings, ConfigError> {
        // The parameter if set, else the environment variable if any; with the field name to blame.
        let pick = |key: &str, var: Option<&str>| -> Option<(String, String)> {
            match (
                config.parameter(key),
                var.and_then(|v| env(v).map(|s| (v, s))),
            ) {
                (Some(p), _) => Some((format!("parameters.{key}"), p.to_string())),
                (None, Some((v, s))) => Some((format!("environment variable {v}"), s)),
                (None, None) => None,
            }
        };
        let engine = match pick("engine", None) {
            None => EngineChoice::Auto,
            Some((field, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "auto" | "" => EngineChoice::Auto,
                "cpu" => EngineChoice::Cpu,
                "gpu" => EngineChoice::Gpu,
                _ => {
                    return Err(ConfigError::new(
                        field,
                        format!("is '{v}'; use 'auto', 'cpu' or 'gpu'"),
                    ))
                }
            },
        };
        let precision = match pick("precision", None) {
            None => Precision::F32,
            Some((field, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "fp32" | "" => Precision::F32,
                "fp16" => Precision::F16,
                _ => {
                    return Err(ConfigError::new(
                        field,
                        format!("is '{v}'; use 'fp32' or 'fp16'"),
                    ))
                }
            },
        };
        let max_pool_bytes = match pick("max_pool_size", None) {
            None => None,
            Some((field, v)) => Some(parse_bytes(&v).ok_or_else(|| {
                ConfigError::new(
                    field,
                    format!("is '{v}'; give a size in bytes such as 268435456, 256MiB or 1G"),
                )
            })?),
        };
        let max_buffer_age = match pick("max_buffer_age", None) {
            None => None,
            Some((field, v)) => Some(parse_duration(&v).ok_or_else(|| {
                ConfigError::new(
                    field,
                    format!("is '{v}'; give a duration in seconds such as 30, 2.5 or 500ms"),
                )
            })?),
        };
        let verbose = match pick("verbose", Some("MPS_VERBOSE")) {
            None => false,
            Some((field, v)) => parse_flag(&v).map_err(|m| ConfigError::new(field, m))?,
        };
        let threads = match pick("intra_op_threads", None) {
            None => None,
            Some((field, v)) => match v.trim().parse::<usize>() {
                Ok(0) => None,
                Ok(n) if n <= MAX_THREADS => Some(n),
                _ => {
                    return Err(ConfigError::new(
                        field,
                        format!(
                        "is '{v}'; give a thread count from 0 (the shared pool) to {MAX_THREADS}"
                    ),
                    ))
                }
            },
        };
        let autotune = match pick("autotune", None) {
            None => None,
            Some((field, v)) => Some(parse_flag(&v).map_err(|m| ConfigError::new(field, m))?),
        };
        let pool = PoolConfig {
            max_pool_bytes,
            max_buffer_age,
        };
        Ok(EngineSettings {
            engine,
            precision,
            pool,
            verbose,
            threads,
            autotune,
        })
    }

    /// Engine options for running on `device`.
    pub fn options(&self, device: Device) -> Options {
        Options {
            device,
            precision: self.precision,
            pool: self.pool.clone(),
            threads: self.threads,
            autotune: self.autotune,
            ..Default::default()
        }
    }
}

/// Parameter keys of `config` that no one reads (likely typos), for a warning.
pub fn unknown_parameters(config: &ModelConfig) -> Vec<&str> {
    config
        .parameters
        .keys()
        .map(String::as_str)
        .filter(|k| !PARAMETER_KEYS.contains(k))
        .collect()
}

fn parse_flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("is '{s}'; use true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Parameter;
    use std::time::Duration;

    fn config(params: &[(&str, &str)]) -> ModelConfig {
        let mut c = ModelConfig::default();
        for (k, v) in params {
            c.parameters.insert(
                k.to_string(),
                Parameter {
                    string_value: v.to_string(),
                },
            );
        }
        c
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults() {
        let s = EngineSettings::from_sources(&config(&[]), no_env).unwrap();
        assert_eq!(s.engine, EngineChoice::Auto);
        assert!(matches!(s.precision, Precision::F32));
        assert_eq!(s.pool.max_pool_bytes, None);
        assert_eq!(s.pool.max_buffer_age, None);
        assert!(!s.verbose);
        assert_eq!(s.threads, None);
        assert_eq!(s.autotune, None);
    }

    #[test]
    fn parameters_are_read() {
        let c = config(&[
            ("engine", "CPU"),
            ("precision", "fp16"),
            ("max_pool_size", "256MiB"),
            ("max_buffer_age", "500ms"),
            ("verbose", "true"),
            ("intra_op_threads", "3"),
            ("autotune", "off"),
        ]);
        let s = EngineSettings::from_sources(&c, no_env).unwrap();
        assert_eq!(s.engine, EngineChoice::Cpu);
        assert!(matches!(s.precision, Precision::F16));
        assert_eq!(s.pool.max_pool_bytes, Some(256 << 20));
        assert_eq!(s.pool.max_buffer_age, Some(Duration::from_millis(500)));
        assert!(s.verbose);
        assert!(matches!(s.options(Device::Gpu).device, Device::Gpu));
        assert_eq!(s.options(Device::Cpu).threads, Some(3));
        assert_eq!(s.options(Device::Gpu).autotune, Some(false));
        assert!(unknown_parameters(&c).is_empty());
    }

    #[test]
    fn environment_applies_unless_a_parameter_overrides_it() {
        let env = |k: &str| (k == "MPS_VERBOSE").then(|| "1".to_string());
        let s = EngineSettings::from_sources(&config(&[]), env).unwrap();
        assert!(s.verbose);
        // The pool variables are left to the engine: unset fields stay None.
        assert_eq!(s.pool, PoolConfig::default());
        let s = EngineSettings::from_sources(
            &config(&[("verbose", "off"), ("max_pool_size", "1G")]),
            env,
        )
        .unwrap();
        assert!(!s.verbose);
        assert_eq!(s.pool.max_pool_bytes, Some(1 << 30));
    }

    #[test]
    fn bad_values_name_their_source() {
        let e =
            EngineSettings::from_sources(&config(&[("precision", "int4")]), no_env).unwrap_err();
        assert_eq!(e.field, "parameters.precision");
        assert!(e.message.contains("'int4'"), "{e}");
        let e = EngineSettings::from_sources(&config(&[]), |_| Some("loud".into())).unwrap_err();
        assert_eq!(e.field, "environment variable MPS_VERBOSE");
        for (k, bad) in [
            ("max_pool_size", "12X"),
            ("max_pool_size", "-1"),
            ("max_buffer_age", "1h"),
            ("max_buffer_age", "-1"),
            ("intra_op_threads", "-2"),
            ("intra_op_threads", "two"),
            ("intra_op_threads", "100000"),
            ("autotune", "fast"),
        ] {
            let e = EngineSettings::from_sources(&config(&[(k, bad)]), no_env).unwrap_err();
            assert_eq!(e.field, format!("parameters.{k}"), "{e}");
        }
    }

    #[test]
    fn engine_resolution() {
        assert!(matches!(EngineChoice::Auto.resolve(true), Ok(Device::Gpu)));
        assert!(matches!(EngineChoice::Auto.resolve(false), Ok(Device::Cpu)));
        assert!(matches!(EngineChoice::Cpu.resolve(true), Ok(Device::Cpu)));
        assert_eq!(
            EngineChoice::Gpu.resolve(false).unwrap_err().field,
            "parameters.engine"
        );
    }

    #[test]
    fn unknown_keys_are_reported() {
        assert_eq!(
            unknown_parameters(&config(&[("precison", "fp16")])),
            vec!["precison"]
        );
    }
}
