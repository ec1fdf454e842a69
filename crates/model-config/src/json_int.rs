//! Integers that protobuf's JSON mapping may write as strings.
//!
//! Protobuf writes 64-bit integers (`dims`, `max_queue_delay_microseconds`)
//! as JSON strings (`"224"`); Triton sometimes fixes them back to numbers.
//! These deserializers accept both. Serialization always writes numbers,
//! which protobuf's JSON parser accepts as well.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::fmt;

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or a string holding an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v)
            .map_err(|_| E::custom(format!("{v} does not fit in a 64-bit signed integer")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if v.fract() == 0.0 && v >= i64::MIN as f64 && v <= i64::MAX as f64 {
            Ok(v as i64)
        } else {
            Err(E::custom(format!("{v} is not an integer")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        v.trim()
            .parse()
            .map_err(|_| E::custom(format!("\"{v}\" is not an integer")))
    }
}

/// An `i64` written as a JSON number or a string.
pub fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(IntVisitor)
}

/// A `u64` written as a JSON number or a string.
pub fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = de_i64(d)?;
    u64::try_from(v).map_err(|_| de::Error::custom(format!("{v} is negative")))
}

/// A list of `i64`, each written as a JSON number or a string.
pub fn de_vec_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    struct SeqVisitor;
    impl<'de> Visitor<'de> for SeqVisitor {
        type Value = Vec<i64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of integers")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
            #[derive(serde::Deserialize)]
            struct Int(#[serde(deserialize_with = "de_i64")] i64);
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(Int(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(SeqVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct T {
        #[serde(deserialize_with = "de_vec_i64")]
        dims: Vec<i64>,
        #[serde(deserialize_with = "de_u64")]
        delay: u64,
    }

    #[test]
    fn numbers_and_strings_both_parse() {
        let t: T = serde_json::from_str(r#"{"dims": ["3", 224, "-1"], "delay": "100"}"#).unwrap();
        assert_eq!(t.dims, vec![3, 224, -1]);
        assert_eq!(t.delay, 100);
    }

    #[test]
    fn garbage_is_refused_with_the_value() {
        let err = serde_json::from_str::<T>(r#"{"dims": ["x"], "delay": 1}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("\"x\" is not an integer"), "{err}");
        let err = serde_json::from_str::<T>(r#"{"dims": [], "delay": -1}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("negative"), "{err}");
    }
}
