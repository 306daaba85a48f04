//! The `endpointapi` path template and the names put into it.
//!
//! The original tool builds the URL of an Endpoints object by replacing `myNameSpaces` and
//! `myEndPoints` in a path such as [`EXAMPLE_TEMPLATE`]. epcheck keeps that format but checks
//! it once, at start-up ([`PathTemplate::parse`]), and checks every namespace and name before
//! it goes into a path ([`validate_namespace`], [`validate_name`]) so that no configured value
//! can reach another URL (`../`, `%2F`, `/`, `?`).
//!
//! Decisions beyond the original format, all of which the documented form satisfies:
//!
//! * each placeholder must be a whole path segment, and `myEndPoints` the last one, so that
//!   the collection path (for `POST`) is the template without its last segment;
//! * no empty, `.` or `..` segments, no query or fragment, no percent-encoding;
//! * other characters are limited to RFC 3986 path characters.

use std::fmt;

use crate::error::Error;

/// The namespace placeholder.
pub const NAMESPACE_PLACEHOLDER: &str = "myNameSpaces";

/// The object-name placeholder.
pub const NAME_PLACEHOLDER: &str = "myEndPoints";

/// The template of the original tool's documentation, shown in error messages.
pub const EXAMPLE_TEMPLATE: &str = "/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints";

/// Longest DNS-1123 label (a namespace).
pub const MAX_LABEL_LEN: usize = 63;

/// Longest DNS-1123 subdomain (an Endpoints name).
pub const MAX_SUBDOMAIN_LEN: usize = 253;

/// One segment of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Namespace,
    Name,
}

/// A checked `endpointapi` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Checks a template: it starts with `/`, holds `myNameSpaces` and `myEndPoints` exactly
    /// once each as whole segments, ends with `myEndPoints`, and has no empty, `.` or `..`
    /// segments, query, fragment or percent-encoding.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPathTemplate`], saying what is wrong and showing [`EXAMPLE_TEMPLATE`].
    pub fn parse(template: &str) -> Result<Self, Error> {
        let fail = |problem: String| Error::InvalidPathTemplate {
            template: template.to_owned(),
            problem,
        };
        let ns_count = template.matches(NAMESPACE_PLACEHOLDER).count();
        let name_count = template.matches(NAME_PLACEHOLDER).count();
        let mut missing = Vec::new();
        if ns_count == 0 {
            missing.push(NAMESPACE_PLACEHOLDER);
        }
        if name_count == 0 {
            missing.push(NAME_PLACEHOLDER);
        }
        if !missing.is_empty() {
            return Err(fail(format!(
                "the {} placeholder{} missing",
                missing.join(" and "),
                if missing.len() == 1 { " is" } else { "s are" }
            )));
        }
        for (placeholder, count) in [
            (NAMESPACE_PLACEHOLDER, ns_count),
            (NAME_PLACEHOLDER, name_count),
        ] {
            if count > 1 {
                return Err(fail(format!(
                    "the {placeholder} placeholder appears {count} times; it must appear exactly once"
                )));
            }
        }
        let Some(rest) = template.strip_prefix('/') else {
            return Err(fail("it must start with '/'".to_owned()));
        };
        if let Some(c) = template.chars().find(|&c| !is_path_char(c)) {
            return Err(fail(format!(
                "character {c:?} is not allowed (no query, fragment, percent-encoding or whitespace)"
            )));
        }
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            segments.push(match seg {
                "" => return Err(fail("it has an empty segment ('//' or a trailing '/')".into())),
                "." | ".." => return Err(fail(format!("it has a {seg:?} segment"))),
                NAMESPACE_PLACEHOLDER => Segment::Namespace,
                NAME_PLACEHOLDER => Segment::Name,
                s if s.contains(NAMESPACE_PLACEHOLDER) || s.contains(NAME_PLACEHOLDER) => {
                    return Err(fail(format!(
                        "segment {s:?} mixes a placeholder with other text; each placeholder must be a whole segment"
                    )));
                }
                s => Segment::Literal(s.to_owned()),
            });
        }
        if segments.last() != Some(&Segment::Name) {
            return Err(fail(format!(
                "the last segment must be {NAME_PLACEHOLDER}, so that the collection path is the template without it"
            )));
        }
        Ok(Self {
            raw: template.to_owned(),
            segments,
        })
    }

    /// The template as configured.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The path of one object, e.g. `/api/v1/namespaces/default/endpoints/redis`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] when `namespace` is not a DNS-1123 label or `name` not a
    /// DNS-1123 subdomain.
    pub fn object_path(&self, namespace: &str, name: &str) -> Result<String, Error> {
        check_namespace(namespace)?;
        check_name(name)?;
        Ok(self.build(namespace, Some(name)))
    }

    /// The collection path, for `POST`: the template without its last segment, e.g.
    /// `/api/v1/namespaces/default/endpoints`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] when `namespace` is not a DNS-1123 label.
    pub fn collection_path(&self, namespace: &str) -> Result<String, Error> {
        check_namespace(namespace)?;
        Ok(self.build(namespace, None))
    }

    fn build(&self, namespace: &str, name: Option<&str>) -> String {
        let mut out = String::with_capacity(self.raw.len() + namespace.len() + 32);
        for seg in &self.segments {
            let text = match seg {
                Segment::Literal(s) => s.as_str(),
                Segment::Namespace => namespace,
                // The parser guarantees that the name is the last segment.
                Segment::Name => match name {
                    Some(name) => name,
                    None => break,
                },
            };
            out.push('/');
            out.push_str(text);
        }
        out
    }
}

