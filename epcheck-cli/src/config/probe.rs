//! The `probe` settings: global defaults and per-service overrides.

use std::time::Duration;

use probe_core::{Check, ExecCheck, Expect, HttpCheck, TcpCheck};
use serde_yaml::{Mapping, Value};

use super::reader::{Reader, get, join};
use super::{ProbeKind, ProbeSettings};

/// Global probe defaults before they are merged into each service.
pub(super) struct ProbeDefaults {
    pub(super) kind: ProbeKind,
    pub(super) rise: u32,
    pub(super) fall: u32,
    pub(super) fast_interval: Duration,
    pub(super) jitter: f64,
    pub(super) send: Option<String>,
    pub(super) expect: Option<Expect>,
    /// `half_open`: plain connect checks stop at the SYN-ACK.
    pub(super) half_open: bool,
    pub(super) exec: Option<ExecCheck>,
    pub(super) http: HttpCheck,
}

pub(super) fn read_kind(r: &mut Reader, value: Option<&Value>, path: &str) -> Option<ProbeKind> {
    match r.choice(value, path, &["tcp", "http", "exec"])? {
        "http" => Some(ProbeKind::Http),
        "exec" => Some(ProbeKind::Exec),
        _ => Some(ProbeKind::Tcp),
    }
}

pub(super) fn read_expect(r: &mut Reader, map: Option<&Mapping>, path: &str) -> Option<Expect> {
    let contains = r.text(get(map, "expect"), &join(path, "expect"));
    let regex = r.text(get(map, "expect_regex"), &join(path, "expect_regex"));
    match (contains, regex) {
        (Some(_), Some(_)) => {
            r.error(
                &join(path, "expect_regex"),
                "set either `expect` (a substring) or `expect_regex`, not both",
            );
            None
        }
        (Some(s), None) => match Expect::contains(s) {
            Ok(e) => Some(e),
            Err(e) => {
                r.error(&join(path, "expect"), e.to_string());
                None
            }
        },
        (None, Some(re)) => match Expect::regex(&re) {
            Ok(e) => Some(e),
            Err(e) => {
                r.error(&join(path, "expect_regex"), e.to_string());
                None
            }
        },
        (None, None) => None,
    }
}

pub(super) fn read_exec(
    r: &mut Reader,
    value: Option<&Value>,
    path: &str,
    default_timeout: Duration,
) -> Option<ExecCheck> {
    let value = value?;
    let map = r.mapping(value, path, EXEC_KEYS);
    let cpath = join(path, "command");
    let mut command = Vec::new();
    if let Some(items) = get(map, "command").and_then(|v| r.sequence(v, &cpath)) {
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = r.text(Some(item), &format!("{cpath}[{i}]")) {
                command.push(s);
            }
        }
    }
    if command.is_empty() {
        r.error(
            &cpath,
            "an exec probe needs a command, e.g. command: [\"/etc/epcheck/check.sh\"]",
        );
        return None;
    }
    let timeout = r
        .millis(get(map, "timeout"), &join(path, "timeout"))
        .unwrap_or(default_timeout);
    Some(ExecCheck { command, timeout })
}

