//! Reading the bearer token from real files (SPEC §4), in temporary directories standing for
//! the working directory.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

use k8s_endpoints::token::{MAX_TOKEN_BYTES, PLATFORM_DEFAULT_TOKEN_PATH};
use k8s_endpoints::{Error, TokenLocation, read_token};

fn write(dir: &Path, rel: &str, contents: &str) -> PathBuf {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, contents).unwrap();
    path
}

fn read(setting: &str, base: &Path) -> Result<(PathBuf, String), Error> {
    read_token(&TokenLocation::from_setting(setting), base)
        .map(|(path, token)| (path, token.expose_secret().to_owned()))
}

#[test]
fn default_prefers_dot_token() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "token", "first\n");
    write(dir.path(), "conf/token", "second");
    assert_eq!(
        read("default", dir.path()).unwrap(),
        (first, "first".into())
    );
}

#[test]
fn default_falls_back_to_conf_token() {
    let dir = tempfile::tempdir().unwrap();
    let second = write(dir.path(), "conf/token", "  second \r\n");
    assert_eq!(
        read("default", dir.path()).unwrap(),
        (second, "second".into())
    );
}

#[test]
fn default_with_nothing_names_both_paths_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let err = read("default", dir.path()).unwrap_err();
    let Error::TokenNotFound { tried, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(
        tried,
        &[dir.path().join("token"), dir.path().join("conf/token")]
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.path().join("token").display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains(&dir.path().join("conf/token").display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains("put the token into ./token or ./conf/token"),
        "{msg}"
    );
}

#[test]
fn empty_first_file_is_an_error_not_a_fallthrough() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "token", "");
    write(dir.path(), "conf/token", "second");
    let err = read("default", dir.path()).unwrap_err();
    let Error::TokenEmpty { path, tried } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(path, &first);
    assert_eq!(tried, std::slice::from_ref(&first));
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn whitespace_only_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tok", " \n\t\r\n ");
    assert!(matches!(
        read("tok", dir.path()),
        Err(Error::TokenEmpty { .. })
    ));
}

#[test]
fn explicit_relative_path_is_relative_to_base() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "secrets/sa-token", "\n\neyJhbGciOi.abc.def\n");
    assert_eq!(
        read("secrets/sa-token", dir.path()).unwrap(),
        (path, "eyJhbGciOi.abc.def".into())
    );
}

#[test]
fn explicit_absolute_path_ignores_base() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "abs-token", "tok");
    let setting = path.to_str().unwrap();
    assert_eq!(read(setting, other.path()).unwrap(), (path, "tok".into()));
}

#[test]
fn explicit_missing_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = read("nope/token", dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.path().join("nope/token").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("check the token_file setting"), "{msg}");
}

#[test]
fn platform_default_candidate() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        TokenLocation::from_setting("").candidates(dir.path()),
        [PathBuf::from(PLATFORM_DEFAULT_TOKEN_PATH)]
    );
    // Only checked where no service-account token is mounted (not inside a pod).
    if !Path::new(PLATFORM_DEFAULT_TOKEN_PATH).exists() {
        let msg = read("", dir.path()).unwrap_err().to_string();
        assert!(msg.contains(PLATFORM_DEFAULT_TOKEN_PATH), "{msg}");
        assert!(msg.contains("platform default"), "{msg}");
    }
}

#[test]
fn directory_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("token")).unwrap();
    let err = read("default", dir.path()).unwrap_err();
    assert!(matches!(err, Error::TokenRead { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn unusable_contents_never_echo_the_token() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "token", "Bearer hunter2-secret");
    let err = read("default", dir.path()).unwrap_err();
    assert!(matches!(err, Error::TokenInvalid { .. }), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

    let big = "a".repeat(usize::try_from(MAX_TOKEN_BYTES).unwrap() * 2);
    write(dir.path(), "token", &big);
    let err = read("default", dir.path()).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[test]
fn token_debug_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "token", "very-secret-token");
    let (_, token) = read_token(&TokenLocation::WorkingDir, dir.path()).unwrap();
    assert!(!format!("{token:?}").contains("very-secret"));
    assert!(!format!("{token}").contains("very-secret"));
    assert_eq!(token.expose_secret(), "very-secret-token");
}
