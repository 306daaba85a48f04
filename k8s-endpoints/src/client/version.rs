//! The ApiServer's version (`GET /version`), read once so that `not_ready: keep` can fall
//! back to `drop` on clusters before 1.22, which mirrored `notReadyAddresses` into
//! EndpointSlices as ready (kubernetes#102683, SPEC §5.4), and so that EndpointSlices carry
//! only the conditions such a cluster keeps (SPEC §9).

use std::fmt;

use http::Method;
use serde::Deserialize;

use super::Client;
use super::request::{Action, Request};
use crate::error::Error;

/// The answer of `GET /version` (`version.Info`), the fields epcheck uses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// `"1"`.
    #[serde(default)]
    pub major: String,
    /// `"33"`; some providers add a `+` (`"22+"`).
    #[serde(default)]
    pub minor: String,
    /// `"v1.33.1"`, possibly with a provider suffix (`"v1.21.14-gke.700"`).
    #[serde(default)]
    pub git_version: String,
    /// `"linux/amd64"`.
    #[serde(default)]
    pub platform: String,
}

impl VersionInfo {
    /// `(major, minor)` as numbers: from `major`/`minor` (digits only, so `22+` is 22), else
    /// from `gitVersion`. `None` when neither says.
    pub fn numbers(&self) -> Option<(u32, u32)> {
        let digits = |s: &str| -> Option<u32> {
            let d: String = s.chars().take_while(char::is_ascii_digit).collect();
            d.parse().ok()
        };
        if let (Some(major), Some(minor)) = (digits(&self.major), digits(&self.minor)) {
            return Some((major, minor));
        }
        let v = self.git_version.trim_start_matches('v');
        let mut parts = v.split('.');
        Some((digits(parts.next()?)?, digits(parts.next()?)?))
    }

    /// Whether the server is at least `major.minor`; `None` when its version is unknown.
    pub fn at_least(&self, major: u32, minor: u32) -> Option<bool> {
        self.numbers().map(|v| v >= (major, minor))
    }

    /// Whether `notReadyAddresses` are safe to write (1.22 and later); `None` when unknown.
    pub fn not_ready_addresses_safe(&self) -> Option<bool> {
        self.at_least(1, 22)
    }

    /// Whether the server keeps the `serving` and `terminating` conditions of EndpointSlice
    /// endpoints (1.22 and later, where the `EndpointSliceTerminatingCondition` gate is on by
    /// default; before, they are dropped on write); `None` when unknown.
    pub fn keeps_slice_serving_terminating(&self) -> Option<bool> {
        self.at_least(1, 22)
    }
}

impl fmt::Display for VersionInfo {
    /// `gitVersion`, else `major.minor`, with control characters escaped (it is logged).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.git_version.is_empty() {
            f.write_str(&super::escape_control(&self.git_version))
        } else {
            let text = format!("{}.{}", self.major, self.minor);
            f.write_str(&super::escape_control(&text))
        }
    }
}

impl Client {
    /// Reads `GET /version`.
    ///
    /// # Errors
    ///
    /// [`Error::Api`], [`Error::Transport`], or [`Error::InvalidResponse`] when the body is
    /// not a version object.
    pub async fn server_version(&self) -> Result<VersionInfo, Error> {
        let req = Request {
            method: Method::GET,
            path: format!("{}/version", self.inner.api_prefix),
            body: None,
            action: Action {
                verb: "get",
                resource: "the /version endpoint",
                namespace: None,
                name: None,
            },
        };
        let resp = self.execute(&req).await?;
        self.decode(&req, &resp)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn v(major: &str, minor: &str, git: &str) -> VersionInfo {
        VersionInfo {
            major: major.into(),
            minor: minor.into(),
            git_version: git.into(),
            platform: String::new(),
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(v("1", "33", "v1.33.1").numbers(), Some((1, 33)));
        assert_eq!(v("1", "22+", "").numbers(), Some((1, 22)));
        assert_eq!(v("", "", "v1.21.14-gke.700").numbers(), Some((1, 21)));
        assert_eq!(v("", "", "").numbers(), None);
        assert_eq!(v("x", "y", "garbage").numbers(), None);
    }

    #[test]
    fn thresholds() {
        assert_eq!(v("1", "21", "").not_ready_addresses_safe(), Some(false));
        assert_eq!(v("1", "22", "").not_ready_addresses_safe(), Some(true));
        assert_eq!(v("2", "0", "").not_ready_addresses_safe(), Some(true));
        assert_eq!(v("", "", "").not_ready_addresses_safe(), None);
        assert_eq!(
            v("1", "21", "").keeps_slice_serving_terminating(),
            Some(false)
        );
        assert_eq!(
            v("1", "22", "").keeps_slice_serving_terminating(),
            Some(true)
        );
    }

    #[test]
    fn parses_and_displays() {
        let info: VersionInfo = serde_json::from_str(
            r#"{"major":"1","minor":"34","gitVersion":"v1.34.0","gitCommit":"abc","platform":"linux/amd64"}"#,
        )
        .unwrap();
        assert_eq!(info.to_string(), "v1.34.0");
        assert_eq!(
            v("", "", "v1.34.0\n\u{1b}[2J").to_string(),
            r"v1.34.0\n\x1b[2J"
        );
        assert_eq!(v("1", "2", "").to_string(), "1.2");
    }
}
