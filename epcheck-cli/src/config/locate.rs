//! Where the config file is found (SPEC §3.1).

use std::path::{Path, PathBuf};

use super::ConfigError;

/// The places looked at, in order, when no `-f/--config` is given: `./config.yaml`,
/// `./config/config.yaml`, then the same two next to the executable.
pub fn default_candidates(cwd: &Path, exe_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut out = vec![
        cwd.join("config.yaml"),
        cwd.join("config").join("config.yaml"),
    ];
    if let Some(dir) = exe_dir {
        for p in [
            dir.join("config.yaml"),
            dir.join("config").join("config.yaml"),
        ] {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Picks the config file: `explicit` (from `-f` or `EPCHECK_CONFIG`) when given, else the first
/// default candidate that exists. A missing explicit file is reported by the read that follows,
/// with the OS error.
pub fn locate(
    explicit: Option<&Path>,
    cwd: &Path,
    exe_dir: Option<&Path>,
) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let tried = default_candidates(cwd, exe_dir);
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(ConfigError::NotFound { tried })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn explicit_path_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = locate(Some(Path::new("/x/y.yaml")), dir.path(), None).unwrap();
        assert_eq!(p, PathBuf::from("/x/y.yaml"));
    }

    #[test]
    fn cwd_then_config_dir_then_exe_dir() {
        let cwd = tempfile::tempdir().unwrap();
        let exe = tempfile::tempdir().unwrap();
        std::fs::create_dir(exe.path().join("config")).unwrap();
        std::fs::write(exe.path().join("config/config.yaml"), "x").unwrap();
        assert_eq!(
            locate(None, cwd.path(), Some(exe.path())).unwrap(),
            exe.path().join("config/config.yaml")
        );
        std::fs::create_dir(cwd.path().join("config")).unwrap();
        std::fs::write(cwd.path().join("config/config.yaml"), "x").unwrap();
        assert_eq!(
            locate(None, cwd.path(), Some(exe.path())).unwrap(),
            cwd.path().join("config/config.yaml")
        );
        std::fs::write(cwd.path().join("config.yaml"), "x").unwrap();
        assert_eq!(
            locate(None, cwd.path(), Some(exe.path())).unwrap(),
            cwd.path().join("config.yaml")
        );
    }

    #[test]
    fn nothing_found_names_every_place() {
        let cwd = tempfile::tempdir().unwrap();
        let exe = tempfile::tempdir().unwrap();
        match locate(None, cwd.path(), Some(exe.path())) {
            Err(ConfigError::NotFound { tried }) => assert_eq!(tried.len(), 4),
            other => panic!("unexpected {other:?}"),
        }
    }
}
