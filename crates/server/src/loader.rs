//! Loading one model from the repository: config, versions, engine
//! instances. Blocking (engine loads take a while): the manager runs it on
//! a blocking thread.

use crate::config::{instance_devices, read_config, serving_config, ConfigDefaults};
use crate::instance::Runner;
use crate::pbtxt;
use crate::repository::Repository;
use crate::served::ServedVersion;
use crate::serving_config::ServingConfig;
use metal_mps::{Device, Model};
use metal_mps_model_config::{
    auto_complete, unknown_parameters, validate, EngineSettings, InstanceGroup, InstanceKind,
    LatestVersions, ModelConfig, VersionPolicy,
};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The outcome of loading a model: each selected version served or failed.
pub struct LoadedModel {
    pub versions: Vec<(u64, Result<Arc<ServedVersion>, String>)>,
}

/// Loads the model in `model_dir` (named `name`): reads its config (or
/// `override_json`), selects versions by policy, and loads every selected
/// version, the newest first. An error here concerns the whole model (bad
/// config, no version); a version that fails alone is reported in its slot.
pub fn load_model(
    model_dir: &Path,
    name: &str,
    override_json: Option<&Value>,
    defaults: &ConfigDefaults,
) -> Result<LoadedModel, String> {
    let mut config = read_config(model_dir, name, override_json)?;
    let settings = EngineSettings::from_config(&config).map_err(|e| e.to_string())?;
    for key in unknown_parameters(&config) {
        tracing::warn!(
            model = name,
            parameter = key,
            "unknown config parameter (ignored)"
        );
    }
    let devices = instance_devices(&config, &settings, metal_mps::gpu_available())
        .map_err(|e| e.to_string())?;
    fill_defaults(&mut config, &devices);
    let available = Repository::versions(model_dir);
    let selected = VersionPolicy::select(config.version_policy.as_ref(), &available);
    if selected.is_empty() {
        return Err(format!(
            "at least one version must be available under the version policy of model '{name}' \
             (version directories found: {available:?})"
        ));
    }
    let mut completed: Option<(ServingConfig, Value)> = None;
    let mut versions = Vec::with_capacity(selected.len());
    for &v in selected.iter().rev() {
        let outcome = load_version(
            model_dir,
            v,
            &mut config,
            &settings,
            &devices,
            defaults,
            &mut completed,
        );
        if let Err(e) = &outcome {
            tracing::error!(model = name, version = v, error = %e, "version failed to load");
        }
        versions.push((v, outcome));
    }
    versions.reverse();
    Ok(LoadedModel { versions })
}

/// Writes out what Triton also makes explicit in a served config: the
/// version policy and the instance group actually used.
fn fill_defaults(config: &mut ModelConfig, devices: &[Device]) {
    if config.version_policy.is_none() {
        config.version_policy = Some(VersionPolicy {
            latest: Some(LatestVersions { num_versions: 1 }),
            ..Default::default()
        });
    }
    let model = config.name.clone();
    for (i, g) in config.instance_group.iter_mut().enumerate() {
        if g.name.is_empty() {
            g.name = format!("{model}_{i}");
        }
        g.count = g.count.max(1);
    }
    if config.instance_group.is_empty() {
        let kind = match devices.first() {
            Some(Device::Gpu) => InstanceKind::Gpu,
            _ => InstanceKind::Cpu,
        };
        config.instance_group.push(InstanceGroup {
            name: format!("{model}_0"),
            kind,
            count: devices.len() as i64,
            ..Default::default()
        });
    }
}

/// Loads one version's instances; the first version loaded completes the
/// config (`completed`), later ones are validated against it.
fn load_version(
    model_dir: &Path,
    version: u64,
    config: &mut ModelConfig,
    settings: &EngineSettings,
    devices: &[Device],
    defaults: &ConfigDefaults,
    completed: &mut Option<(ServingConfig, Value)>,
) -> Result<Arc<ServedVersion>, String> {
    let started = Instant::now();
    let path = config
        .resolve_model_file(model_dir, version)
        .map_err(|e| e.to_string())?;
    let load = |device: Device| -> Result<Model, String> {
        Model::load(&path, &settings.options(device))
            .and_then(|m| m.require_tensor_io().map(|()| m))
            .map_err(|e| format!("failed to load {}: {e}", path.display()))
    };
    let first = load(devices[0])?;
    if completed.is_none() {
        for change in auto_complete(
            config,
            first.inputs(),
            first.outputs(),
            defaults.default_max_batch_size,
        )
        .map_err(|e| e.to_string())?
        {
            tracing::info!(model = %config.name, "auto-complete: {change}");
        }
    }
    validate(config, first.inputs(), first.outputs()).map_err(|e| e.to_string())?;
    if completed.is_none() {
        let serving = serving_config(config, defaults).map_err(|e| e.to_string())?;
        let json = serde_json::to_value(&*config).map_err(|e| e.to_string())?;
        let json = pbtxt::normalize_json(&json)?;
        *completed = Some((serving, json));
    }
    let (serving, json) = completed.clone().expect("set above");
    let output_index = serving
        .outputs
        .iter()
        .map(|o| {
            first
                .outputs()
                .iter()
                .position(|m| m.name == o.name)
                .expect("validated")
        })
        .collect();
    let mut runners: Vec<Arc<dyn Runner>> = vec![Arc::new(first)];
    for &d in &devices[1..] {
        runners.push(Arc::new(load(d)?));
    }
    let served = ServedVersion::start(
        version,
        serving,
        json,
        runners,
        output_index,
        started.elapsed(),
    )
    .map_err(|e| format!("cannot start instance threads: {e}"))?;
    tracing::info!(
        model = %config.name,
        version,
        instances = devices.len(),
        ms = started.elapsed().as_millis() as u64,
        "version loaded"
    );
    Ok(Arc::new(served))
}
