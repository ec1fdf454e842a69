//! `metal-mps test`: ONNX backend-test cases.

use crate::compare::{compare, tolerances};
use crate::io::{read_tensor, read_value};
use crate::EngineArgs;
use anyhow::{bail, Context, Result};
use metal_mps::{Datum, Model, Tensor};
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
    let (in_kinds, out_kinds) = (model.input_kinds(), model.output_kinds());
    if !in_kinds.iter().chain(&out_kinds).all(|k| k.is_tensor()) {
        return run_data_set(model, set, args);
    }
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

/// [`run_set`] for models with sequence or optional inputs or outputs.
fn run_data_set(model: &Model, set: &Path, args: &Args) -> Result<Option<String>> {
    let read = |prefix: &str, kinds: &[metal_mps::Kind]| -> Result<Vec<Datum>> {
        let files = numbered(set, prefix)?;
        if files.len() != kinds.len() {
            bail!(
                "the data set has {} {prefix} files, the model {} values",
                files.len(),
                kinds.len()
            );
        }
        files
            .iter()
            .zip(kinds)
            .map(|(p, k)| read_value(p, k))
            .collect()
    };
    let inputs = read("input_", &model.input_kinds())?;
    let expected = read("output_", &model.output_kinds())?;
    let outputs = model.run_data(&inputs)?;
    let set_name = set.file_name().unwrap_or_default().to_string_lossy();
    for (k, (a, e)) in outputs.iter().zip(&expected).enumerate() {
        if let Some(m) = compare_data(a, e, args) {
            return Ok(Some(format!("{set_name} output {k}: {m}")));
        }
    }
    Ok(None)
}

/// How `actual` differs from `expected`: sequences element by element,
/// optionals by presence and then their value.
fn compare_data(actual: &Datum, expected: &Datum, args: &Args) -> Option<String> {
    match (actual, expected) {
        (Datum::Tensor(a), Datum::Tensor(e)) => {
            let (rtol, atol) = tolerances(e.dtype(), args.rtol, args.atol);
            let c = compare(a, e, rtol, atol);
            (!c.ok).then(|| {
                c.message.unwrap_or_else(|| {
                    format!(
                        "max abs err {:.3e}, max rel err {:.3e}",
                        c.max_abs, c.max_rel
                    )
                })
            })
        }
        (Datum::Sequence(a), Datum::Sequence(e)) => {
            if a.len() != e.len() {
                return Some(format!(
                    "a sequence of {} tensors, expected {}",
                    a.len(),
                    e.len()
                ));
            }
            a.iter().zip(e).enumerate().find_map(|(i, (a, e))| {
                compare_data(&Datum::Tensor(a.clone()), &Datum::Tensor(e.clone()), args)
                    .map(|m| format!("sequence element {i}: {m}"))
            })
        }
        (Datum::Optional(a), Datum::Optional(e)) => match (a, e) {
            (None, None) => None,
            (Some(a), Some(e)) => compare_data(a, e, args).map(|m| format!("optional: {m}")),
            _ => Some(format!(
                "got {}, expected {}",
                actual.describe(),
                expected.describe()
            )),
        },
        _ => Some(format!(
            "got a {}, expected a {}",
            actual.describe(),
            expected.describe()
        )),
    }
}

pub fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
