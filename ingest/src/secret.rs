//! Deserializing secrets (passwords) so that a value of the wrong shape is neither lost
//! nor echoed: an unquoted `password = 12345678` in TOML is a perfectly good password, and
//! the usual "invalid type: found unsigned int `12345678`" message would print it.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// `Option<String>` from a string, or from a number or boolean written without quotes
/// (kept as written by the format's own number formatting). Errors never contain the
/// value.
pub(crate) fn deserialize_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    deserializer.deserialize_option(OptionalSecret)
}

struct OptionalSecret;

impl<'de> Visitor<'de> for OptionalSecret {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Secret).map(Some)
    }
}

struct Secret;

impl Secret {
    fn refuse<E: de::Error>(what: &str) -> E {
        // The value itself stays out of the message.
        E::custom(format!(
            "a secret must be a string, not {what} (value not shown)"
        ))
    }
}

impl<'de> Visitor<'de> for Secret {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
        // A float's text form is not the text that was written (1e3, 1.50): refuse.
        Err(Self::refuse("a decimal number; quote it"))
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<String, E> {
        Err(Self::refuse("bytes"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::refuse("a list"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::refuse("a table"))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct S {
        #[serde(default, deserialize_with = "super::deserialize_option")]
        password: Option<String>,
    }

    #[test]
    fn unquoted_scalars_are_kept_and_errors_hide_the_value() {
        let p = |json: &str| serde_json::from_str::<S>(json).map(|s| s.password);
        assert_eq!(
            p(r#"{"password":"pw"}"#).expect("string"),
            Some("pw".into())
        );
        assert_eq!(
            p(r#"{"password":12345678}"#).expect("int"),
            Some("12345678".into())
        );
        assert_eq!(
            p(r#"{"password":true}"#).expect("bool"),
            Some("true".into())
        );
        assert_eq!(p(r#"{"password":null}"#).expect("null"), None);
        assert_eq!(p("{}").expect("absent"), None);
        let err = p(r#"{"password":[424242]}"#).expect_err("list").to_string();
        assert!(!err.contains("424242"), "{err}");
        let err = p(r#"{"password":4242.5}"#).expect_err("float").to_string();
        assert!(!err.contains("4242"), "{err}");
    }
}
