//! Structured mutations of a valid ONNX model: each one breaks what a broken
//! or hostile file could break (bytes, sizes, types, wiring, attributes,
//! opsets, external data).

use metal_mps_onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use metal_mps_onnx::proto::type_proto::Value as TypeValue;
use metal_mps_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, StringStringEntryProto, TensorProto,
};
use prost::Message;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

/// Sizes a hostile model declares: zero, negative, around 2³¹ and 2⁶², i64 extremes.
const HUGE: &[i64] = &[
    0,
    -1,
    -2,
    1 << 31,
    (1 << 31) - 1,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX,
    i64::MIN,
    65536,
];

/// External data locations that must never leave the model's folder (the
/// harness puts `link` → /etc/passwd, `dirlink` → /etc and `inside.bin`
/// beside each mutated model).
const LOCATIONS: &[&str] = &[
    "/etc/passwd",
    "../../../../../../etc/passwd",
    "link",
    "./link",
    "dirlink/passwd",
    "sub/../link",
    "..",
    ".",
    "",
    "missing.bin",
    "inside.bin",
    "inside.bin/..",
];

/// One mutation of `seed`'s bytes (several for some draws); the result may
/// not even decode.
pub fn mutate(seed: &[u8], rng: &mut StdRng) -> (Vec<u8>, String) {
    let Ok(mut model) = ModelProto::decode(seed) else {
        return byte_level(seed.to_vec(), rng);
    };
    let rounds = rng.random_range(1..=3);
    let mut what = Vec::new();
    for _ in 0..rounds {
        what.push(structured(&mut model, rng));
    }
    let bytes = model.encode_to_vec();
    if rng.random_bool(0.15) {
        let (b, w) = byte_level(bytes, rng);
        what.push(w);
        return (b, what.join(", "));
    }
    (bytes, what.join(", "))
}

fn byte_level(mut bytes: Vec<u8>, rng: &mut StdRng) -> (Vec<u8>, String) {
    if bytes.is_empty() {
        return (bytes, "empty".into());
    }
    if rng.random_bool(0.3) {
        let cut = rng.random_range(0..bytes.len());
        bytes.truncate(cut);
        return (bytes, format!("truncated at {cut}"));
    }
    let flips = rng.random_range(1..=8);
    for _ in 0..flips {
        let i = rng.random_range(0..bytes.len());
        bytes[i] ^= 1 << rng.random_range(0..8);
    }
    (bytes, format!("{flips} bit flips"))
}

fn structured(m: &mut ModelProto, rng: &mut StdRng) -> String {
    let Some(g) = m.graph.as_mut() else {
        return "no graph".into();
    };
    match rng.random_range(0..11) {
        0 => huge_value_dim(g, rng),
        1 => huge_initializer_dim(g, rng),
        2 => bad_dtype(g, rng),
        3 => undefined_input(g, rng),
        4 => cycle(g, rng),
        5 => wrong_attribute(g, rng),
        6 => huge_attribute(g, rng),
        7 => bad_opset(m, rng),
        8 => external_data(g, rng),
        9 => huge_constant_values(g, rng),
        _ => drop_something(g, rng),
    }
}

fn huge_value_dim(g: &mut GraphProto, rng: &mut StdRng) -> String {
    let infos: Vec<_> = g
        .input
        .iter_mut()
        .chain(g.output.iter_mut())
        .chain(g.value_info.iter_mut())
        .collect();
    let Some(v) = infos.into_iter().filter(|v| v.r#type.is_some()).last() else {
        return "no value infos".into();
    };
    let Some(TypeValue::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        return "non-tensor value".into();
    };
    let shape = t.shape.get_or_insert_with(Default::default);
    let d = *HUGE.choose(rng).expect("not empty");
    if shape.dim.is_empty() || rng.random_bool(0.2) {
        shape.dim.push(Default::default());
    }
    let i = rng.random_range(0..shape.dim.len());
    shape.dim[i].value = Some(DimValue::DimValue(d));
    format!("dim {i} of '{}' = {d}", v.name.clone().unwrap_or_default())
}