/// `probe.http`: path, expected statuses, TLS, Host; `base` supplies what is not set.
pub(super) fn read_http(
    r: &mut Reader,
    value: Option<&Value>,
    path: &str,
    base: &HttpCheck,
) -> HttpCheck {
    let Some(value) = value else {
        return base.clone();
    };
    let map = r.mapping(value, path, HTTP_KEYS);
    let mut check = base.clone();
    if let Some(p) = r.text(get(map, "path"), &join(path, "path")) {
        match HttpCheck::new(p) {
            Ok(c) => check.path = c.path,
            Err(e) => r.error(&join(path, "path"), e.to_string()),
        }
    }
    if let Some(v) = get(map, "expect_status") {
        let spath = join(path, "expect_status");
        let mut codes = Vec::new();
        if let Some(items) = r.sequence(v, &spath) {
            for (i, item) in items.iter().enumerate() {
                if let Some(c) = r.integer(Some(item), &format!("{spath}[{i}]"), 100, 599) {
                    codes.push(c as u16);
                }
            }
        }
        match check.clone().with_expect_status(codes) {
            Ok(c) => check = c,
            Err(e) => r.error(&spath, e.to_string()),
        }
    }
    if let Some(tls) = r.boolean(get(map, "tls"), &join(path, "tls")) {
        check = check.with_tls(tls);
    }
    if let Some(host) = r.text(get(map, "host"), &join(path, "host")) {
        match check.clone().with_host(host) {
            Ok(c) => check = c,
            Err(e) => r.error(&join(path, "host"), e.to_string()),
        }
    }
    check
}

pub(super) fn read_probe_defaults(
    r: &mut Reader,
    value: Option<&Value>,
    timeout: Duration,
) -> (ProbeDefaults, usize) {
    let map = value.and_then(|v| r.mapping(v, "probe", PROBE_KEYS));
    for (key, top) in [("interval", "interval"), ("timeout", "pingtimeout")] {
        if get(map, key).is_some() {
            r.error(
                &join("probe", key),
                format!("set the top-level `{top}` instead (probe.{key} is only for one service)"),
            );
        }
    }
    let defaults = ProbeDefaults {
        kind: read_kind(r, get(map, "kind"), "probe.kind").unwrap_or(ProbeKind::Tcp),
        rise: r
            .integer(get(map, "rise"), "probe.rise", 1, 100)
            .unwrap_or(2) as u32,
        fall: r
            .integer(get(map, "fall"), "probe.fall", 1, 100)
            .unwrap_or(3) as u32,
        fast_interval: r
            .millis(get(map, "fast_interval"), "probe.fast_interval")
            .unwrap_or(Duration::from_millis(200)),
        jitter: r
            .float(get(map, "jitter"), "probe.jitter", 0.0, 1.0)
            .unwrap_or(0.1),
        send: r.text(get(map, "send"), "probe.send"),
        expect: read_expect(r, map, "probe"),
        half_open: r
            .boolean(get(map, "half_open"), "probe.half_open")
            .unwrap_or(false),
        exec: read_exec(r, get(map, "exec"), "probe.exec", timeout),
        http: read_http(r, get(map, "http"), "probe.http", &HttpCheck::default()),
    };
    let concurrency = r
        .integer(get(map, "concurrency"), "probe.concurrency", 1, 1 << 20)
        .unwrap_or(1024) as usize;
    (defaults, concurrency)
}

