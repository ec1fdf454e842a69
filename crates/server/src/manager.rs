//! The model manager: which models and versions are loaded, loading and
//! unloading them (explicit requests, start-up, polling), and resolving a
//! request's model and version with Triton's errors.
//!
//! Loads and unloads run one at a time; requests keep being served from the
//! versions already ready while a model (re)loads, and a reload swaps the new
//! versions in only once they are ready. Unloading (or replacing) a version
//! takes it out of routing at once, then waits for every request that had
//! already taken it to finish (see [`drain`]).

use crate::config::ConfigDefaults;
use crate::error::{ServerError, ServerResult};
use crate::loader::load_model;
use crate::repository::{Fingerprint, Repository};
use crate::served::ServedVersion;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// How models get loaded (`--model-control-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ControlMode {
    /// Load every model at start; no load/unload requests.
    None,
    /// Load what `--load-model` names at start; load/unload requests.
    Explicit,
    /// Load every model at start and follow the repository's changes.
    Poll,
}

/// The state of one version, as the repository index reports it.
#[derive(Clone)]
pub enum VersionState {
    Ready(Arc<ServedVersion>),
    Unloading,
    /// Failed to load, or unloaded; with the reason.
    Unavailable(String),
}

impl VersionState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ready(_) => "READY",
            Self::Unloading => "UNLOADING",
            Self::Unavailable(_) => "UNAVAILABLE",
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            Self::Unavailable(r) => r,
            _ => "",
        }
    }
}

#[derive(Default)]
struct ModelEntry {
    versions: BTreeMap<u64, VersionState>,
    /// Why the model as a whole failed to load (bad config, no version).
    error: Option<String>,
    /// Whether the model should be loaded (counts for readiness).
    wanted: bool,
    /// A load is under way.
    loading: bool,
    /// The repository contents last loaded, for poll mode.
    fingerprint: Option<Fingerprint>,
}

/// One row of the repository index.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexEntry {
    pub name: String,
    /// Empty for a model never loaded.
    pub version: String,
    pub state: String,
    pub reason: String,
}

/// Owns every served model.
pub struct ModelManager {
    repo: Repository,
    mode: ControlMode,
    defaults: ConfigDefaults,
    strict_readiness: bool,
    models: RwLock<BTreeMap<String, ModelEntry>>,
    ops: tokio::sync::Mutex<()>,
    stopping: AtomicBool,
}

