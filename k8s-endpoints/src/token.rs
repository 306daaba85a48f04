//! Where the bearer token comes from (SPEC §4) and how it is read.
//!
//! The decision is split in two so that it can be tested without touching the file system:
//!
//! * [`TokenLocation::from_setting`] turns the `token_file` config value into a location and
//!   [`TokenLocation::candidates`] lists the files to try, in order (pure);
//! * [`read_token`] tries them and returns the first that exists (I/O).
//!
//! The working directory is always a parameter (`base_dir`), never read from the process, so
//! tests do not have to `chdir`.
//!
//! | `token_file`   | candidates                                                          |
//! | -------------- | ------------------------------------------------------------------- |
//! | empty / absent | [`PLATFORM_DEFAULT_TOKEN_PATH`]                                      |
//! | `default`      | `base_dir/token`, then `base_dir/conf/token`                         |
//! | anything else  | that path (a relative path is taken relative to `base_dir`)          |
//!
//! The first candidate that exists wins, even when it turns out to be empty: an empty
//! `./token` is reported as such instead of silently falling through to `./conf/token`,
//! because the operator who put it there most likely meant it to be used.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;

/// The token file used when `token_file` is empty or absent: the projected service-account
/// token that the kubelet mounts into every pod.
#[cfg(not(windows))]
pub const PLATFORM_DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The token file used when `token_file` is empty or absent: the original Go tool's default
/// on Windows, kept so that its configurations work unchanged.
#[cfg(windows)]
pub const PLATFORM_DEFAULT_TOKEN_PATH: &str =
    r"C:\Users\Administrator\go\my_script\src\lepai.token\token";

/// The `token_file` value that selects [`TokenLocation::WorkingDir`].
pub const WORKING_DIR_SETTING: &str = "default";

/// Files tried, relative to the working directory, for `token_file: default`.
pub const WORKING_DIR_CANDIDATES: [&str; 2] = ["token", "conf/token"];

/// Largest token file accepted. Service-account JWTs are 1-2 KiB; anything much larger is
/// the wrong file, and is refused rather than sent in every request header.
pub const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Where the bearer token is looked for, decided from the `token_file` setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TokenLocation {
    /// `token_file` empty or absent: [`PLATFORM_DEFAULT_TOKEN_PATH`].
    #[default]
    PlatformDefault,
    /// `token_file: default`: `./token`, then `./conf/token`.
    WorkingDir,
    /// Any other value: that path, relative paths taken relative to the working directory.
    Path(PathBuf),
}

impl TokenLocation {
    /// Interprets a `token_file` value. Surrounding whitespace is ignored, so a value of
    /// only spaces means the platform default. `default` is matched exactly (lower case),
    /// as in the original tool.
    pub fn from_setting(setting: &str) -> Self {
        match setting.trim() {
            "" => Self::PlatformDefault,
            WORKING_DIR_SETTING => Self::WorkingDir,
            other => Self::Path(PathBuf::from(other)),
        }
    }

    /// Like [`from_setting`](Self::from_setting), with `None` for an absent key.
    pub fn from_optional_setting(setting: Option<&str>) -> Self {
        setting.map_or(Self::PlatformDefault, Self::from_setting)
    }

    /// The files to try, in order. Pure: nothing is read. `base_dir` stands for the working
    /// directory; it is ignored for the platform default and for absolute paths.
    pub fn candidates(&self, base_dir: &Path) -> Vec<PathBuf> {
        match self {
            Self::PlatformDefault => vec![PathBuf::from(PLATFORM_DEFAULT_TOKEN_PATH)],
            Self::WorkingDir => WORKING_DIR_CANDIDATES
                .iter()
                .map(|rel| base_dir.join(rel))
                .collect(),
            // `join` keeps an absolute path as it is.
            Self::Path(path) => vec![base_dir.join(path)],
        }
    }

