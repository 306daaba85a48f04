//! Body formats: JSON and YAML encoding and decoding, and the `content_type` setting.
//!
//! This is the only module that names the YAML library. `serde_yaml` is archived upstream;
//! switching to a maintained drop-in (`serde_yaml_ng`, or `yaml_serde` renamed as
//! `serde_yaml` in `Cargo.toml`) means changing the one `use` below.
//!
//! Decoding errors carry the key path where they happened (`metadata.labels.version`),
//! through `serde_path_to_error`.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
// The one place to swap the YAML implementation.
use serde_yaml as yaml;

use crate::error::Error;

/// The body format of writes (`content_type`). Responses are always read as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ContentType {
    /// `application/json`.
    #[serde(rename = "application/json")]
    Json,
    /// `application/yaml`, the original tool's only format and the default.
    #[default]
    #[serde(rename = "application/yaml")]
    Yaml,
}

impl ContentType {
    /// The MIME type for the `Content-Type` header.
    pub const fn mime(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Yaml => "application/yaml",
        }
    }

    /// Every accepted value, for messages.
    pub const ALL: [Self; 2] = [Self::Yaml, Self::Json];
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime())
    }
}

impl FromStr for ContentType {
    type Err = Error;

    /// Accepts exactly `application/json` and `application/yaml`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|ct| ct.mime() == s)
            .ok_or_else(|| Error::InvalidContentType {
                value: s.to_owned(),
            })
    }
}

/// Encodes a value as JSON.
///
/// # Errors
///
/// [`Error::Encode`]; cannot happen for this crate's types, whose maps all have string keys.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Encode {
        format: "JSON",
        what: type_label::<T>(),
        source: Box::new(e),
    })
}

/// Encodes a value as YAML.
///
/// # Errors
///
/// [`Error::Encode`]; cannot happen for this crate's types.
pub fn to_yaml<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    yaml::to_string(value).map_err(|e| Error::Encode {
        format: "YAML",
        what: type_label::<T>(),
        source: Box::new(e),
    })
}

/// Encodes a value in the given format, for a request body.
///
/// # Errors
///
/// [`Error::Encode`], as [`to_json`] and [`to_yaml`].
pub fn encode<T: Serialize + ?Sized>(value: &T, format: ContentType) -> Result<Vec<u8>, Error> {
    match format {
        ContentType::Json => to_json(value),
        ContentType::Yaml => to_yaml(value).map(String::into_bytes),
    }
}

/// Decodes JSON, rejecting trailing data.
///
/// # Errors
///
/// [`Error::Decode`] with the key path of the failure.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let fail = |path: String, e: serde_json::Error| Error::Decode {
        format: "JSON",
        what: type_label::<T>(),
        path,
        source: Box::new(e),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| fail(path_text(e.path()), e.into_inner()))?;
    de.end().map_err(|e| fail(String::new(), e))?;
    Ok(value)
}

/// Decodes one YAML document.
///
/// # Errors
///
/// [`Error::Decode`] with the key path of the failure; the YAML error gives line and column.
pub fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(yaml::Deserializer::from_str(text)).map_err(|e| {
        Error::Decode {
            format: "YAML",
            what: type_label::<T>(),
            path: path_text(e.path()),
            source: Box::new(e.into_inner()),
        }
    })
}

/// Decodes a body in the given format.
///
/// # Errors
///
/// [`Error::Decode`], as [`from_json`] and [`from_yaml`]; YAML that is not UTF-8 is reported
/// at the top level.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], format: ContentType) -> Result<T, Error> {
    match format {
        ContentType::Json => from_json(bytes),
        ContentType::Yaml => match std::str::from_utf8(bytes) {
            Ok(text) => from_yaml(text),
            Err(e) => Err(Error::Decode {
                format: "YAML",
                what: type_label::<T>(),
                path: String::new(),
                source: Box::new(e),
            }),
        },
    }
}

/// `serde_path_to_error` shows the top level as `.`; messages say "the top level" instead.
fn path_text(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

/// The last segment of a type's name, without generics: `Endpoints`, `Status`.
fn type_label<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::types::{Endpoints, Status};

    #[test]
    fn content_types() {
        assert_eq!(
            "application/json".parse::<ContentType>().unwrap(),
            ContentType::Json
        );
        assert_eq!(
            "application/yaml".parse::<ContentType>().unwrap(),
            ContentType::Yaml
        );
        assert_eq!(ContentType::default(), ContentType::Yaml);
        assert_eq!(ContentType::Json.to_string(), "application/json");
        for bad in [
            "",
            "json",
            "APPLICATION/JSON",
            "application/json; charset=utf-8",
            "text/yaml",
            " application/yaml",
        ] {
            let msg = bad.parse::<ContentType>().unwrap_err().to_string();
            assert!(
                msg.contains("\"application/yaml\" and \"application/json\""),
                "{msg}"
            );
        }
        let ct: ContentType = serde_json::from_str("\"application/json\"").unwrap();
        assert_eq!(ct, ContentType::Json);
    }

    #[test]
    fn decode_errors_have_paths() {
        let err = from_json::<Endpoints>(br#"{"metadata": {"labels": {"a": 1}}}"#).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot decode Endpoints from JSON at metadata.labels"),
            "{msg}"
        );
        let err = from_yaml::<Endpoints>("subsets:\n  - ports:\n      - port: x\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("YAML at subsets[0].ports[0]"), "{msg}");
        let err = from_json::<Endpoints>(b"{} x").unwrap_err();
        assert!(err.to_string().ends_with("at the top level"), "{err}");
        let err = decode::<Status>(&[0xff], ContentType::Yaml).unwrap_err();
        assert!(err.to_string().contains("Status from YAML"), "{err}");
    }

    #[test]
    fn encode_both() {
        let ep = Endpoints::new("default", "redis");
        let json = encode(&ep, ContentType::Json).unwrap();
        let yaml = encode(&ep, ContentType::Yaml).unwrap();
        let a: Endpoints = decode(&json, ContentType::Json).unwrap();
        let b: Endpoints = decode(&yaml, ContentType::Yaml).unwrap();
        assert_eq!(a, ep);
        assert_eq!(b, ep);
        assert!(String::from_utf8(yaml).unwrap().contains("subsets: []"));
    }

    #[test]
    fn type_labels() {
        assert_eq!(type_label::<Endpoints>(), "Endpoints");
        assert_eq!(type_label::<Vec<Endpoints>>(), "Vec");
        assert_eq!(type_label::<str>(), "str");
    }
}
