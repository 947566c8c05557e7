//! Device serial numbers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest serial accepted (bytes). Serials appear in MQTT topics and URLs.
pub const MAX_SERIAL_LEN: usize = 64;

/// A device serial number (SN): 1 to 64 characters of `A-Z a-z 0-9 - _ .`,
/// starting with a letter or digit. Safe to embed in MQTT topics and URL paths.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Serial(String);

// written out for the pattern: the derive cannot put one on a newtype's schema
impl utoipa::PartialSchema for Serial {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A device serial: 1 to 64 of A-Z a-z 0-9 - _ ., starting with a letter or digit.",
            ))
            .pattern(Some("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))
            .max_length(Some(64))
            .into()
    }
}

impl utoipa::ToSchema for Serial {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Serial")
    }
}

/// Why a string is not a serial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    #[error("serial is empty")]
    Empty,
    #[error("serial is {0} bytes long; at most {MAX_SERIAL_LEN} are allowed")]
    TooLong(usize),
    #[error("serial contains {0:?}; only letters, digits, '-', '_' and '.' are allowed")]
    BadChar(char),
    #[error("serial must start with a letter or digit")]
    BadStart,
}

impl Serial {
    /// Parses a serial, naming what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, SerialError> {
        if s.is_empty() {
            return Err(SerialError::Empty);
        }
        if s.len() > MAX_SERIAL_LEN {
            return Err(SerialError::TooLong(s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(SerialError::BadChar(c));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(SerialError::BadStart);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Serial {
    type Error = SerialError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Serial::parse(&s)
    }
}

impl From<Serial> for String {
    fn from(s: Serial) -> Self {
        s.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Serial {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_typical_serials() {
        for s in ["OC5-000123", "VT.2024_77", "a", "1"] {
            assert_eq!(Serial::parse(s).map(|x| x.to_string()), Ok(s.to_owned()));
        }
    }

    #[test]
    fn rejects_each_bad_form_with_its_reason() {
        assert_eq!(Serial::parse(""), Err(SerialError::Empty));
        assert_eq!(
            Serial::parse(&"x".repeat(65)),
            Err(SerialError::TooLong(65))
        );
        assert_eq!(Serial::parse("a/b"), Err(SerialError::BadChar('/')));
        assert_eq!(Serial::parse("a+"), Err(SerialError::BadChar('+')));
        assert_eq!(Serial::parse("-abc"), Err(SerialError::BadStart));
    }
}
