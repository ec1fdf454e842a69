//! TfIdfVectorizer (opset 9): counts the n-grams of a pool (integers or
//! strings, n from `min_gram_length` to `max_gram_length`, items up to
//! `max_skip_count` apart) in each row, weighted as TF, IDF or TF-IDF.
//! The pool is a trie built once; a row is scanned once per skip distance,
//! as onnxruntime and the ONNX reference do.

use crate::support::{arg, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::collections::HashMap;

const NAME: &str = "TfIdfVectorizer";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Tf,
    Idf,
    TfIdf,
}

/// A trie node: the n-gram ending here (0: none) and its continuations.
#[derive(Debug, Default)]
struct Node {
    id: usize,
    children: Option<HashMap<i64, usize>>,
}

#[derive(Debug)]
struct TfIdf {
    mode: Mode,
    min_gram: usize,
    max_gram: usize,
    max_skip: usize,
    /// Output column of n-gram id `k + 1`.
    indexes: Vec<usize>,
    width: usize,
    /// Per output column (empty: no weights).
    weights: Vec<f32>,
    /// `nodes[0]` is the root.
    nodes: Vec<Node>,
    /// For a string pool: each pool string's key in the trie.
    strings: Option<HashMap<Vec<u8>, i64>>,
}

fn positive(name: &str, v: i64) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| metal_mps_ir::Error::InvalidModel(format!("{NAME}: {name} = {v}")))
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let mode = match a.str_or("mode", "")?.as_str() {
        "TF" => Mode::Tf,
        "IDF" => Mode::Idf,
        "TFIDF" => Mode::TfIdf,
        m => return metal_mps_ir::invalid!("{NAME}: mode '{m}' is not TF, IDF or TFIDF"),
    };
    let min_gram = positive("min_gram_length", a.int("min_gram_length", 0)?)?;
    let max_gram = positive("max_gram_length", a.int("max_gram_length", 0)?)?;
    if max_gram < min_gram {
        return metal_mps_ir::invalid!(
            "{NAME}: max_gram_length {max_gram} < min_gram_length {min_gram}"
        );
    }
    let max_skip = usize::try_from(a.int("max_skip_count", 0)?).map_err(|_| {
        metal_mps_ir::Error::InvalidModel(format!("{NAME}: negative max_skip_count"))
    })?;
    let (pool, strings) = match (a.ints("pool_int64s")?, a.byte_strings("pool_strings")?) {
        (Some(p), None) => (p, None),
        (None, Some(s)) => {
            let mut keys = HashMap::new();
            let pool = s
                .into_iter()
                .map(|w| {
                    let next = keys.len() as i64;
                    *keys.entry(w).or_insert(next)
                })
                .collect();
            (pool, Some(keys))
        }
        _ => {
            return metal_mps_ir::invalid!(
                "{NAME}: exactly one of pool_int64s and pool_strings is required"
            )
        }
    };
    let counts = a.ints("ngram_counts")?.unwrap_or_default();
    let indexes = a
        .ints("ngram_indexes")?
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            usize::try_from(i).map_err(|_| {
                metal_mps_ir::Error::InvalidModel(format!("{NAME}: negative ngram index {i}"))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let Some(width) = indexes.iter().max().map(|m| m + 1) else {
        return metal_mps_ir::invalid!("{NAME}: ngram_indexes is empty");
    };
    // One output row is `width` FLOATs: refuse a width beyond the tensor cap
    // here, before the weights below are laid out per column.
    metal_mps_ir::limits::check_tensor_bytes(width.saturating_mul(4)).map_err(|e| {
        metal_mps_ir::Error::TooLarge(format!("{NAME}: ngram_indexes up to {}: {e}", width - 1))
    })?;
    // The spec (and onnxruntime) weigh the k-th n-gram of the pool by
    // `weights[k]`, in the column `ngram_indexes[k]` it counts in.
    let given = a.floats("weights")?.unwrap_or_default();
    let weights = if given.is_empty() {
        Vec::new()
    } else {
        if given.len() < indexes.len() {
            return metal_mps_ir::invalid!(
                "{NAME}: {} weights for {} n-grams (ngram_indexes)",
                given.len(),
                indexes.len()
            );
        }
        let mut w = metal_mps_ir::limits::try_vec::<f32>(width)?;
        for (&col, &g) in indexes.iter().zip(&given) {
            w[col] = g;
        }
        w
    };
    let mut op = TfIdf {
        mode,
        min_gram,
        max_gram,
        max_skip,
        indexes,
        width,
        weights,
        nodes: vec![Node {
            id: 0,
            children: Some(HashMap::new()),
        }],
        strings,
    };
    op.populate(&pool, &counts)?;
    Ok(Op::Dyn(DynOp::new(op)))
}

impl TfIdf {
    /// Builds the trie: `counts[i]` is where the (i+1)-grams start in `pool`;
    /// ids count every n-gram of the pool, also those outside the lengths used.
    fn populate(&mut self, pool: &[i64], counts: &[i64]) -> Result<()> {
        let mut id = 1;
        for (i, &start) in counts.iter().enumerate() {
            let end = counts.get(i + 1).copied().unwrap_or(pool.len() as i64);
            if start < 0 || end < start || end > pool.len() as i64 {
                return metal_mps_ir::invalid!(
                    "{NAME}: ngram_counts {counts:?} do not split a pool of {}",
                    pool.len()
                );
            }
            let size = i + 1;
            let grams = (end - start) as usize / size;
            if (self.min_gram..=self.max_gram).contains(&size) {
                let mut at = start as usize;
                for _ in 0..grams {
                    let mut node = 0;
                    for k in 0..size {
                        let child = self.child_or_insert(node, pool[at]);
                        at += 1;
                        if k + 1 == size {
                            self.nodes[child].id = id;
                            id += 1;
                        } else {
                            self.nodes[child].children.get_or_insert_with(HashMap::new);
                            node = child;
                        }
                    }
                }
            } else {
                id += grams;
            }
        }
        if id - 1 > self.indexes.len() {
            return metal_mps_ir::invalid!(
                "{NAME}: the pool holds {} n-grams but ngram_indexes has {}",
                id - 1,
                self.indexes.len()
            );
        }
        Ok(())
    }

    fn child_or_insert(&mut self, node: usize, key: i64) -> usize {
        let next = self.nodes.len();
        let children = self.nodes[node].children.get_or_insert_with(HashMap::new);
        let child = *children.entry(key).or_insert(next);
        if child == next {
            self.nodes.push(Node::default());
        }
        child
    }

    fn child(&self, node: usize, key: i64) -> Option<usize> {
        self.nodes[node].children.as_ref()?.get(&key).copied()
    }

    fn has_leaves(&self, node: usize) -> bool {
        self.nodes[node]
            .children
            .as_ref()
            .is_some_and(|c| !c.is_empty())
    }

    /// Adds one row's n-gram counts to `freq` (its `width` columns).
    fn count_row(&self, row: &[i64], freq: &mut [u64]) {
        let c = row.len();
        let mut start_size = self.min_gram;
        for skip in 1..=self.max_skip + 1 {
            // Past here no n-gram of `start_size` items `skip` apart fits in
            // the row, nor at any larger skip: a huge max_skip_count ends here.
            let span = skip.saturating_mul(start_size - 1);
            if start_size > 1 && span >= c {
                break;
            }
            for start in 0..c {
                if start.saturating_add(span) >= c {
                    break;
                }
                let (mut node, mut size, mut item) = (0, 1, start);
                while self.has_leaves(node) && size <= self.max_gram && item < c {
                    let Some(next) = self.child(node, row[item]) else {
                        break;
                    };
                    let id = self.nodes[next].id;
                    if size >= start_size && id != 0 {
                        freq[self.indexes[id - 1]] += 1;
                    }
                    node = next;
                    size += 1;
                    item += skip;
                }
            }
            // Unigrams are counted once, not once per skip distance.
            if start_size == 1 {
                start_size = 2;
                if start_size > self.max_gram {
                    break;
                }
            }
        }
    }

    fn weigh(&self, freq: &[u64]) -> Vec<f32> {
        freq.iter()
            .enumerate()
            .map(|(p, &f)| {
                let w = self.weights.get(p % self.width).copied();
                match (self.mode, w) {
                    (Mode::Tf, _) | (Mode::TfIdf, None) => f as f32,
                    (Mode::Idf, Some(w)) => {
                        if f > 0 {
                            w
                        } else {
                            0.0
                        }
                    }
                    (Mode::Idf, None) => (f > 0) as u8 as f32,
                    (Mode::TfIdf, Some(w)) => w * f as f32,
                }
            })
            .collect()
    }

    /// The input's elements as trie keys (strings not in the pool match nothing).
    fn keys(&self, x: &Tensor) -> Result<Vec<i64>> {
        match (&self.strings, x.dtype()) {
            (Some(s), DType::String) => Ok(x
                .as_strings()?
                .iter()
                .map(|w| s.get(w).copied().unwrap_or(-1))
                .collect()),
            (None, DType::I32 | DType::I64) => x.to_i64_vec(),
            (_, d) => self.wrong_input(d),
        }
    }

    fn wrong_input<T>(&self, d: DType) -> Result<T> {
        let want = if self.strings.is_some() {
            "STRING"
        } else {
            "INT32 or INT64"
        };
        metal_mps_ir::invalid!("{NAME}: the pool takes {want} input, not {d}")
    }
}

impl Operator for TfIdf {
    fn name(&self) -> &str {
        NAME
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        match (&self.strings, x.dtype) {
            (Some(_), DType::String) | (None, DType::I32 | DType::I64) => {}
            (_, d) => return self.wrong_input(d),
        }
        let shape = match x.shape {
            Some([]) | Some([_]) => Some(vec![Dim::Fixed(self.width)]),
            Some([b, _]) => Some(vec![b.clone(), Dim::Fixed(self.width)]),
            Some(s) => {
                return metal_mps_ir::invalid!(
                    "{NAME}: input of rank {} (expected [C] or [B, C])",
                    s.len()
                )
            }
            None => None,
        };
        Ok(vec![(DType::F32, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let (rows, c, out_shape) = match *x.shape() {
            [] => (1, 1, vec![self.width]),
            [c] => (1, c, vec![self.width]),
            [b, c] if b > 0 => (b, c, vec![b, self.width]),
            ref s => {
                return metal_mps_ir::invalid!(
                    "{NAME}: input of shape {s:?} (expected [C] or [B, C] with B > 0)"
                )
            }
        };
        let keys = self.keys(x)?;
        let total = rows
            .checked_mul(self.width)
            .ok_or_else(|| metal_mps_ir::Error::TooLarge(format!("{NAME} output")))?;
        let mut freq = metal_mps_ir::limits::try_vec::<u64>(total)?;
        if c > 0 {
            for (row, f) in keys.chunks(c).zip(freq.chunks_mut(self.width)) {
                self.count_row(row, f);
            }
        }
        Ok(vec![Tensor::from_vec(out_shape, self.weigh(&freq))?])
    }

    fn takes_strings(&self) -> bool {
        self.strings.is_some()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Attributes};

    fn op(attrs: Vec<(&str, Attribute)>) -> Result<Op> {
        let attrs = Attributes::new(attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        build(&BuildCx {
            op_type: NAME,
            domain: "",
            opset: 9,
            attrs: &attrs,
            num_inputs: 1,
            num_outputs: 1,
        })
    }

    fn bigrams(mode: &str, skip: i64) -> Vec<(&'static str, Attribute)> {
        // Pool: unigrams 2, 3, 5, 4; bigrams (5, 6), (7, 8), (6, 7).
        vec![
            ("mode", Attribute::String(mode.into())),
            ("min_gram_length", Attribute::Int(1)),
            ("max_gram_length", Attribute::Int(2)),
            ("max_skip_count", Attribute::Int(skip)),
            ("ngram_counts", Attribute::Ints(vec![0, 4])),
            ("ngram_indexes", Attribute::Ints(vec![0, 1, 2, 3, 4, 5, 6])),
            (
                "pool_int64s",
                Attribute::Ints(vec![2, 3, 5, 4, 5, 6, 7, 8, 6, 7]),
            ),
        ]
    }

    fn run(o: &Op, x: Tensor) -> Vec<f32> {
        let Op::Dyn(d) = o else { unreachable!() };
        d.eval(&[Some(&x)], 1, &mut Out::fresh()).unwrap()[0]
            .to_vec::<f32>()
            .unwrap()
    }

    // Counted by hand: in [1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8, 4] the unigrams 2, 3, 5, 4
    // occur 0, 3, 1 and 1 times, and the bigrams (5, 6), (7, 8), (6, 7) once each.
    #[test]
    fn counts_unigrams_and_bigrams_as_the_spec_example() {
        let x = Tensor::from_vec(vec![13], vec![1i32, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8, 4]).unwrap();
        let tf = run(&op(bigrams("TF", 0)).unwrap(), x.clone());
        assert_eq!(tf, [0.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        let idf = run(&op(bigrams("IDF", 0)).unwrap(), x);
        assert_eq!(idf, [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn skips_find_spread_bigrams() {
        // 7 _ 8 is the bigram (7, 8) one skip apart; 5 _ _ 6 needs two skips.
        let x = Tensor::from_vec(vec![2, 4], vec![7i64, 0, 8, 0, 5, 0, 0, 6]).unwrap();
        let one = run(&op(bigrams("TF", 1)).unwrap(), x.clone());
        assert_eq!(
            one,
            [0., 0., 0., 0., 0., 1., 0., 0., 0., 1., 0., 0., 0., 0.]
        );
        let two = run(&op(bigrams("TF", 2)).unwrap(), x);
        assert_eq!(
            two,
            [0., 0., 0., 0., 0., 1., 0., 0., 0., 1., 0., 1., 0., 0.]
        );
    }

    #[test]
    fn a_huge_skip_count_counts_like_the_row_length_and_ends() {
        // Rows of 4 items: no bigram spans more than 3 positions, so any
        // max_skip_count from 2 up counts (7, 8) in row 0 and 5, (5, 6) in row 1.
        let x = Tensor::from_vec(vec![2, 4], vec![7i64, 0, 8, 0, 5, 0, 0, 6]).unwrap();
        let huge = run(&op(bigrams("TF", i64::MAX)).unwrap(), x);
        assert_eq!(
            huge,
            [0., 0., 0., 0., 0., 1., 0., 0., 0., 1., 0., 1., 0., 0.]
        );
        // A min_gram_length far beyond the row counts nothing (and does not overflow).
        let mut a = bigrams("TF", 3);
        a[1] = ("min_gram_length", Attribute::Int(i64::MAX));
        a[2] = ("max_gram_length", Attribute::Int(i64::MAX));
        let x = Tensor::from_vec(vec![4], vec![5i64, 6, 7, 8]).unwrap();
        assert_eq!(run(&op(a).unwrap(), x), [0.0; 7]);
    }

    #[test]
    fn an_output_width_beyond_the_tensor_cap_is_refused_at_build() {
        let mut a = bigrams("TF", 0);
        a[5] = (
            "ngram_indexes",
            Attribute::Ints(vec![0, 1, 2, 3, 4, 5, i64::MAX]),
        );
        a.push(("weights", Attribute::Floats(vec![1.0; 7])));
        let e = op(a).unwrap_err().to_string();
        assert!(e.contains(NAME) && e.contains("ngram_indexes"), "{e}");
    }

    #[test]
    fn bad_attributes_are_refused() {
        let mut a = bigrams("TF", 0);
        a[4] = ("ngram_counts", Attribute::Ints(vec![0, 40]));
        assert!(op(a).unwrap_err().to_string().contains("ngram_counts"));
        let mut a = bigrams("TF", 0);
        a[5] = ("ngram_indexes", Attribute::Ints(vec![0, 1]));
        assert!(op(a).unwrap_err().to_string().contains("ngram_indexes"));
        assert!(op(bigrams("BM25", 0))
            .unwrap_err()
            .to_string()
            .contains("BM25"));
    }
}