impl ModelManager {
    pub fn new(
        repo: Repository,
        mode: ControlMode,
        defaults: ConfigDefaults,
        strict_readiness: bool,
    ) -> Self {
        ModelManager {
            repo,
            mode,
            defaults,
            strict_readiness,
            models: RwLock::new(BTreeMap::new()),
            ops: tokio::sync::Mutex::new(()),
            stopping: AtomicBool::new(false),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ModelEntry>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ModelEntry>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the server is ready: not stopping and, with strict readiness,
    /// every model that should be loaded has all its versions ready.
    pub fn server_ready(&self) -> bool {
        if self.stopping.load(Ordering::SeqCst) {
            return false;
        }
        !self.strict_readiness
            || self.read().values().filter(|e| e.wanted).all(|e| {
                e.error.is_none()
                    && !e.loading
                    && !e.versions.is_empty()
                    && e.versions
                        .values()
                        .all(|s| matches!(s, VersionState::Ready(_)))
            })
    }

    /// Marks the server as stopping: it reports not ready from now on.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The ready version `version` of `name` (`None`: the highest ready
    /// one), or Triton's error for why there is none.
    pub fn get(&self, name: &str, version: Option<u64>) -> ServerResult<Arc<ServedVersion>> {
        let models = self.read();
        let Some(entry) = models.get(name) else {
            return Err(ServerError::not_found(format!(
                "Request for unknown model: '{name}' is not found"
            )));
        };
        let unknown =
            |what: String| ServerError::not_found(format!("Request for unknown model: {what}"));
        match version {
            Some(v) => match entry.versions.get(&v) {
                Some(VersionState::Ready(s)) => Ok(s.clone()),
                Some(state) => Err(ServerError::unavailable(format!(
                    "Request for unknown model: '{name}' version {v} is not at ready state{}",
                    reason_suffix(state.reason())
                ))),
                None => Err(unknown(format!("'{name}' version {v} is not found"))),
            },
            None => entry
                .versions
                .values()
                .rev()
                .find_map(|s| match s {
                    VersionState::Ready(s) => Some(s.clone()),
                    _ => None,
                })
                .ok_or_else(|| {
                    let why = entry
                        .error
                        .clone()
                        .or_else(|| {
                            entry
                                .versions
                                .values()
                                .map(|s| s.reason().to_string())
                                .find(|r| !r.is_empty())
                        })
                        .unwrap_or_default();
                    unknown(format!(
                        "'{name}' has no available versions{}",
                        reason_suffix(&why)
                    ))
                }),
        }
    }

    /// The ready versions of `name`, ascending (for metadata).
    pub fn ready_versions(&self, name: &str) -> Vec<u64> {
        self.read()
            .get(name)
            .map(|e| {
                e.versions
                    .iter()
                    .filter(|(_, s)| matches!(s, VersionState::Ready(_)))
                    .map(|(v, _)| *v)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every ready version of every model (`name` given: of that model;
    /// `version` given: only that one), for statistics and metrics.
    pub fn served(
        &self,
        name: Option<&str>,
        version: Option<u64>,
    ) -> ServerResult<Vec<(String, Arc<ServedVersion>)>> {
        if let Some(n) = name {
            if let Some(v) = version {
                return Ok(vec![(n.to_string(), self.get(n, Some(v))?)]);
            }
            if self.ready_versions(n).is_empty() {
                self.get(n, None)?;
            }
        }
        let models = self.read();
        Ok(models
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
            .flat_map(|(n, e)| {
                e.versions.values().filter_map(move |s| match s {
                    VersionState::Ready(s) => Some((n.clone(), s.clone())),
                    _ => None,
                })
            })
            .collect())
    }

    /// The repository index: every model on disk or known, with a row per
    /// version that was loaded or tried. `ready_only`: only ready versions.
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let on_disk = self.repo.model_names().unwrap_or_default();
        let models = self.read();
        let names: BTreeSet<&str> = on_disk
            .iter()
            .map(String::as_str)
            .chain(models.keys().map(String::as_str))
            .collect();
        let mut rows = Vec::new();
        for name in names {
            let entry = models.get(name);
            let versions = entry.map(|e| &e.versions);
            match versions.filter(|v| !v.is_empty()) {
                Some(vs) => {
                    for (v, s) in vs {
                        if !ready_only || matches!(s, VersionState::Ready(_)) {
                            rows.push(IndexEntry {
                                name: name.to_string(),
                                version: v.to_string(),
                                state: s.name().to_string(),
                                reason: s.reason().to_string(),
                            });
                        }
                    }
                }
                None if !ready_only => rows.push(IndexEntry {
                    name: name.to_string(),
                    version: String::new(),
                    state: match entry {
                        Some(e) if e.loading => "LOADING",
                        Some(e) if e.error.is_some() => "UNAVAILABLE",
                        _ => "",
                    }
                    .to_string(),
                    reason: entry.and_then(|e| e.error.clone()).unwrap_or_default(),
                }),
                None => {}
            }
        }
        rows
    }

    /// Checks that load/unload requests are allowed in this control mode.
    pub fn check_explicit(&self) -> ServerResult<()> {
        match self.mode {
            ControlMode::Explicit => Ok(()),
            ControlMode::Poll => Err(ServerError::unavailable(
                "explicit model load / unload is not allowed if polling is enabled",
            )),
            ControlMode::None => Err(ServerError::unavailable(
                "explicit model load / unload is not allowed with --model-control-mode=none \
                 (start the server with --model-control-mode=explicit)",
            )),
        }
    }

    /// Loads (or reloads) model `name`, optionally with a JSON config
    /// replacing config.pbtxt. Versions already serving keep serving until
    /// the new ones are ready; versions no longer selected are unloaded.
    /// Fails when the model as a whole or every selected version failed.
    pub async fn load(&self, name: &str, config: Option<Value>) -> ServerResult<()> {
        let _op = self.ops.lock().await;
        self.load_locked(name, config).await
    }

    async fn load_locked(&self, name: &str, config: Option<Value>) -> ServerResult<()> {
        let Some(dir) = self.repo.model_dir(name) else {
            return Err(ServerError::invalid_arg(format!(
                "failed to load '{name}': no model directory '{name}' in the model repository {}",
                self.repo.root().display()
            )));
        };
        tracing::info!(model = name, "loading");
        let fingerprint = Repository::fingerprint(&dir);
        {
            let mut models = self.write();
            let entry = models.entry(name.to_string()).or_default();
            entry.wanted = true;
            entry.loading = true;
        }
        let defaults = self.defaults.clone();
        let owned_name = name.to_string();
        let outcome = tokio::task::spawn_blocking(move || {
            load_model(&dir, &owned_name, config.as_ref(), &defaults)
        })
        .await
        .unwrap_or_else(|e| Err(format!("the loader panicked: {e}")));
        let (old, result) = {
            let mut models = self.write();
            let entry = models.entry(name.to_string()).or_default();
            entry.loading = false;
            entry.fingerprint = Some(fingerprint);
            match outcome {
                Err(e) => {
                    tracing::error!(model = name, error = %e, "model failed to load");
                    entry.error = Some(e.clone());
                    // Versions already serving keep serving.
                    (
                        Vec::new(),
                        Err(ServerError::invalid_arg(format!(
                            "failed to load '{name}': {e}"
                        ))),
                    )
                }
                Ok(loaded) => {
                    entry.error = None;
                    let mut new = BTreeMap::new();
                    let mut errors = Vec::new();
                    for (v, r) in loaded.versions {
                        new.insert(
                            v,
                            match r {
                                Ok(s) => VersionState::Ready(s),
                                Err(e) => {
                                    errors.push(format!("version {v}: {e}"));
                                    VersionState::Unavailable(e)
                                }
                            },
                        );
                    }
                    let old = std::mem::replace(&mut entry.versions, new);
                    let old: Vec<_> = old
                        .into_values()
                        .filter_map(|s| match s {
                            VersionState::Ready(s) => Some(s),
                            _ => None,
                        })
                        .collect();
                    let all_failed = entry
                        .versions
                        .values()
                        .all(|s| !matches!(s, VersionState::Ready(_)));
                    let result = if all_failed {
                        Err(ServerError::invalid_arg(format!(
                            "failed to load '{name}': {}",
                            errors.join("; ")
                        )))
                    } else {
                        Ok(())
                    };
                    (old, result)
                }
            }
        };
        drain(old).await;
        if result.is_ok() {
            tracing::info!(model = name, "loaded");
        }
        result
    }

    /// Unloads model `name`: new requests are refused at once, queued and
    /// executing ones finish first.
    pub async fn unload(&self, name: &str) -> ServerResult<()> {
        let _op = self.ops.lock().await;
        self.unload_locked(name).await
    }

    async fn unload_locked(&self, name: &str) -> ServerResult<()> {
        let old = {
            let mut models = self.write();
            let Some(entry) = models.get_mut(name) else {
                if self.repo.model_dir(name).is_some() {
                    return Ok(());
                }
                return Err(ServerError::invalid_arg(format!(
                    "failed to unload '{name}': no such model in the repository"
                )));
            };
            entry.wanted = false;
            let mut old = Vec::new();
            for state in entry.versions.values_mut() {
                if let VersionState::Ready(s) = state {
                    old.push(s.clone());
                    *state = VersionState::Unloading;
                }
            }
            old
        };
        tracing::info!(model = name, "unloading");
        drain(old).await;
        let mut models = self.write();
        if let Some(entry) = models.get_mut(name) {
            for state in entry.versions.values_mut() {
                *state = VersionState::Unavailable("unloaded".into());
            }
        }
        tracing::info!(model = name, "unloaded");
        Ok(())
    }

    /// Start-up and poll mode: loads models that are new or changed on disk
    /// and unloads those removed. `names`: the models to consider (`None`:
    /// everything in the repository).
    pub async fn sync(&self, names: Option<&[String]>) {
        let _op = self.ops.lock().await;
        let on_disk = match self.repo.model_names() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(repository = %self.repo.root().display(), error = %e, "cannot read the model repository");
                return;
            }
        };
        let wanted: Vec<String> = match names {
            Some(n) => n.to_vec(),
            None => on_disk.clone(),
        };
        for name in &wanted {
            let Some(dir) = self.repo.model_dir(name) else {
                tracing::error!(model = %name, "no such model in the repository");
                continue;
            };
            let current = self.read().get(name).and_then(|e| e.fingerprint.clone());
            if current.as_ref() != Some(&Repository::fingerprint(&dir)) {
                // Errors are recorded in the entry and logged.
                let _ = self.load_locked(name, None).await;
            }
        }
        if names.is_none() {
            let gone: Vec<String> = self
                .read()
                .iter()
                .filter(|(n, e)| e.wanted && !on_disk.contains(n))
                .map(|(n, _)| n.clone())
                .collect();
            for name in gone {
                let _ = self.unload_locked(&name).await;
                self.write().remove(&name);
            }
        }
    }

    /// Unloads everything (shutdown), waiting for in-flight requests.
    pub async fn unload_all(&self) {
        let _op = self.ops.lock().await;
        let names: Vec<String> = self.read().keys().cloned().collect();
        for name in names {
            let _ = self.unload_locked(&name).await;
        }
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

/// Lets the versions' requests finish and stops their threads. Call once
/// the versions are out of routing: the requests that took them before hold
/// references (while their body arrives, in the queue, executing), and the
/// queue closes only when the last of them has answered, so no request
/// accepted before an unload or reload fails because of it.
async fn drain(versions: Vec<Arc<ServedVersion>>) {
    if versions.is_empty() {
        return;
    }
    for v in &versions {
        while Arc::strong_count(v) > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    let _ = tokio::task::spawn_blocking(move || versions.iter().for_each(|v| v.drain())).await;
}