impl Default for PathTemplate {
    /// The template of the original tool's documentation ([`EXAMPLE_TEMPLATE`]).
    fn default() -> Self {
        Self {
            raw: EXAMPLE_TEMPLATE.to_owned(),
            segments: vec![
                Segment::Literal("api".into()),
                Segment::Literal("v1".into()),
                Segment::Literal("namespaces".into()),
                Segment::Namespace,
                Segment::Literal("endpoints".into()),
                Segment::Name,
            ],
        }
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for PathTemplate {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// RFC 3986 `pchar` without `%`, plus `/`.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c)
}

/// Checks a namespace: a DNS-1123 label, at most 63 lower-case alphanumerics or `-`, starting
/// and ending with an alphanumeric. The message says what is expected.
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    if namespace.len() > MAX_LABEL_LEN {
        return Err(format!(
            "must be no more than {MAX_LABEL_LEN} characters (it has {})",
            namespace.len()
        ));
    }
    if !is_dns1123_label(namespace) {
        return Err("a namespace must be a lowercase RFC 1123 label: lower case alphanumeric characters or '-', starting and ending with an alphanumeric character (e.g. 'my-name' or '123-abc')".to_owned());
    }
    Ok(())
}

/// Checks an Endpoints name: a DNS-1123 subdomain, at most 253 characters, dot-separated
/// labels of lower-case alphanumerics or `-`, each starting and ending with an alphanumeric
/// (so `..`, `/` and `%` can never appear). The message says what is expected.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_SUBDOMAIN_LEN {
        return Err(format!(
            "must be no more than {MAX_SUBDOMAIN_LEN} characters (it has {})",
            name.len()
        ));
    }
    if name.is_empty() || !name.split('.').all(is_dns1123_label) {
        return Err("an Endpoints name must be a lowercase RFC 1123 subdomain: lower case alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character (e.g. 'example.com')".to_owned());
    }
    Ok(())
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, without a length limit.
fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

pub(crate) fn check_namespace(namespace: &str) -> Result<(), Error> {
    validate_namespace(namespace).map_err(|problem| Error::InvalidObjectName {
        what: "namespace",
        value: namespace.to_owned(),
        problem,
    })
}

pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    validate_name(name).map_err(|problem| Error::InvalidObjectName {
        what: "Endpoints name",
        value: name.to_owned(),
        problem,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn problem(template: &str) -> String {
        match PathTemplate::parse(template) {
            Err(Error::InvalidPathTemplate { problem, .. }) => problem,
            other => panic!("expected a template error for {template:?}, got {other:?}"),
        }
    }

    #[test]
    fn documented_template() {
        let t = PathTemplate::parse(EXAMPLE_TEMPLATE).unwrap();
        assert_eq!(t, PathTemplate::default());
        assert_eq!(t.to_string(), EXAMPLE_TEMPLATE);
        assert_eq!(
            t.object_path("default", "redis").unwrap(),
            "/api/v1/namespaces/default/endpoints/redis"
        );
        assert_eq!(
            t.collection_path("kube-system").unwrap(),
            "/api/v1/namespaces/kube-system/endpoints"
        );
    }

    #[test]
    fn prefixed_template_for_a_proxy() {
        let t: PathTemplate =
            "/k8s/clusters/c-m-x1/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints"
                .parse()
                .unwrap();
        assert_eq!(
            t.object_path("a", "b.c").unwrap(),
            "/k8s/clusters/c-m-x1/api/v1/namespaces/a/endpoints/b.c"
        );
    }

    #[test]
    fn missing_placeholders_are_named() {
        let p = problem("/api/v1/namespaces/default/endpoints/myEndPoints");
        assert!(p.contains("myNameSpaces placeholder is missing"), "{p}");
        let p = problem("/api/v1/namespaces/myNameSpaces/endpoints/redis");
        assert!(p.contains("myEndPoints placeholder is missing"), "{p}");
        let p = problem("/api/v1/endpoints");
        assert!(
            p.contains("myNameSpaces and myEndPoints placeholders are missing"),
            "{p}"
        );
        let err = PathTemplate::parse("").unwrap_err().to_string();
        assert!(err.contains(EXAMPLE_TEMPLATE), "{err}");
    }

    #[test]
    fn malformed_templates() {
        assert!(
            problem("api/v1/namespaces/myNameSpaces/endpoints/myEndPoints")
                .contains("start with '/'")
        );
        assert!(
            problem("/api/v1/namespaces/myNameSpaces/myNameSpaces/myEndPoints")
                .contains("exactly once")
        );
        assert!(
            problem("/api/myEndPoints/namespaces/myNameSpaces/endpoints/myEndPoints")
                .contains("exactly once")
        );
        assert!(
            problem("/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints/")
                .contains("empty segment")
        );
        assert!(
            problem("/api//v1/namespaces/myNameSpaces/endpoints/myEndPoints")
                .contains("empty segment")
        );
        assert!(
            problem("/api/../namespaces/myNameSpaces/endpoints/myEndPoints").contains("\"..\"")
        );
        assert!(
            problem("/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints?x=1").contains("'?'")
        );
        assert!(problem("/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints#f").contains("'#'"));
        assert!(problem("/api/v1/namespaces/myNameSpaces/endpoints%2FmyEndPoints").contains("'%'"));
        assert!(
            problem("/api/v1/namespaces/ns-myNameSpaces/endpoints/myEndPoints")
                .contains("whole segment")
        );
        assert!(
            problem("/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints/status")
                .contains("last segment")
        );
        assert!(
            problem("/api/v1/endpoints/myEndPoints/namespaces/myNameSpaces")
                .contains("last segment")
        );
    }

    #[test]
    fn namespaces() {
        assert!(validate_namespace("default").is_ok());
        assert!(validate_namespace("a").is_ok());
        assert!(validate_namespace("123-abc").is_ok());
        assert!(validate_namespace(&"a".repeat(63)).is_ok());
        let long = validate_namespace(&"a".repeat(64)).unwrap_err();
        assert!(long.contains("63"), "{long}");
        for bad in [
            "", "-a", "a-", "A", "Default", "a.b", "a/b", "..", "../x", "a%2Fb", "a b", "a_b", "ä",
        ] {
            let msg = validate_namespace(bad).unwrap_err();
            assert!(msg.contains("RFC 1123 label"), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn names() {
        for good in ["redis", "a", "a.b", "my-svc.example.com", "0", "a-1.b-2"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        assert!(validate_name(&"a".repeat(253)).is_ok());
        assert!(validate_name(&"a".repeat(254)).unwrap_err().contains("253"));
        for bad in [
            "", ".", "..", "../etc", "a..b", ".a", "a.", "-a", "a-", "a/b", "a%2Fb", "%2F",
            "Redis", "a_b", "a b", "a\n", "a?b", "a#b",
        ] {
            let msg = validate_name(bad).unwrap_err();
            assert!(msg.contains("RFC 1123 subdomain"), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn traversal_never_reaches_the_path() {
        let t = PathTemplate::default();
        for (ns, name) in [
            ("..", "x"),
            ("default", ".."),
            ("default", "../../secrets/x"),
            ("default", "a%2Fb"),
            ("default/endpoints", "x"),
            ("", "x"),
            ("default", ""),
            ("DEFAULT", "x"),
            (&*"a".repeat(64), "x"),
        ] {
            let err = t.object_path(ns, name).unwrap_err();
            assert!(
                matches!(err, Error::InvalidObjectName { .. }),
                "{ns:?} {name:?}"
            );
        }
        assert!(t.collection_path("../x").is_err());
        let err = t.object_path("default", "A").unwrap_err().to_string();
        assert!(err.starts_with("invalid Endpoints name \"A\": "), "{err}");
    }
}
