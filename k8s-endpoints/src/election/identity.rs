//! Who this replica is and where its Lease lives (SPEC §4, §9), read through an environment
//! seam so tests never set process variables.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use crate::path::validate_namespace;

/// The service-account namespace file, next to the in-cluster token.
pub const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Where the hostname is read when neither `POD_NAME` nor `HOSTNAME` is set.
const HOSTNAME_FILE: &str = "/etc/hostname";

/// This replica's election identity: `POD_NAME`, else `HOSTNAME`, else `/etc/hostname`, else
/// `epcheck`; then `_` and six random hex digits, so that a restarted pod with the same name
/// is a new candidate and never mistakes the old pod's lease for its own.
///
/// ```
/// let id = k8s_endpoints::election::identity(&|k| (k == "POD_NAME").then(|| "epcheck-7d9f".to_owned()));
/// assert!(id.starts_with("epcheck-7d9f_"));
/// assert_eq!(id.len(), "epcheck-7d9f_".len() + 6);
/// ```
pub fn identity(env: &dyn Fn(&str) -> Option<String>) -> String {
    let file = || std::fs::read_to_string(HOSTNAME_FILE).ok();
    let suffix = Rng::new().next_u64() & 0xff_ffff;
    format!("{}_{suffix:06x}", base_identity(env, file))
}

/// The part of [`identity`] before the suffix.
fn base_identity(
    env: &dyn Fn(&str) -> Option<String>,
    hostname_file: impl FnOnce() -> Option<String>,
) -> String {
    let clean = |s: String| {
        let s: String = s.trim().chars().filter(|c| !c.is_control()).collect();
        (!s.is_empty()).then_some(s)
    };
    env("POD_NAME")
        .and_then(clean)
        .or_else(|| env("HOSTNAME").and_then(clean))
        .or_else(|| hostname_file().and_then(clean))
        .unwrap_or_else(|| "epcheck".to_owned())
}

/// The namespace of the Lease when the config names none: `POD_NAMESPACE`, then the
/// `namespace` file next to `token_path` (the token file in use), then [`NAMESPACE_FILE`],
/// then `default`. Values that are not valid namespaces are skipped.
pub fn lease_namespace(env: &dyn Fn(&str) -> Option<String>, token_path: Option<&Path>) -> String {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(dir) = token_path.and_then(Path::parent) {
        files.push(dir.join("namespace"));
    }
    let standard = PathBuf::from(NAMESPACE_FILE);
    if !files.contains(&standard) {
        files.push(standard);
    }
    namespace_from(env, &files, |p| std::fs::read_to_string(p).ok())
}

fn namespace_from(
    env: &dyn Fn(&str) -> Option<String>,
    files: &[PathBuf],
    read: impl Fn(&Path) -> Option<String>,
) -> String {
    let usable = |s: String| {
        let s = s.trim().to_owned();
        match validate_namespace(&s) {
            Ok(()) => Some(s),
            Err(problem) => {
                if !s.is_empty() {
                    tracing::warn!(namespace = %s, problem = %problem, "ignoring an invalid namespace for the leader Lease");
                }
                None
            }
        }
    };
    env("POD_NAMESPACE")
        .and_then(usable)
        .or_else(|| files.iter().find_map(|f| read(f).and_then(usable)))
        .unwrap_or_else(|| "default".to_owned())
}

/// A small non-cryptographic generator (splitmix64) for jitter and identity suffixes, seeded
/// from the standard library's per-process random hasher keys and the time.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        Self(h.finish())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1]`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / ((1u64 << 53) - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn identity_sources_in_order() {
        let none = || None;
        let file = || Some("node-7\n".to_owned());
        assert_eq!(
            base_identity(&env(&[("POD_NAME", "p-1"), ("HOSTNAME", "h")]), file),
            "p-1"
        );
        assert_eq!(
            base_identity(&env(&[("POD_NAME", " "), ("HOSTNAME", "h")]), file),
            "h"
        );
        assert_eq!(base_identity(&env(&[]), file), "node-7");
        assert_eq!(base_identity(&env(&[]), none), "epcheck");
        let a = identity(&env(&[("POD_NAME", "p-1")]));
        let b = identity(&env(&[("POD_NAME", "p-1")]));
        assert_ne!(a, b, "suffixes differ");
        let suffix = a.strip_prefix("p-1_").unwrap();
        assert_eq!(suffix.len(), 6);
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn namespace_sources_in_order() {
        let files = [PathBuf::from("/t/namespace"), PathBuf::from(NAMESPACE_FILE)];
        let read = |p: &Path| (p == Path::new("/t/namespace")).then(|| "team-a\n".to_owned());
        let nothing = |_: &Path| None;
        assert_eq!(
            namespace_from(&env(&[("POD_NAMESPACE", "ops")]), &files, read),
            "ops"
        );
        assert_eq!(namespace_from(&env(&[]), &files, read), "team-a");
        assert_eq!(
            namespace_from(&env(&[("POD_NAMESPACE", "Not_Valid")]), &files, read),
            "team-a"
        );
        assert_eq!(namespace_from(&env(&[]), &files, nothing), "default");
    }

    #[test]
    fn namespace_file_next_to_the_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("namespace"), "from-file").unwrap();
        let token = dir.path().join("token");
        assert_eq!(lease_namespace(&env(&[]), Some(&token)), "from-file");
    }

    #[test]
    fn unit_is_in_range() {
        let mut r = Rng::new();
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..=1.0).contains(&u));
        }
    }
}