pub(super) fn service_probe(
    d: &ProbeDefaults,
    interval: Duration,
    timeout: Duration,
    port: u16,
) -> ProbeSettings {
    let check = match (d.kind, &d.exec) {
        (ProbeKind::Exec, Some(exec)) => Check::Exec(exec.clone()),
        (ProbeKind::Http, _) => Check::Http(d.http.clone()),
        (ProbeKind::Tcp, _) if port == 0 => Check::Static,
        _ => Check::Tcp(TcpCheck {
            send: d.send.clone(),
            expect: d.expect.clone(),
            half_open: d.half_open,
        }),
    };
    ProbeSettings {
        kind: d.kind,
        rise: d.rise,
        fall: d.fall,
        interval,
        timeout,
        fast_interval: d.fast_interval,
        jitter: d.jitter,
        check,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn read_service_probe(
    r: &mut Reader,
    value: Option<&Value>,
    path: &str,
    defaults: &ProbeDefaults,
    interval: Duration,
    timeout: Duration,
    port: u16,
) -> ProbeSettings {
    let Some(value) = value else {
        return finish_probe(
            r,
            path,
            service_probe(defaults, interval, timeout, port),
            port,
        );
    };
    let map = r.mapping(value, path, PROBE_KEYS);
    if get(map, "concurrency").is_some() {
        r.error(
            &join(path, "concurrency"),
            "concurrency is global: set it under the top-level `probe`",
        );
    }
    let interval = r
        .millis(get(map, "interval"), &join(path, "interval"))
        .unwrap_or(interval);
    let timeout = r
        .millis(get(map, "timeout"), &join(path, "timeout"))
        .unwrap_or(timeout);
    let expect = read_expect(r, map, path);
    let merged = ProbeDefaults {
        kind: read_kind(r, get(map, "kind"), &join(path, "kind")).unwrap_or(defaults.kind),
        rise: r
            .integer(get(map, "rise"), &join(path, "rise"), 1, 100)
            .map_or(defaults.rise, |v| v as u32),
        fall: r
            .integer(get(map, "fall"), &join(path, "fall"), 1, 100)
            .map_or(defaults.fall, |v| v as u32),
        fast_interval: r
            .millis(get(map, "fast_interval"), &join(path, "fast_interval"))
            .unwrap_or(defaults.fast_interval),
        jitter: r
            .float(get(map, "jitter"), &join(path, "jitter"), 0.0, 1.0)
            .unwrap_or(defaults.jitter),
        send: r
            .text(get(map, "send"), &join(path, "send"))
            .or_else(|| defaults.send.clone()),
        expect: expect.or_else(|| defaults.expect.clone()),
        half_open: r
            .boolean(get(map, "half_open"), &join(path, "half_open"))
            .unwrap_or(defaults.half_open),
        exec: read_exec(r, get(map, "exec"), &join(path, "exec"), timeout)
            .or_else(|| defaults.exec.clone()),
        http: read_http(r, get(map, "http"), &join(path, "http"), &defaults.http),
    };
    finish_probe(
        r,
        path,
        service_probe(&merged, interval, timeout, port),
        port,
    )
}

/// Cross-key checks of one service's probe settings.
pub(super) fn finish_probe(
    r: &mut Reader,
    path: &str,
    p: ProbeSettings,
    port: u16,
) -> ProbeSettings {
    if let Check::Tcp(tcp) = &p.check
        && tcp.half_open
        && (tcp.send.is_some() || tcp.expect.is_some())
    {
        r.warn(
            &join(path, "half_open"),
            "half_open applies to plain connect checks only: with send or expect the handshake \
             completes so that the conversation can happen",
        );
    }
    if p.kind == ProbeKind::Exec && !matches!(p.check, Check::Exec(_)) {
        r.error(
            &join(path, "exec.command"),
            "probe kind exec needs probe.exec.command",
        );
    }
    if port == 0 && matches!(p.check, Check::Http(_)) {
        r.error(
            &path.replace(".probe", ".port"),
            "an http probe needs the health-check port (1..=65535), not 0",
        );
    }
    if port == 0 && matches!(p.check, Check::Static) {
        r.warn(
            &path.replace(".probe", ".port"),
            "port 0 disables the TCP probe and no other probe is set: these targets are always \
             ready (static membership)",
        );
    }
    if p.fast_interval > p.interval {
        r.warn(
            &join(path, "fast_interval"),
            format!(
                "fast_interval ({} ms) is longer than interval ({} ms); targets in doubt are then \
                 re-probed no faster than usual",
                p.fast_interval.as_millis(),
                p.interval.as_millis()
            ),
        );
    }
    p
}

pub(super) const PROBE_KEYS: &[&str] = &[
    "kind",
    "rise",
    "fall",
    "interval",
    "timeout",
    "fast_interval",
    "jitter",
    "concurrency",
    "send",
    "expect",
    "expect_regex",
    "half_open",
    "http",
    "exec",
];

pub(super) const HTTP_KEYS: &[&str] = &["path", "expect_status", "tls", "host"];

pub(super) const EXEC_KEYS: &[&str] = &["command", "timeout"];