fn huge_initializer_dim(g: &mut GraphProto, rng: &mut StdRng) -> String {
    let Some(t) = pick_mut(&mut g.initializer, rng) else {
        return "no initializers".into();
    };
    let d = *HUGE.choose(rng).expect("not empty");
    if t.dims.is_empty() || rng.random_bool(0.2) {
        t.dims.push(d);
    } else {
        let i = rng.random_range(0..t.dims.len());
        t.dims[i] = d;
    }
    format!(
        "initializer '{}' dims {:?}",
        t.name.clone().unwrap_or_default(),
        t.dims
    )
}

fn bad_dtype(g: &mut GraphProto, rng: &mut StdRng) -> String {
    let code = *[-1, 0, 8, 14, 15, 24, 26, 30, 99, i32::MAX, i32::MIN]
        .choose(rng)
        .expect("not empty");
    if rng.random_bool(0.5) {
        if let Some(t) = pick_mut(&mut g.initializer, rng) {
            t.data_type = Some(code);
            return format!("initializer dtype {code}");
        }
    }
    let Some(v) = pick_mut(&mut g.input, rng) else {
        return "no inputs".into();
    };
    if let Some(TypeValue::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.elem_type = Some(code);
    }
    format!("input dtype {code}")
}

fn undefined_input(g: &mut GraphProto, rng: &mut StdRng) -> String {
    let Some(n) = pick_mut(&mut g.node, rng) else {
        return "no nodes".into();
    };
    if n.input.is_empty() || rng.random_bool(0.2) {
        n.input.push("nowhere".into());
    } else {
        let i = rng.random_range(0..n.input.len());
        n.input[i] = "nowhere".into();
    }
    "undefined input".into()
}

fn cycle(g: &mut GraphProto, rng: &mut StdRng) -> String {
    if g.node.is_empty() {
        return "no nodes".into();
    }
    let a = rng.random_range(0..g.node.len());
    let b = rng.random_range(a..g.node.len());
    let Some(out) = g.node[b].output.first().cloned() else {
        return "node without outputs".into();
    };
    let n = &mut g.node[a];
    if n.input.is_empty() {
        n.input.push(out);
    } else {
        let i = rng.random_range(0..n.input.len());
        n.input[i] = out;
    }
    format!("node {a} reads node {b}'s output")
}

fn attribute<'a>(g: &'a mut GraphProto, rng: &mut StdRng) -> Option<&'a mut AttributeProto> {
    let with: Vec<usize> = (0..g.node.len())
        .filter(|&i| !g.node[i].attribute.is_empty())
        .collect();
    let &n = with.choose(rng)?;
    pick_mut(&mut g.node[n].attribute, rng)
}

fn wrong_attribute(g: &mut GraphProto, rng: &mut StdRng) -> String {
    let Some(a) = attribute(g, rng) else {
        return "no attributes".into();
    };
    let kind = rng.random_range(0..6);
    *a = AttributeProto {
        name: a.name.clone(),
        ..Default::default()
    };
    match kind {
        0 => {
            a.r#type = Some(1);
            a.f = Some(f32::NAN);
        }
        1 => {
            a.r#type = Some(3);
            a.s = Some(b"\xff\xfe".to_vec());
        }
        2 => {
            a.r#type = Some(7);
            a.ints = vec![i64::MAX; rng.random_range(0..5)];
        }
        3 => {
            a.r#type = Some(4);
            a.t = Some(TensorProto {
                dims: vec![1 << 40],
                data_type: Some(1),
                ..Default::default()
            });
        }
        4 => a.r#type = Some(rng.random_range(-3..30)),
        _ => {
            a.r#type = Some(5);
            a.g = Some(GraphProto::default());
        }
    }
    format!(
        "attribute '{}' retyped ({kind})",
        a.name.clone().unwrap_or_default()
    )
}

