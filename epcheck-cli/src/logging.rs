//! Which log events reach the output: epcheck's own crates at the level `-v`/`-q` chose, other
//! crates not at all (SPEC §13: third-party log output is filtered so that none of it can leak
//! a secret).
//!
//! Other crates' events are dropped because epcheck cannot vet what they print: the Redis
//! client (fred) logs the server's replies, and a server that is sent a password it does not
//! expect answers with the AUTH command quoted (older servers quoted the password itself);
//! hyper and rustls log connection details. epcheck reports every failure of theirs itself,
//! in its own words, scrubbed of secrets.
//!
//! `EPCHECK_LOG` takes `tracing` directives: a bare level (`debug`) sets the level of epcheck's
//! own crates, like `-v`; a directive that names a crate (`fred=debug`, `hyper=trace`) turns that
//! crate's logging on, an explicit choice for debugging that may print what that crate prints.

/// epcheck's own crates, whose events are vetted (no token, password or secret in any field).
pub const OWN_CRATES: [&str; 4] = ["epcheck", "probe_core", "k8s_endpoints", "state_store"];

/// The filter directives for the `-v`/`-q` `level` and the value of `EPCHECK_LOG`, if any.
pub fn directives(level: &str, env: Option<&str>) -> String {
    let mut own = level.to_owned();
    let mut named = Vec::new();
    for d in env.unwrap_or("").split(',').map(str::trim) {
        if d.is_empty() {
            continue;
        }
        if d.contains('=') || d.contains('[') {
            named.push(d.to_owned());
        } else {
            own = d.to_owned();
        }
    }
    let named_target = |c: &str| {
        named
            .iter()
            .any(|d| d.split(['=', '[']).next().is_some_and(|t| t.trim() == c))
    };
    let mut out = vec!["off".to_owned()];
    out.extend(
        OWN_CRATES
            .iter()
            .filter(|c| !named_target(c))
            .map(|c| format!("{c}={own}")),
    );
    out.extend(named);
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_crates_are_off_unless_named() {
        assert_eq!(
            directives("debug", None),
            "off,epcheck=debug,probe_core=debug,k8s_endpoints=debug,state_store=debug"
        );
        assert_eq!(
            directives("info", Some("trace")),
            "off,epcheck=trace,probe_core=trace,k8s_endpoints=trace,state_store=trace"
        );
        assert_eq!(
            directives("info", Some("warn, fred=debug")),
            "off,epcheck=warn,probe_core=warn,k8s_endpoints=warn,state_store=warn,fred=debug"
        );
        assert_eq!(
            directives("info", Some("info,epcheck=debug")),
            "off,probe_core=info,k8s_endpoints=info,state_store=info,epcheck=debug"
        );
    }
}
