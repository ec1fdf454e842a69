//! `metal-mps test`: ONNX backend-test cases.

use crate::compare::{compare, tolerances};
use crate::io::read_tensor;
use crate::EngineArgs;
use anyhow::{bail, Context, Result};
use metal_mps::{Model, Tensor};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Case directories (model.onnx + test_data_set_N/input_K.pb, output_K.pb), or directories of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Relative tolerance (FP16 outputs use at least 1e-2).
    #[arg(long, default_value_t = 1e-3)]
    rtol: f64,
    /// Absolute tolerance (FP16 outputs use at least 1e-3).
    #[arg(long, default_value_t = 1e-7)]
    atol: f64,
}

enum Outcome {
    Pass,
    Fail(String),
    Error(String),
    Skip(String),
}

pub fn main(args: Args) -> Result<ExitCode> {
    let mut cases = Vec::new();
    for p in &args.paths {
        cases.extend(find_cases(p)?);
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in &cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let outcome =
            catch_unwind(AssertUnwindSafe(|| run_case(case, &args))).unwrap_or_else(|p| {
                Outcome::Error(format!("internal error (panic): {}", panic_message(&p)))
            });
        match outcome {
            Outcome::Pass => {
                passed += 1;
                println!("PASS {name}");
            }
            Outcome::Fail(m) => {
                failed += 1;
                println!("FAIL {name}: {m}");
            }
            Outcome::Error(m) => {
                failed += 1;
                println!("ERROR {name}: {}", m.replace('\n', " "));
            }
            Outcome::Skip(m) => {
                skipped += 1;
                println!("SKIP {name}: {m}");
            }
        }
    }
    let mut summary = format!("{passed} passed, {failed} failed");
    if skipped > 0 {
        summary.push_str(&format!(", {skipped} skipped"));
    }
    println!("{summary}");
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A case directory itself, or the case directories directly inside it.
fn find_cases(path: &Path) -> Result<Vec<PathBuf>> {
    if path.join("model.onnx").is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        bail!(
            "{}: not a test case directory (no model.onnx) nor a directory of cases",
            path.display()
        );
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    cases.sort();
    if cases.is_empty() {
        bail!(
            "{}: no test cases found (directories holding model.onnx)",
            path.display()
        );
    }
    Ok(cases)
}

fn numbered(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            let n = stem.strip_prefix(prefix)?.parse().ok()?;
            (p.extension()? == "pb").then_some((n, p))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

fn run_case(case: &Path, args: &Args) -> Outcome {
    let model = match Model::load(case.join("model.onnx"), &args.engine.options()) {
        Ok(m) => m,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let mut sets: Vec<PathBuf> = match std::fs::read_dir(case) {
        Ok(d) => d
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
            })
            .collect(),
        Err(e) => return Outcome::Error(e.to_string()),
    };
    sets.sort();
    if sets.is_empty() {
        return Outcome::Skip("no test_data_set_N directories".into());
    }
    for set in &sets {
        match run_set(&model, set, args) {
            Ok(None) => {}
            Ok(Some(fail)) => return Outcome::Fail(fail),
            Err(e) => return Outcome::Error(format!("{e:#}")),
        }
    }
    Outcome::Pass
}

/// Runs one data set; `Some(message)` when an output differs.
fn run_set(model: &Model, set: &Path, args: &Args) -> Result<Option<String>> {
    let inputs: Vec<Tensor> = numbered(set, "input_")?
        .iter()
        .map(|p| read_tensor(p))
        .collect::<Result<_>>()?;
    let expected: Vec<Tensor> = numbered(set, "output_")?
        .iter()
        .map(|p| read_tensor(p))
        .collect::<Result<_>>()?;
    if inputs.len() != model.inputs().len() {
        bail!(
            "the data set has {} inputs, the model {}",
            inputs.len(),
            model.inputs().len()
        );
    }
    let outputs = model.run_in_order(&inputs)?;
    if outputs.len() != expected.len() {
        bail!(
            "the model gives {} outputs, the data set expects {}",
            outputs.len(),
            expected.len()
        );
    }
    for (k, (a, e)) in outputs.iter().zip(&expected).enumerate() {
        let (rtol, atol) = tolerances(e.dtype(), args.rtol, args.atol);
        let c = compare(a, e, rtol, atol);
        if !c.ok {
            let set_name = set.file_name().unwrap_or_default().to_string_lossy();
            return Ok(Some(match c.message {
                Some(m) => format!("{set_name} output {k}: {m}"),
                None => format!(
                    "{set_name} output {k}: max abs err {:.3e}, max rel err {:.3e}",
                    c.max_abs, c.max_rel
                ),
            }));
        }
    }
    Ok(None)
}

pub fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
