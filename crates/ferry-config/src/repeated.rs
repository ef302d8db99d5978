//! Repeated fields read as Envoy reads them: a single value where a list is
//! expected is a list of one.
//!
//! Envoy's loader accepts `listeners: {name: ...}` as well as
//! `listeners: [{name: ...}]`, and configs in the wild rely on it. Every
//! `Vec` field of [`crate::raw`] is deserialized through [`one_or_many`].

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{BoolDeserializer, F64Deserializer, I64Deserializer, MapAccessDeserializer, U64Deserializer};
use serde::de::{Deserialize, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// Deserializes a sequence of `T`, or one `T` given alone (a map or a
/// scalar), as a `Vec<T>`. `null` is the empty list, as an unset field.
pub(crate) fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_any(OneOrMany(PhantomData))
}

struct OneOrMany<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrMany<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list, or a single value as a list of one")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
        Ok(vec![T::deserialize(MapAccessDeserializer::new(map))?])
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Vec<T>, E> {
        Ok(vec![T::deserialize(value.into_deserializer())?])
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Vec<T>, E> {
        Ok(vec![T::deserialize(value.into_deserializer())?])
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Vec<T>, E> {
        Ok(vec![T::deserialize(BoolDeserializer::new(value))?])
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Vec<T>, E> {
        Ok(vec![T::deserialize(I64Deserializer::new(value))?])
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Vec<T>, E> {
        Ok(vec![T::deserialize(U64Deserializer::new(value))?])
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Vec<T>, E> {
        Ok(vec![T::deserialize(F64Deserializer::new(value))?])
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        name: String,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Holder {
        #[serde(default, deserialize_with = "super::one_or_many")]
        items: Vec<Item>,
        #[serde(default, deserialize_with = "super::one_or_many")]
        words: Vec<String>,
    }

    fn read(text: &str) -> Holder {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn a_single_value_is_a_list_of_one() {
        let one = read("items: {name: a}\nwords: w\n");
        assert_eq!(one.items, vec![Item { name: "a".into() }]);
        assert_eq!(one.words, vec!["w".to_owned()]);
        let many = read("items: [{name: a}, {name: b}]\nwords: [v, w]\n");
        assert_eq!(many.items.len(), 2);
        assert_eq!(many.words, vec!["v".to_owned(), "w".to_owned()]);
        assert_eq!(read("items: ~\n").items, vec![]);
    }

    #[test]
    fn errors_inside_a_single_value_keep_their_path() {
        let deserializer = serde_norway::Deserializer::from_str("items: {name: a, nope: 1}\n");
        let error = serde_path_to_error::deserialize::<_, Holder>(deserializer).unwrap_err();
        assert_eq!(crate::field_path(error.path()), "items.nope");
    }

    /// Every field typed `Vec<..>` (or `Option<Vec<..>>`) of a struct that
    /// derives `Deserialize`, in every source file of this crate, with
    /// whether its attributes read it through [`one_or_many`]: the raw
    /// model, walked, so that no repeated field can miss the rule.
    fn repeated_fields() -> Vec<(String, bool)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut fields = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let mut derives = false;
            // The closing line of the `Deserialize` struct being read.
            let mut end: Option<String> = None;
            for (i, line) in lines.iter().enumerate() {
                let code = line.trim();
                let indent = &line[..line.len() - line.trim_start().len()];
                if code.starts_with("#[derive(") {
                    derives = code.contains("Deserialize");
                } else if code.contains("struct ") && code.ends_with('{') {
                    end = derives.then(|| format!("{indent}}}"));
                    derives = false;
                } else if end.as_deref() == Some(*line) {
                    end = None;
                } else if end.is_some() && is_vec_field(code) {
                    let attributes = lines[..i]
                        .iter()
                        .rev()
                        .take_while(|l| l.trim().starts_with("#[") || l.trim().starts_with("///"));
                    let read_right = attributes.clone().any(|l| l.contains("one_or_many"));
                    fields.push((
                        format!("{}:{}: {code}", path.file_name().unwrap().to_string_lossy(), i + 1),
                        read_right,
                    ));
                }
            }
        }
        fields
    }

    fn is_vec_field(code: &str) -> bool {
        let code = code.strip_prefix("pub(crate) ").or_else(|| code.strip_prefix("pub ")).unwrap_or(code);
        let Some((name, ty)) = code.split_once(": ") else { return false };
        if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return false;
        }
        let ty = ty.trim_end_matches(',');
        ty.starts_with("Vec<") || ty.starts_with("Option<Vec<")
    }

    #[test]
    fn every_repeated_field_of_the_raw_model_accepts_one_value() {
        let fields = repeated_fields();
        assert!(fields.len() > 50, "the walk finds the model's repeated fields: {fields:?}");
        let missing: Vec<&String> = fields.iter().filter(|(_, ok)| !ok).map(|(field, _)| field).collect();
        assert!(missing.is_empty(), "repeated fields not read through one_or_many: {missing:#?}");
    }
}
