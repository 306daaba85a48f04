//! `service_info`, `service_healthcheck_list` and `endpoint_template`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use k8s_endpoints::{
    EndpointPort, Endpoints, NotReadyPolicy, Renderer, validate_name, validate_namespace,
};
use serde_yaml::{Mapping, Value};

use super::probe::{ProbeDefaults, read_service_probe};
use super::reader::{Reader, get, join};
use super::validate::read_not_ready;
use super::{ServiceConfig, TargetConfig};

pub(super) fn read_template(r: &mut Reader, value: Option<&Value>) -> Option<Endpoints> {
    let path = "endpoint_template";
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Some(default_template());
    };
    let template: Endpoints = match serde_yaml::from_value(value.clone()) {
        Ok(t) => t,
        Err(e) => {
            r.error(path, format!("not an Endpoints object: {e}"));
            return None;
        }
    };
    for (field, got, want) in [
        ("kind", &template.kind, "Endpoints"),
        ("apiVersion", &template.api_version, "v1"),
    ] {
        if got != want {
            let found = if got.is_empty() {
                "nothing".to_string()
            } else {
                format!("{got:?}")
            };
            r.error(
                &join(path, field),
                format!("expected `{field}: {want}`, found {found}"),
            );
        }
    }
    for (i, subset) in template.subsets.iter().enumerate() {
        for (j, port) in subset.ports.iter().enumerate() {
            check_port(r, port, &format!("{path}.subsets[{i}].ports[{j}]"));
        }
    }
    Some(template)
}

pub(super) fn default_template() -> Endpoints {
    Endpoints {
        api_version: "v1".to_string(),
        kind: "Endpoints".to_string(),
        ..Endpoints::default()
    }
}

pub(super) fn check_port(r: &mut Reader, port: &EndpointPort, path: &str) {
    if !(1..=65535).contains(&port.port) {
        r.error(
            &join(path, "port"),
            format!("{} is out of range; expected 1..=65535", port.port),
        );
    }
    if let Some(proto) = &port.protocol
        && !["TCP", "UDP", "SCTP"].contains(&proto.as_str())
    {
        r.error(
            &join(path, "protocol"),
            format!("unsupported protocol {proto:?}; expected TCP, UDP or SCTP"),
        );
    }
}

pub(super) fn read_ports(
    r: &mut Reader,
    value: Option<&Value>,
    path: &str,
) -> Option<Vec<EndpointPort>> {
    let items = r.sequence(value?, path)?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let map = r.mapping(item, &p, PORT_KEYS);
        let Some(port) = r.integer(get(map, "port"), &join(&p, "port"), 1, 65535) else {
            if get(map, "port").is_none() {
                r.error(
                    &join(&p, "port"),
                    "missing; expected a serving port 1..=65535",
                );
            }
            continue;
        };
        let port = EndpointPort {
            name: r.text(get(map, "name"), &join(&p, "name")),
            port: port as i32,
            protocol: r.text(get(map, "protocol"), &join(&p, "protocol")),
            app_protocol: r.text(get(map, "appProtocol"), &join(&p, "appProtocol")),
            ..EndpointPort::default()
        };
        check_port(r, &port, &p);
        out.push(port);
    }
    if out.is_empty() {
        r.error(
            path,
            "an empty list; list the serving ports or remove the key",
        );
    }
    Some(out)
}

pub(super) struct Info {
    namespace: String,
    name: String,
}

pub(super) fn read_info(r: &mut Reader, key: &str, value: &Value) -> Option<Info> {
    let path = format!("service_info.{key}");
    let map = r.mapping(value, &path, SERVICE_INFO_KEYS)?;
    let field = |r: &mut Reader, k: &str, check: fn(&str) -> Result<(), String>| {
        let p = join(&path, k);
        match r.text(map.get(k), &p) {
            None => {
                r.error(
                    &p,
                    format!("missing; the {k} of the Endpoints object this service owns"),
                );
                None
            }
            Some(v) => match check(&v) {
                Ok(()) => Some(v),
                Err(e) => {
                    r.error(&p, e);
                    None
                }
            },
        }
    };
    let namespace = field(r, "namespace", validate_namespace);
    let name = field(r, "name", validate_name);
    Some(Info {
        namespace: namespace?,
        name: name?,
    })
}

