//! Which epcheck deployment an object belongs to (SPEC §9).
//!
//! Every object epcheck writes — Endpoints and EndpointSlices — carries
//! `epcheck.io/instance: <instance>`, the name of the epcheck deployment that keeps it current.
//! Two deployments in one cluster (say one per team, or a canary beside the main one) then never
//! touch each other's objects: a reconcile that finds an object labelled with another instance
//! refuses to write it ([`Error::OtherInstance`]), and the search for objects a deployment no
//! longer manages ([`Client::find_unconfigured`](crate::Client::find_unconfigured)) lists only
//! its own.
//!
//! An object without the label (written before instances existed, or by hand) is adopted by the
//! instance that is configured to manage it: its next reconcile adds the label.

use std::collections::BTreeMap;

use crate::error::Error;

/// The label naming the epcheck instance that manages an object.
pub const INSTANCE_LABEL: &str = "epcheck.io/instance";

/// The instance of a deployment that does not name one: the default leader-election name.
pub const DEFAULT_INSTANCE: &str = "epcheck";

/// Checks that `instance` can be a label value: at most 63 characters, alphanumerics, `-`, `_`
/// and `.`, starting and ending with an alphanumeric.
///
/// # Errors
///
/// What is wrong, in a sentence.
pub fn validate_instance(instance: &str) -> Result<(), String> {
    if instance.is_empty() {
        return Err("it is empty; name the deployment, e.g. \"epcheck\"".to_owned());
    }
    if instance.len() > 63 {
        return Err(format!(
            "it is {} characters long; a label value has at most 63",
            instance.len()
        ));
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if let Some(c) = instance.chars().find(|c| !ok_inner(*c)) {
        return Err(format!(
            "it holds {c:?}; a label value holds only letters, digits, '-', '_' and '.'"
        ));
    }
    let ends_ok = instance.starts_with(|c: char| c.is_ascii_alphanumeric())
        && instance.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ends_ok {
        return Err("a label value must start and end with a letter or digit".to_owned());
    }
    Ok(())
}

/// The instance an object's labels name, if any.
pub fn instance_of(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels.get(INSTANCE_LABEL).map(String::as_str)
}

/// Refuses an object that another instance manages: `Ok` when `ours` is `None`, the object
/// names no instance, or names `ours`.
///
/// # Errors
///
/// [`Error::OtherInstance`] naming both instances.
pub fn check_instance(
    kind: &'static str,
    object: impl FnOnce() -> String,
    labels: &BTreeMap<String, String>,
    ours: Option<&str>,
) -> Result<(), Error> {
    match (ours, instance_of(labels)) {
        (Some(ours), Some(theirs)) if ours != theirs => Err(Error::OtherInstance {
            kind,
            object: object(),
            theirs: crate::escape_control(theirs).into_owned(),
            ours: ours.to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn label_values() {
        for good in ["epcheck", "team-a", "a", "prod.eu_1", &"x".repeat(63)] {
            assert_eq!(validate_instance(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("-a", "start and end"),
            ("a.", "start and end"),
            ("a b", "' '"),
            ("a/b", "'/'"),
            (&"x".repeat(64), "64 characters"),
        ] {
            let err = validate_instance(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn only_another_named_instance_is_refused() {
        let mut labels = BTreeMap::new();
        let key = || "apps/alpha".to_owned();
        assert!(check_instance("Endpoints", key, &labels, Some("a")).is_ok());
        labels.insert(INSTANCE_LABEL.to_owned(), "a".to_owned());
        assert!(check_instance("Endpoints", key, &labels, Some("a")).is_ok());
        assert!(check_instance("Endpoints", key, &labels, None).is_ok());
        let err = check_instance("Endpoints", key, &labels, Some("b")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("Endpoints apps/alpha")
                && text.contains("\"a\"")
                && text.contains("\"b\""),
            "{text}"
        );
    }
}