    /// What the operator can do when no candidate exists.
    fn hint(&self) -> &'static str {
        match self {
            Self::PlatformDefault => {
                "outside a pod, set token_file to the path of a token file, or to \"default\" to use ./token or ./conf/token; inside a pod, check that the service account token is mounted (automountServiceAccountToken)"
            }
            Self::WorkingDir => {
                "put the token into ./token or ./conf/token next to where epcheck runs, or set token_file to its path"
            }
            Self::Path(_) => {
                "check the token_file setting (relative paths are relative to the working directory)"
            }
        }
    }
}

impl fmt::Display for TokenLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlatformDefault => f.write_str("(empty: platform default)"),
            Self::WorkingDir => f.write_str(WORKING_DIR_SETTING),
            Self::Path(path) => write!(f, "{:?}", path.display().to_string()),
        }
    }
}

/// A bearer token. Its value is held as a [`SecretString`] (zeroed on drop) and never shown
/// by `Debug` or `Display`; call [`expose_secret`](Self::expose_secret) only to build the
/// `Authorization` header.
#[derive(Clone)]
pub struct Token(SecretString);

impl Token {
    /// Wraps a token value. The value is taken as it is (no trimming or checks); use
    /// [`parse_token`] for file contents.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The token value, for the `Authorization: Bearer …` header only.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Why file contents are not a usable token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenProblem {
    /// Empty or whitespace only.
    Empty,
    /// Anything else; the text says what, never showing the value.
    Invalid(String),
}

/// Checks token file contents: trims surrounding whitespace and requires visible ASCII only,
/// since the ApiServer splits `Authorization: Bearer <token>` on spaces and HTTP headers
/// cannot carry control characters. Pure; never panics.
pub fn parse_token(contents: &[u8]) -> Result<Token, TokenProblem> {
    if contents.len() as u64 > MAX_TOKEN_BYTES {
        return Err(TokenProblem::Invalid(format!(
            "it is larger than {MAX_TOKEN_BYTES} bytes, which is no bearer token; check that token_file points at the token"
        )));
    }
    let text = std::str::from_utf8(contents).map_err(|_| {
        TokenProblem::Invalid("it is not UTF-8 text; a bearer token is ASCII".to_owned())
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(TokenProblem::Empty);
    }
    if let Some(pos) = trimmed.chars().position(|c| !c.is_ascii_graphic()) {
        return Err(TokenProblem::Invalid(format!(
            "character {} (after trimming) is whitespace, a control character or non-ASCII, which cannot be part of a bearer token",
            pos + 1
        )));
    }
    Ok(Token::new(trimmed))
}

/// Reads the token: tries each of `location.candidates(base_dir)` in order; the first file that
/// exists wins. Returns the path used with the token.
///
/// # Errors
///
/// [`Error::TokenNotFound`] when no candidate exists, [`Error::TokenEmpty`] when the first
/// existing one is empty or whitespace only, [`Error::TokenRead`] when it cannot be read (a
/// directory, no permission) and [`Error::TokenInvalid`] when its contents cannot be a token.
/// All name the paths tried; none contains the token.
pub fn read_token(location: &TokenLocation, base_dir: &Path) -> Result<(PathBuf, Token), Error> {
    let mut tried = Vec::new();
    for path in location.candidates(base_dir) {
        tried.push(path.clone());
        let contents = match read_limited(&path) {
            Ok(contents) => contents,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::TokenRead {
                    path,
                    tried,
                    source,
                });
            }
        };
        return match parse_token(&contents) {
            Ok(token) => {
                tracing::debug!(path = %path.display(), "read bearer token");
                Ok((path, token))
            }
            Err(TokenProblem::Empty) => Err(Error::TokenEmpty { path, tried }),
            Err(TokenProblem::Invalid(problem)) => Err(Error::TokenInvalid { path, problem }),
        };
    }
    Err(Error::TokenNotFound {
        setting: location.to_string(),
        tried,
        hint: location.hint().to_owned(),
    })
}

