//! Engine settings of one model: from its configuration's `parameters`, then
//! from the environment, then defaults.
//!
//! | parameter        | environment          | values                                    | default |
//! |------------------|----------------------|-------------------------------------------|---------|
//! | `engine`         |                      | `auto` (GPU when an adapter exists), `cpu`, `gpu` | `auto` |
//! | `precision`      |                      | `fp32`, `fp16`                            | `fp32`  |
//! | `max_pool_size`  | `MPS_MAX_POOL_SIZE`  | bytes: `268435456`, `256MiB`, `256M`, `1G` | engine's |
//! | `max_buffer_age` | `MPS_MAX_BUFFER_AGE` | seconds: `30`, `2.5`, `30s`, `500ms`      | engine's |
//! | `verbose`        | `MPS_VERBOSE`        | `1`/`true`/`yes`/`on`, `0`/`false`/`no`/`off` | off |
//!
//! A parameter wins over the environment variable, which applies to every model.

use crate::error::ConfigError;
use crate::types::ModelConfig;
use metal_mps::{Device, Options, PoolConfig, Precision};
use std::time::Duration;

/// The parameter keys this crate reads.
pub const PARAMETER_KEYS: [&str; 5] = ["engine", "precision", "max_pool_size", "max_buffer_age", "verbose"];

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
}

impl EngineSettings {
    /// Settings from `config.parameters`, falling back to the process environment.
    pub fn from_config(config: &ModelConfig) -> Result<EngineSettings, ConfigError> {
        EngineSettings::from_sources(config, |k| std::env::var(k).ok())
    }

    /// Settings from `config.parameters`, falling back to `env` (a lookup such as `std::env::var`).
    pub fn from_sources(config: &ModelConfig, env: impl Fn(&str) -> Option<String>) -> Result<EngineSettings, ConfigError> {
        // The parameter if set, else the environment variable if any; with the field name to blame.
        let pick = |key: &str, var: Option<&str>| -> Option<(String, String)> {
            match (config.parameter(key), var.and_then(|v| env(v).map(|s| (v, s)))) {
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
                _ => return Err(ConfigError::new(field, format!("is '{v}'; use 'auto', 'cpu' or 'gpu'"))),
            },
        };
        let precision = match pick("precision", None) {
            None => Precision::F32,
            Some((field, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "fp32" | "" => Precision::F32,
                "fp16" => Precision::F16,
                _ => return Err(ConfigError::new(field, format!("is '{v}'; use 'fp32' or 'fp16'"))),
            },
        };
        let max_pool_bytes = match pick("max_pool_size", Some("MPS_MAX_POOL_SIZE")) {
            None => None,
            Some((field, v)) => Some(parse_bytes(&v).map_err(|m| ConfigError::new(field, m))?),
        };
        let max_buffer_age = match pick("max_buffer_age", Some("MPS_MAX_BUFFER_AGE")) {
            None => None,
            Some((field, v)) => Some(parse_duration(&v).map_err(|m| ConfigError::new(field, m))?),
        };
        let verbose = match pick("verbose", Some("MPS_VERBOSE")) {
            None => false,
            Some((field, v)) => parse_flag(&v).map_err(|m| ConfigError::new(field, m))?,
        };
        let pool = PoolConfig { max_pool_bytes, max_buffer_age, ..Default::default() };
        Ok(EngineSettings { engine, precision, pool, verbose })
    }

    /// Engine options for running on `device`.
    pub fn options(&self, device: Device) -> Options {
        Options { device, precision: self.precision.clone(), pool: self.pool.clone(), ..Default::default() }
    }
}

/// Parameter keys of `config` that no one reads (likely typos), for a warning.
pub fn unknown_parameters(config: &ModelConfig) -> Vec<&str> {
    config.parameters.keys().map(String::as_str).filter(|k| !PARAMETER_KEYS.contains(k)).collect()
}

/// `1048576`, `1024K`, `1M`, `1MiB`, `1 GB`: bytes, with binary multiples.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => u32::MAX,
    };
    num.parse::<u64>()
        .ok()
        .filter(|_| shift != u32::MAX)
        .and_then(|n| n.checked_mul(1u64.checked_shl(shift)?))
        .ok_or_else(|| format!("is '{s}'; give a size in bytes such as 268435456, 256MiB or 1G"))
}

/// `30`, `2.5`, `30s`, `500ms`: a duration, in seconds unless marked.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t.as_str(), 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v * scale).ok())
        .ok_or_else(|| format!("is '{s}'; give a duration in seconds such as 30, 2.5 or 500ms"))
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

    fn config(params: &[(&str, &str)]) -> ModelConfig {
        let mut c = ModelConfig::default();
        for (k, v) in params {
            c.parameters.insert(k.to_string(), Parameter { string_value: v.to_string() });
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
    }

    #[test]
    fn parameters_are_read() {
        let c = config(&[
            ("engine", "CPU"),
            ("precision", "fp16"),
            ("max_pool_size", "256MiB"),
            ("max_buffer_age", "500ms"),
            ("verbose", "true"),
        ]);
        let s = EngineSettings::from_sources(&c, no_env).unwrap();
        assert_eq!(s.engine, EngineChoice::Cpu);
        assert!(matches!(s.precision, Precision::F16));
        assert_eq!(s.pool.max_pool_bytes, Some(256 << 20));
        assert_eq!(s.pool.max_buffer_age, Some(Duration::from_millis(500)));
        assert!(s.verbose);
        assert!(matches!(s.options(Device::Gpu).device, Device::Gpu));
        assert!(unknown_parameters(&c).is_empty());
    }

    #[test]
    fn environment_applies_unless_a_parameter_overrides_it() {
        let env = |k: &str| match k {
            "MPS_MAX_POOL_SIZE" => Some("1024".to_string()),
            "MPS_MAX_BUFFER_AGE" => Some("2.5".to_string()),
            "MPS_VERBOSE" => Some("1".to_string()),
            _ => None,
        };
        let s = EngineSettings::from_sources(&config(&[]), env).unwrap();
        assert_eq!(s.pool.max_pool_bytes, Some(1024));
        assert_eq!(s.pool.max_buffer_age, Some(Duration::from_millis(2500)));
        assert!(s.verbose);
        let s = EngineSettings::from_sources(&config(&[("verbose", "off"), ("max_pool_size", "1G")]), env).unwrap();
        assert!(!s.verbose);
        assert_eq!(s.pool.max_pool_bytes, Some(1 << 30));
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = EngineSettings::from_sources(&config(&[("precision", "int4")]), no_env).unwrap_err();
        assert_eq!(e.field, "parameters.precision");
        assert!(e.message.contains("'int4'"), "{e}");
        let e = EngineSettings::from_sources(&config(&[]), |_| Some("lots".into())).unwrap_err();
        assert_eq!(e.field, "environment variable MPS_MAX_POOL_SIZE");
        for bad in ["12X", "-1", "M", "99999999999T"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        for bad in ["-1", "abc", "1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn engine_resolution() {
        assert!(matches!(EngineChoice::Auto.resolve(true), Ok(Device::Gpu)));
        assert!(matches!(EngineChoice::Auto.resolve(false), Ok(Device::Cpu)));
        assert!(matches!(EngineChoice::Cpu.resolve(true), Ok(Device::Cpu)));
        assert_eq!(EngineChoice::Gpu.resolve(false).unwrap_err().field, "parameters.engine");
    }

    #[test]
    fn unknown_keys_are_reported() {
        assert_eq!(unknown_parameters(&config(&[("precison", "fp16")])), vec!["precison"]);
    }
}
