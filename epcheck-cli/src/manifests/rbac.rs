//! The Namespace, ServiceAccount, Roles, RoleBindings and Lease: who epcheck is and the least
//! it may do (SPEC §10; why nothing wider is in the [module docs](super)).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{NAME, labels};
use crate::config::{Config, LeaderBackend, Mode};

/// What epcheck writes in one namespace, from which its Role is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceAccess {
    /// Names of the Endpoints objects (and of their Services) that epcheck owns there.
    pub endpoints: BTreeSet<String>,
    /// The Lease used for leader election, when it is in this namespace.
    pub lease: Option<String>,
    /// `consensus.enabled` with Leases: every replica publishes its view in a Lease of its own
    /// here, named after the replica, and the leader lists them.
    pub views: bool,
    /// EndpointSlices are written here (`mode: endpointslice`).
    pub endpoint_slices: bool,
    /// EndpointSlices that epcheck wrote here in `mode: endpointslice` may be left to hand
    /// over (`mode: endpoints`): `list`, `update` and `delete` on them, no `create`.
    pub slice_handover: bool,
    /// `prune: true`: Endpoints objects of Services that left the config are handed back, so
    /// `get` and `update` on endpoints cannot be restricted to the configured names.
    pub prune: bool,
}

/// Every namespace epcheck writes to, with what it writes there: the services' namespaces,
/// plus the Lease's namespace (`leader_election.namespace`, else `own_namespace`, where the pod
/// runs) when leader election uses a Lease.
pub fn written_namespaces(
    config: &Config,
    own_namespace: &str,
) -> BTreeMap<String, NamespaceAccess> {
    let mut out: BTreeMap<String, NamespaceAccess> = BTreeMap::new();
    let slices = config.mode == Mode::EndpointSlice;
    for svc in &config.services {
        let access = out.entry(svc.namespace.clone()).or_default();
        access.endpoints.insert(svc.name.clone());
        access.endpoint_slices = slices;
        access.slice_handover = !slices;
        access.prune = config.prune;
    }
    if let Some(ns) = lease_namespace(config, own_namespace) {
        let access = out.entry(ns).or_default();
        access.lease = Some(config.leader_election.name.clone());
        access.views = config.consensus.enabled;
    }
    out
}

/// The Lease's namespace, when leader election uses a Lease.
fn lease_namespace(config: &Config, own_namespace: &str) -> Option<String> {
    let le = &config.leader_election;
    (le.enabled && le.backend == LeaderBackend::Lease).then(|| {
        le.namespace
            .clone()
            .unwrap_or_else(|| own_namespace.to_string())
    })
}

/// The Namespace epcheck runs in, held to the `restricted` Pod Security Standard.
pub(super) fn namespace(name: &str) -> Value {
    let mut labels = labels();
    if let Some(map) = labels.as_object_mut() {
        for mode in ["enforce", "audit", "warn"] {
            map.insert(
                format!("pod-security.kubernetes.io/{mode}"),
                json!("restricted"),
            );
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": labels },
    })
}

/// The ServiceAccount; its token is mounted where epcheck looks when `token_file` is empty.
pub(super) fn service_account(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": { "name": NAME, "namespace": namespace, "labels": labels() },
        "automountServiceAccountToken": true,
    })
}

/// One RBAC rule.
fn rule(group: &str, resource: &str, verbs: &[&str], names: Option<&BTreeSet<String>>) -> Value {
    let mut rule = json!({
        "apiGroups": [group],
        "resources": [resource],
        "verbs": verbs,
    });
    if let (Some(names), Some(map)) = (names, rule.as_object_mut()) {
        map.insert("resourceNames".to_string(), json!(names));
    }
    rule
}

/// The name of the Role and RoleBinding in each written namespace: `epcheck` for the default
/// instance, `epcheck-<instance>` for another, so that two deployments writing to one
/// namespace do not replace each other's Role.
pub fn role_name(instance: &str) -> String {
    if instance == k8s_endpoints::DEFAULT_INSTANCE {
        NAME.to_owned()
    } else {
        format!("{NAME}-{instance}")
    }
}

/// The Role `name` for namespace `ns`.
pub(super) fn role(ns: &str, name: &str, access: &NamespaceAccess) -> Value {
    let mut rules = Vec::new();
    if !access.endpoints.is_empty() {
        // `create` is named: epcheck creates with a PUT to the object's own URL. `list` (with
        // a label selector) finds the objects of this instance whose Service left the config;
        // it cannot be name-restricted. Handing those back (`prune: true`) reads and updates
        // objects whose names the config no longer holds.
        if access.prune {
            rules.push(rule("", "endpoints", &["get", "list", "update"], None));
            rules.push(rule("", "endpoints", &["create"], Some(&access.endpoints)));
        } else {
            rules.push(rule(
                "",
                "endpoints",
                &["get", "update", "create"],
                Some(&access.endpoints),
            ));
            rules.push(rule("", "endpoints", &["list"], None));
        }
        rules.push(rule("", "services", &["get"], Some(&access.endpoints)));
    }
    if access.endpoint_slices {
        // Slice names are generated by the ApiServer, so these cannot be name-restricted.
        rules.push(rule(
            "discovery.k8s.io",
            "endpointslices",
            &["get", "list", "create", "update", "delete"],
            None,
        ));
    }
    if access.slice_handover && !access.endpoint_slices {
        // Back from mode: endpointslice, epcheck keeps its old slices current until the
        // mirroring controller's show the healthy set, then deletes them. It never creates
        // one in this mode; list cannot be name-restricted, and the names of the slices it
        // may have left are not bounded by the config, so these are not either.
        rules.push(rule(
            "discovery.k8s.io",
            "endpointslices",
            &["list", "update", "delete"],
            None,
        ));
    }
    if let Some(lease) = &access.lease {
        let names = BTreeSet::from([lease.clone()]);
        rules.push(rule(
            "coordination.k8s.io",
            "leases",
            &["get", "update", "create"],
            Some(&names),
        ));
    }
    if access.views {
        // A view Lease is named after its replica (the pod), unknown in advance, and the
        // leader lists them by label, deletes ones left by replicas that died, and each
        // replica deletes its own at shutdown: none of these can be name-restricted.
        rules.push(rule(
            "coordination.k8s.io",
            "leases",
            &["get", "list", "create", "update", "delete"],
            None,
        ));
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": { "name": name, "namespace": ns, "labels": labels() },
        "rules": rules,
    })
}

/// Binds the Role `name` in `ns` to the ServiceAccount in `own_namespace`.
pub(super) fn role_binding(ns: &str, name: &str, own_namespace: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": { "name": name, "namespace": ns, "labels": labels() },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": name,
        },
        "subjects": [{
            "kind": "ServiceAccount",
            "name": NAME,
            "namespace": own_namespace,
        }],
    })
}

/// The Lease for leader election, created empty so that replicas only ever `get` and `update`
/// it: a `POST` create could not be restricted to the Lease's name.
pub(super) fn lease(config: &Config, own_namespace: &str) -> Option<Value> {
    let ns = lease_namespace(config, own_namespace)?;
    Some(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": config.leader_election.name,
            "namespace": ns,
            "labels": labels(),
        },
        "spec": {},
    }))
}
