//! What a reconcile changes in a Service's EndpointSlices, slice by slice, with a short
//! one-line summary for logs and `epcheck once` (`create redis-epcheck-ipv4-1 (IPv4): +50;
//! update redis-epcheck-ipv4-0 (IPv4): 198.51.100.3→not-ready; delete …`).

use std::fmt;

/// What a write does to one slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SliceWriteKind {
    /// `POST` a new slice.
    Create,
    /// `PUT` a changed slice with its `resourceVersion`.
    Update,
    /// `DELETE` a surplus slice.
    Delete,
}

impl SliceWriteKind {
    /// `create`, `update` or `delete`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// What changes in one slice. IP lists are sorted (IPv4 first, in address order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceChange {
    /// The slice's name.
    pub name: String,
    /// Create, update or delete.
    pub kind: SliceWriteKind,
    /// The slice's `addressType`.
    pub address_type: String,
    /// Endpoints added as ready.
    pub added_ready: Vec<String>,
    /// Endpoints added as not ready.
    pub added_not_ready: Vec<String>,
    /// Endpoints removed from this slice (for a delete: all of them).
    pub removed: Vec<String>,
    /// Endpoints kept whose conditions change to ready.
    pub now_ready: Vec<String>,
    /// Endpoints kept whose conditions change to not ready (or whose details differ).
    pub now_not_ready: Vec<String>,
    /// The set of ports changes.
    pub ports_changed: bool,
    /// epcheck's labels or the owner reference are missing or stale on the live slice.
    pub metadata_changed: bool,
}

impl SliceChange {
    pub(crate) fn new(name: &str, kind: SliceWriteKind, address_type: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            address_type: address_type.to_owned(),
            added_ready: Vec::new(),
            added_not_ready: Vec::new(),
            removed: Vec::new(),
            now_ready: Vec::new(),
            now_not_ready: Vec::new(),
            ports_changed: false,
            metadata_changed: false,
        }
    }

    /// Whether an update changes nothing (creates and deletes are always changes).
    pub fn is_empty(&self) -> bool {
        self.kind == SliceWriteKind::Update
            && self.added_ready.is_empty()
            && self.added_not_ready.is_empty()
            && self.removed.is_empty()
            && self.now_ready.is_empty()
            && self.now_not_ready.is_empty()
            && !self.ports_changed
            && !self.metadata_changed
    }
}

impl fmt::Display for SliceChange {
    /// `update redis-epcheck-ipv4-0: +198.51.100.7 -198.51.100.9 198.51.100.3→not-ready`;
    /// more than six endpoint changes are counted (`+100 -2 ~3`) to keep the line short.
    ///
    /// Names and addresses come from the slices the ApiServer returned, so control characters
    /// are escaped ([`escape_control`](crate::escape_control)).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = format!(
            "{} {} ({})",
            self.kind.as_str(),
            self.name,
            self.address_type
        );
        f.write_str(&crate::escape_control(&head))?;
        if self.kind == SliceWriteKind::Delete {
            return Ok(());
        }
        let changed = self.now_ready.len() + self.now_not_ready.len();
        let total =
            self.added_ready.len() + self.added_not_ready.len() + self.removed.len() + changed;
        let mut parts: Vec<String> = Vec::new();
        if total > 6 {
            let added = self.added_ready.len() + self.added_not_ready.len();
            for (sign, n) in [("+", added), ("-", self.removed.len()), ("~", changed)] {
                if n > 0 {
                    parts.push(format!("{sign}{n}"));
                }
            }
        } else {
            parts.extend(self.added_ready.iter().map(|ip| format!("+{ip}")));
            parts.extend(
                self.added_not_ready
                    .iter()
                    .map(|ip| format!("+{ip}(not-ready)")),
            );
            parts.extend(self.removed.iter().map(|ip| format!("-{ip}")));
            parts.extend(self.now_ready.iter().map(|ip| format!("{ip}→ready")));
            parts.extend(
                self.now_not_ready
                    .iter()
                    .map(|ip| format!("{ip}→not-ready")),
            );
        }
        if self.ports_changed {
            parts.push("ports".to_owned());
        }
        if self.metadata_changed {
            parts.push("labels/owner".to_owned());
        }
        if !parts.is_empty() {
            write!(f, ": {}", crate::escape_control(&parts.join(" ")))?;
        }
        Ok(())
    }
}

/// Every slice change of a reconcile, in write order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlicesDiff {
    /// The changes, creates first, then updates, then deletes.
    pub changes: Vec<SliceChange>,
}

impl SlicesDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes are of this kind.
    pub fn count(&self, kind: SliceWriteKind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }
}

impl fmt::Display for SlicesDiff {
    /// The changes joined with `; `, or `no change`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return f.write_str("no change");
        }
        let parts: Vec<String> = self.changes.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: SliceWriteKind) -> SliceChange {
        SliceChange::new("web-epcheck-ipv6-0", kind, "IPv6")
    }

    #[test]
    fn short_lines() {
        let mut c = change(SliceWriteKind::Update);
        assert!(c.is_empty());
        assert!(!change(SliceWriteKind::Delete).is_empty());
        c.added_ready = vec!["2001:db8::1".into()];
        c.added_not_ready = vec!["2001:db8::2".into()];
        c.removed = vec!["2001:db8::3".into()];
        c.now_ready = vec!["2001:db8::4".into()];
        c.now_not_ready = vec!["2001:db8::5".into()];
        c.ports_changed = true;
        assert_eq!(
            c.to_string(),
            "update web-epcheck-ipv6-0 (IPv6): +2001:db8::1 +2001:db8::2(not-ready) \
             -2001:db8::3 2001:db8::4→ready 2001:db8::5→not-ready ports"
        );
        c.removed = (10..20).map(|n| format!("2001:db8::{n}")).collect();
        c.metadata_changed = true;
        assert_eq!(
            c.to_string(),
            "update web-epcheck-ipv6-0 (IPv6): +2 -10 ~2 ports labels/owner"
        );
        let mut d = SlicesDiff::default();
        assert_eq!(d.to_string(), "no change");
        d.changes = vec![c, change(SliceWriteKind::Delete)];
        assert_eq!(d.count(SliceWriteKind::Delete), 1);
        assert!(
            d.to_string()
                .ends_with("; delete web-epcheck-ipv6-0 (IPv6)")
        );
    }
}