pub(super) fn read_services(
    r: &mut Reader,
    top: Option<&Mapping>,
    defaults: &ProbeDefaults,
    interval: Duration,
    timeout: Duration,
    not_ready: NotReadyPolicy,
    template: Option<&Endpoints>,
) -> Vec<ServiceConfig> {
    let infos: BTreeMap<String, &Value> = get(top, "service_info")
        .map(|v| r.named_entries(v, "service_info"))
        .unwrap_or_default()
        .into_iter()
        .collect();
    let checks: BTreeMap<String, &Value> = get(top, "service_healthcheck_list")
        .map(|v| r.named_entries(v, "service_healthcheck_list"))
        .unwrap_or_default()
        .into_iter()
        .collect();
    for key in infos.keys().filter(|k| !checks.contains_key(*k)) {
        r.error(
            &format!("service_info.{key}"),
            format!("service {key:?} has no entry in service_healthcheck_list; add its port and iplist there"),
        );
    }
    for key in checks.keys().filter(|k| !infos.contains_key(*k)) {
        r.error(
            &format!("service_healthcheck_list.{key}"),
            format!(
                "service {key:?} has no entry in service_info; add its namespace and name there"
            ),
        );
    }
    if infos.is_empty() && checks.is_empty() {
        r.warn(
            "service_info",
            "no services configured: epcheck has nothing to probe",
        );
    }
    let template_has_ports =
        template.is_some_and(|t| t.subsets.iter().any(|s| !s.ports.is_empty()));
    let mut owners: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut services = Vec::new();
    for (key, check_value) in &checks {
        let info = infos.get(key).and_then(|v| read_info(r, key, v));
        let path = format!("service_healthcheck_list.{key}");
        let Some(map) = r.mapping(check_value, &path, HEALTHCHECK_KEYS) else {
            continue;
        };
        let port_path = join(&path, "port");
        let port = match map.get("port") {
            None | Some(Value::Null) => {
                r.error(
                    &port_path,
                    "missing; the health-check port (1..=65535, or 0 for no TCP probe)",
                );
                None
            }
            v => r.integer(v, &port_path, 0, 65535).map(|p| p as u16),
        };
        let targets = read_targets(r, map.get("iplist"), &join(&path, "iplist"));
        let ports = read_ports(r, map.get("ports"), &join(&path, "ports"));
        if ports.is_none() && !template_has_ports && template.is_some() {
            r.error(
                &join(&path, "ports"),
                "no serving port: set endpoint_template.subsets[].ports or this service's ports",
            );
        }
        let not_ready =
            read_not_ready(r, map.get("not_ready"), &join(&path, "not_ready")).unwrap_or(not_ready);
        let probe = read_service_probe(
            r,
            map.get("probe"),
            &join(&path, "probe"),
            defaults,
            interval,
            timeout,
            port.unwrap_or(1),
        );
        let (Some(info), Some(port)) = (info, port) else {
            continue;
        };
        if let Some(t) = template
            && let Err(e) = Renderer::new(t, &info.namespace, &info.name, ports.clone(), not_ready)
        {
            r.error(&path, e.to_string());
        }
        let owner = (info.namespace.clone(), info.name.clone());
        if let Some(other) = owners.insert(owner, key.clone()) {
            r.error(
                &format!("service_info.{key}"),
                format!(
                    "{}/{} is already owned by service {other:?}; two services cannot write one Endpoints object",
                    info.namespace, info.name
                ),
            );
        }
        services.push(ServiceConfig {
            key: key.clone(),
            namespace: info.namespace,
            name: info.name,
            port,
            targets,
            probe,
            ports,
            not_ready,
        });
    }
    services
}

pub(super) fn read_targets(r: &mut Reader, value: Option<&Value>, path: &str) -> Vec<TargetConfig> {
    let Some(value) = value else {
        r.error(
            path,
            "missing; list the backends as `- name: node-01` / `ip: 10.0.0.1`",
        );
        return Vec::new();
    };
    let Some(items) = r.sequence(value, path) else {
        return Vec::new();
    };
    let mut out: Vec<TargetConfig> = Vec::new();
    let mut names = BTreeSet::new();
    let mut ips = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(map) = r.mapping(item, &p, NODE_KEYS) else {
            continue;
        };
        let name = r.text(map.get("name"), &join(&p, "name"));
        let ip_text = r.text(map.get("ip"), &join(&p, "ip"));
        let name = match name {
            Some(n) if !n.trim().is_empty() => {
                if !names.insert(n.clone()) {
                    r.error(
                        &join(&p, "name"),
                        format!("duplicate node name {n:?}; names must be unique within a service"),
                    );
                }
                Some(n)
            }
            _ => {
                r.error(
                    &join(&p, "name"),
                    "missing; a node name identifies it in logs and alerts",
                );
                None
            }
        };
        let ip = match ip_text {
            None => {
                r.error(
                    &join(&p, "ip"),
                    "missing; the backend's IPv4 or IPv6 address",
                );
                None
            }
            Some(t) => {
                match t.trim().parse::<IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        r.error(
                        &join(&p, "ip"),
                        format!("{t:?} is not an IP address; expected IPv4 (10.0.0.1) or IPv6 (fd00::1)"),
                    );
                        None
                    }
                }
            }
        };
        if let Some(ip) = ip {
            if let Some(reason) = special_ip(ip) {
                r.warn_kind(
                    "addresses the ApiServer rejects in Endpoints",
                    &join(&p, "ip"),
                    format!("{ip} is {reason}: the ApiServer rejects such addresses in Endpoints"),
                );
            }
            if let Some(first) = ips.insert(ip, i) {
                r.warn_kind(
                    "addresses listed twice in one service",
                    &join(&p, "ip"),
                    format!(
                        "{ip} is also listed at {path}[{first}]; the Endpoints object lists it once"
                    ),
                );
            }
        }
        if let (Some(name), Some(ip)) = (name, ip) {
            out.push(TargetConfig { name, ip });
        }
    }
    out
}

/// Why the ApiServer would reject `ip` in an Endpoints object, if it would.
pub fn special_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_unspecified() {
                Some("unspecified")
            } else if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if o[0] == 224 && o[1] == 0 && o[2] == 0 {
                Some("link-local multicast")
            } else if v4.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

pub(super) const SERVICE_INFO_KEYS: &[&str] = &["namespace", "name"];

pub(super) const HEALTHCHECK_KEYS: &[&str] = &["port", "iplist", "probe", "ports", "not_ready"];

pub(super) const NODE_KEYS: &[&str] = &["name", "ip"];

pub(super) const PORT_KEYS: &[&str] = &["name", "port", "protocol", "appProtocol"];
