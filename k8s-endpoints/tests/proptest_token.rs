//! Property tests of the token reader (SPEC §4, §12), beyond `no_panic.rs` (arbitrary bytes
//! never panic): a token with surrounding whitespace round-trips trimmed, wrapping any contents
//! in whitespace changes nothing, contents that cannot be a token are refused without showing
//! them, and a token never shows in `Debug` or `Display`.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p k8s-endpoints --test proptest_token`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use k8s_endpoints::token::{TokenProblem, parse_token};
use proptest::prelude::*;

/// What a service-account token looks like (a JWT), or any visible ASCII.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{8,40}\\.[A-Za-z0-9_-]{8,80}\\.[A-Za-z0-9_-]{8,40}",
        "[!-~]{1,64}",
    ]
}

/// Whitespace that `str::trim` removes: ASCII and Unicode.
fn padding() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(
            &[
                " ", "\t", "\n", "\r\n", "\u{b}", "\u{c}", "\u{a0}", "\u{2003}", "\u{3000}",
            ][..],
        ),
        0..6,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn a_padded_token_round_trips_trimmed(t in token(), left in padding(), right in padding()) {
        let file = format!("{left}{t}{right}");
        let parsed = parse_token(file.as_bytes()).unwrap();
        prop_assert_eq!(parsed.expose_secret(), t.as_str());
        let bare = parse_token(t.as_bytes()).unwrap();
        prop_assert_eq!(bare.expose_secret(), t.as_str());
    }

    #[test]
    fn padding_never_changes_the_outcome(bytes in prop::collection::vec(any::<u8>(), 0..200), left in padding(), right in padding()) {
        let mut padded = left.into_bytes();
        padded.extend_from_slice(&bytes);
        padded.extend_from_slice(right.as_bytes());
        let a = parse_token(&bytes).map(|t| t.expose_secret().to_owned());
        let b = parse_token(&padded).map(|t| t.expose_secret().to_owned());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn a_token_with_inner_space_or_control_is_refused_without_showing_it(
        head in "[A-Za-z0-9]{12,30}",
        bad in prop::sample::select(&[" ", "\t", "\n", "\u{0}", "\u{7f}", "é", "\u{200b}"][..]),
        tail in "[A-Za-z0-9]{12,30}",
    ) {
        let file = format!("{head}{bad}{tail}");
        match parse_token(file.as_bytes()) {
            Err(TokenProblem::Invalid(why)) => {
                prop_assert!(!why.contains(&head) && !why.contains(&tail), "the token shown: {why}");
            }
            other => prop_assert!(false, "accepted or misjudged: {:?}", other.map(|_| "a token")),
        }
    }

    #[test]
    fn whitespace_only_is_empty(pad in padding()) {
        prop_assert!(matches!(parse_token(pad.as_bytes()), Err(TokenProblem::Empty)));
    }

    #[test]
    fn a_token_never_shows_in_debug_or_display(t in "[A-Za-z0-9]{12,64}") {
        let token = parse_token(t.as_bytes()).unwrap();
        let (debug, display) = (format!("{token:?}"), format!("{token}"));
        prop_assert!(!debug.contains(&t) && !display.contains(&t));
    }
}