/// Reads at most one byte more than [`MAX_TOKEN_BYTES`], so a wrong path to a huge file
/// costs nothing and is still reported as too large.
fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    file.take(MAX_TOKEN_BYTES + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn settings() {
        assert_eq!(
            TokenLocation::from_setting(""),
            TokenLocation::PlatformDefault
        );
        assert_eq!(
            TokenLocation::from_setting("  \t"),
            TokenLocation::PlatformDefault
        );
        assert_eq!(
            TokenLocation::from_optional_setting(None),
            TokenLocation::PlatformDefault
        );
        assert_eq!(
            TokenLocation::from_setting("default"),
            TokenLocation::WorkingDir
        );
        assert_eq!(
            TokenLocation::from_setting(" default\n"),
            TokenLocation::WorkingDir
        );
        assert_eq!(
            TokenLocation::from_setting("Default"),
            TokenLocation::Path("Default".into())
        );
        assert_eq!(
            TokenLocation::from_setting("/etc/epcheck/token"),
            TokenLocation::Path("/etc/epcheck/token".into())
        );
    }

    #[test]
    fn candidates_are_pure_and_ordered() {
        let base = Path::new("/srv/epcheck");
        assert_eq!(
            TokenLocation::PlatformDefault.candidates(base),
            vec![PathBuf::from(PLATFORM_DEFAULT_TOKEN_PATH)]
        );
        assert_eq!(
            TokenLocation::WorkingDir.candidates(base),
            vec![base.join("token"), base.join("conf/token")]
        );
        assert_eq!(
            TokenLocation::Path("secrets/tok".into()).candidates(base),
            vec![base.join("secrets/tok")]
        );
        #[cfg(unix)]
        assert_eq!(
            TokenLocation::Path("/abs/tok".into()).candidates(base),
            vec![PathBuf::from("/abs/tok")]
        );
    }

    #[cfg(unix)]
    #[test]
    fn unix_default_is_the_service_account_token() {
        assert_eq!(
            PLATFORM_DEFAULT_TOKEN_PATH,
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        );
    }

    #[test]
    fn parse_trims_and_checks() {
        assert_eq!(
            parse_token(b"  abc.def-ghi_\n").unwrap().expose_secret(),
            "abc.def-ghi_"
        );
        assert_eq!(parse_token(b"").unwrap_err(), TokenProblem::Empty);
        assert_eq!(parse_token(b" \r\n\t ").unwrap_err(), TokenProblem::Empty);
        assert!(matches!(
            parse_token(b"ab cd"),
            Err(TokenProblem::Invalid(_))
        ));
        assert!(matches!(
            parse_token(b"ab\x00cd"),
            Err(TokenProblem::Invalid(_))
        ));
        assert!(matches!(
            parse_token(&[0xff, 0xfe]),
            Err(TokenProblem::Invalid(_))
        ));
        assert!(matches!(
            parse_token("tökén".as_bytes()),
            Err(TokenProblem::Invalid(_))
        ));
        let huge = vec![b'a'; usize::try_from(MAX_TOKEN_BYTES).unwrap() + 1];
        assert!(matches!(parse_token(&huge), Err(TokenProblem::Invalid(_))));
    }

    #[test]
    fn invalid_message_does_not_echo_value() {
        let Err(TokenProblem::Invalid(msg)) = parse_token(b"secret value") else {
            panic!("expected invalid");
        };
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn token_never_shows_its_value() {
        let token = Token::new("s3cr3t-value");
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert!(!format!("{token:#?}").contains("s3cr3t"));
        assert!(!format!("{token}").contains("s3cr3t"));
        assert_eq!(token.clone().expose_secret(), "s3cr3t-value");
    }

    #[test]
    fn display_of_locations() {
        assert_eq!(TokenLocation::WorkingDir.to_string(), "default");
        assert_eq!(
            TokenLocation::PlatformDefault.to_string(),
            "(empty: platform default)"
        );
        assert_eq!(TokenLocation::Path("a b".into()).to_string(), "\"a b\"");
    }
}