fn huge_attribute(g: &mut GraphProto, rng: &mut StdRng) -> String {
    let Some(a) = attribute(g, rng) else {
        return "no attributes".into();
    };
    let v = *HUGE.choose(rng).expect("not empty");
    if let Some(i) = a.i.as_mut() {
        *i = v;
    } else if !a.ints.is_empty() {
        let k = rng.random_range(0..a.ints.len());
        a.ints[k] = v;
    } else if let Some(f) = a.f.as_mut() {
        *f = *[f32::INFINITY, f32::NAN, -1e30, 1e30]
            .choose(rng)
            .expect("not empty");
    } else {
        return "attribute without numbers".into();
    }
    format!("attribute '{}' = {v}", a.name.clone().unwrap_or_default())
}

fn bad_opset(m: &mut ModelProto, rng: &mut StdRng) -> String {
    let v = *[-1, 0, 1, 5, 29, 1000, i64::MAX, i64::MIN]
        .choose(rng)
        .expect("not empty");
    match m.opset_import.first_mut() {
        Some(o) if rng.random_bool(0.8) => o.version = Some(v),
        _ => m.opset_import.clear(),
    }
    format!("opset {v}")
}

fn external_data(g: &mut GraphProto, rng: &mut StdRng) -> String {
    let Some(t) = pick_mut(&mut g.initializer, rng) else {
        return "no initializers".into();
    };
    let location = *LOCATIONS.choose(rng).expect("not empty");
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.raw_data = None;
    t.float_data.clear();
    t.int64_data.clear();
    t.int32_data.clear();
    t.data_location = Some(1);
    t.external_data = vec![entry("location", location.into())];
    if rng.random_bool(0.5) {
        let off = *[0, 1, -1, i64::MAX, 1 << 62]
            .choose(rng)
            .expect("not empty");
        t.external_data.push(entry("offset", off.to_string()));
    }
    if rng.random_bool(0.5) {
        let len = *[0, 4, -1, i64::MAX, 1 << 40]
            .choose(rng)
            .expect("not empty");
        t.external_data.push(entry("length", len.to_string()));
    }
    format!("external data at '{location}'")
}

/// Rewrites an integer initializer (shapes, axes, sizes, repeats) with huge values.
fn huge_constant_values(g: &mut GraphProto, rng: &mut StdRng) -> String {
    let ints: Vec<usize> = (0..g.initializer.len())
        .filter(|&i| g.initializer[i].data_type == Some(7))
        .collect();
    let Some(&i) = ints.choose(rng) else {
        return "no int64 initializers".into();
    };
    let t = &mut g.initializer[i];
    let n = t.dims.iter().product::<i64>().clamp(1, 16) as usize;
    let values: Vec<i64> = (0..n)
        .map(|_| *HUGE.choose(rng).expect("not empty"))
        .collect();
    t.dims = vec![n as i64];
    t.int64_data.clear();
    t.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    format!(
        "int64 initializer '{}' = {values:?}",
        t.name.clone().unwrap_or_default()
    )
}

fn drop_something(g: &mut GraphProto, rng: &mut StdRng) -> String {
    match rng.random_range(0..3) {
        0 if !g.node.is_empty() => {
            g.node.remove(rng.random_range(0..g.node.len()));
            "node removed".into()
        }
        1 if !g.initializer.is_empty() => {
            g.initializer
                .remove(rng.random_range(0..g.initializer.len()));
            "initializer removed".into()
        }
        _ => {
            if let Some(n) = pick_mut(&mut g.node, rng) {
                n.output.push(n.output.first().cloned().unwrap_or_default());
            }
            "duplicated output".into()
        }
    }
}

fn pick_mut<'a, T>(items: &'a mut [T], rng: &mut StdRng) -> Option<&'a mut T> {
    if items.is_empty() {
        return None;
    }
    let i = rng.random_range(0..items.len());
    items.get_mut(i)
}
