//! What gets probed: one backend address of one service.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::ser::{Serialize, SerializeStruct, Serializer};

/// One backend of one service: the `iplist[]` entry of `service_healthcheck_list.<service>`
/// together with the service's health-check port.
///
/// Cloning is cheap (two reference-count increments), so schedulers can hand targets to tasks
/// freely. Two targets are equal when all four fields are equal.
///
/// Its [`Display`](fmt::Display) form is `service/name ip:port`, with IPv6 addresses in brackets
/// (`redis/node-1 [2001:db8::1]:6379`), which is what logs and error messages use.
///
/// ```
/// use probe_core::Target;
///
/// let t = Target::new("redis", "node-1", "127.0.0.1".parse().unwrap(), 6379);
/// assert_eq!(t.to_string(), "redis/node-1 127.0.0.1:6379");
/// assert_eq!(t.addr().port(), 6379);
///
/// let v6 = Target::new("redis", "node-2", "::1".parse().unwrap(), 6379);
/// assert_eq!(v6.to_string(), "redis/node-2 [::1]:6379");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The service key (`service_healthcheck_list.<service>`).
    pub service: Arc<str>,
    /// The backend's name, unique within its service (`iplist[].name`).
    pub name: Arc<str>,
    /// The backend's address (`iplist[].ip`), IPv4 or IPv6.
    pub ip: IpAddr,
    /// The health-check port (`service_healthcheck_list.<service>.port`); `0` means "no TCP
    /// probe" (see [`Check::Static`](crate::Check::Static)).
    pub port: u16,
}

impl Target {
    /// Makes a target. `service` and `name` may be `&str`, `String` or an existing `Arc<str>`
    /// (pass an `Arc` to share one allocation among all targets of a service).
    pub fn new(
        service: impl Into<Arc<str>>,
        name: impl Into<Arc<str>>,
        ip: IpAddr,
        port: u16,
    ) -> Self {
        Self {
            service: service.into(),
            name: name.into(),
            ip,
            port,
        }
    }

    /// The socket address a TCP probe connects to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.service, self.name, self.addr())
    }
}

/// Serialized as `{"service": .., "name": .., "ip": "..", "port": ..}` for JSON output.
impl Serialize for Target {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Target", 4)?;
        s.serialize_field("service", &*self.service)?;
        s.serialize_field("name", &*self.name)?;
        s.serialize_field("ip", &self.ip)?;
        s.serialize_field("port", &self.port)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn display_brackets_ipv6_only() {
        let v4 = Target::new("svc", "a", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80);
        assert_eq!(v4.to_string(), "svc/a 10.0.0.1:80");
        let v6 = Target::new("svc", "b", IpAddr::V6(Ipv6Addr::LOCALHOST), 0);
        assert_eq!(v6.to_string(), "svc/b [::1]:0");
    }

    #[test]
    fn clones_share_names() {
        let service: Arc<str> = Arc::from("svc");
        let t = Target::new(service.clone(), "a", IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
        let c = t.clone();
        assert!(Arc::ptr_eq(&t.service, &service));
        assert!(Arc::ptr_eq(&t.name, &c.name));
        assert_eq!(t, c);
    }

    #[test]
    fn serializes_plain_fields() {
        let t = Target::new("redis", "node-1", "::1".parse().unwrap(), 6379);
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({"service": "redis", "name": "node-1", "ip": "::1", "port": 6379})
        );
    }

    #[test]
    fn addr_combines_ip_and_port() {
        let t = Target::new("s", "n", "::1".parse().unwrap(), 6379);
        assert_eq!(t.addr(), "[::1]:6379".parse().unwrap());
    }
}
