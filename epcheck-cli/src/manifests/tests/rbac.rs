//! The Roles grant exactly what SPEC §10 allows, where it is needed.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{SEED, generate, load, of_kind, one, strings, wide_config};
use crate::config::{Config, LeaderBackend, Mode};
use crate::manifests::{NAME, NamespaceAccess, written_namespaces};

/// SPEC §10: what may be granted on each (apiGroup, resource): the verbs a rule restricted
/// to names may hold, and those a rule without names may hold (`list` cannot be named; with
/// `prune: true`, Endpoints objects of Services that left the config are read and updated).
fn allowed(
    group: &str,
    resource: &str,
    access: &NamespaceAccess,
) -> Option<(&'static [&'static str], &'static [&'static str])> {
    match (group, resource) {
        ("", "endpoints") if access.prune => Some((&["create"], &["get", "list", "update"])),
        ("", "endpoints") => Some((&["get", "update", "create"], &["list"])),
        ("", "services") => Some((&["get"], &[])),
        ("coordination.k8s.io", "leases") if access.views => Some((
            &["get", "update", "create"],
            &["get", "list", "create", "update", "delete"],
        )),
        ("coordination.k8s.io", "leases") => Some((&["get", "update", "create"], &[])),
        ("discovery.k8s.io", "endpointslices") => {
            Some((&[], &["get", "list", "create", "update", "delete"]))
        }
        _ => None,
    }
}

/// Walks every Role and checks each rule against [`allowed`] and the names `config` owns.
fn assert_least_privilege(config: &Config, docs: &[Value]) {
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(of_kind(docs, kind).is_empty(), "no {kind}");
    }
    let written = written_namespaces(config, NAME);
    for role in of_kind(docs, "Role") {
        let ns = role["metadata"]["namespace"].as_str().unwrap();
        let access = &written[ns];
        for rule in role["rules"].as_array().unwrap() {
            let groups = strings(&rule["apiGroups"]);
            let resources = strings(&rule["resources"]);
            assert_eq!(groups.len(), 1, "one apiGroup per rule: {rule}");
            assert_eq!(resources.len(), 1, "one resource per rule: {rule}");
            let (group, resource) = (groups.first().unwrap(), resources.first().unwrap());
            let (named_verbs, unnamed_verbs) = allowed(group, resource, access)
                .unwrap_or_else(|| panic!("{group}/{resource} is not allowed: {rule}"));
            assert!(rule.get("nonResourceURLs").is_none());
            let named = rule.get("resourceNames").is_some();
            let verbs = if named { named_verbs } else { unnamed_verbs };
            for verb in strings(&rule["verbs"]) {
                assert!(
                    verbs.contains(&verb.as_str()),
                    "{verb} on {resource} {}: {rule}",
                    if named { "with names" } else { "without names" }
                );
            }
            if named {
                let names = strings(&rule["resourceNames"]);
                let expected = match resource.as_str() {
                    "leases" => access.lease.iter().cloned().collect(),
                    _ => access.endpoints.clone(),
                };
                assert!(!names.is_empty(), "{resource} must be name-restricted");
                assert_eq!(names, expected, "{resource} names in {ns}");
            }
        }
    }
    let text = serde_json::to_string(docs).unwrap();
    assert!(!text.contains("\"*\""), "no wildcard anywhere");
}

#[test]
fn roles_grant_nothing_beyond_the_spec() {
    let seed = load(SEED);
    assert_least_privilege(&seed, &generate(&seed, SEED));
    let mut wide = wide_config();
    assert_least_privilege(&wide, &generate(&wide, SEED));
    wide.prune = true;
    assert_least_privilege(&wide, &generate(&wide, SEED));
}

#[test]
fn listing_is_granted_always_and_unnamed_reads_only_with_prune() {
    let mut config = load(SEED);
    let endpoint_rules = |config: &Config| -> Vec<(BTreeSet<String>, bool)> {
        let docs = generate(config, SEED);
        one(&docs, "Role")["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| strings(&r["resources"]).contains("endpoints"))
            .map(|r| (strings(&r["verbs"]), r.get("resourceNames").is_some()))
            .collect()
    };
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(
        endpoint_rules(&config),
        [
            (set(&["get", "update", "create"]), true),
            (set(&["list"]), false)
        ]
    );
    config.prune = true;
    assert_eq!(
        endpoint_rules(&config),
        [
            (set(&["get", "list", "update"]), false),
            (set(&["create"]), true)
        ]
    );
}

#[test]
fn the_seed_gets_one_role_for_its_three_endpoints() {
    let config = load(SEED);
    let docs = generate(&config, SEED);
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "default");
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(
        rules.len(),
        4,
        "endpoints (named, and list), services and the slice hand-over only: {rules:?}"
    );
    assert_eq!(
        strings(&rules[0]["verbs"]),
        BTreeSet::from(["get".into(), "update".into(), "create".into()])
    );
    let names = BTreeSet::from(["ceph".into(), "emqx".into(), "redis".into()]);
    assert_eq!(strings(&rules[0]["resourceNames"]), names);
    assert_eq!(strings(&rules[1]["verbs"]), BTreeSet::from(["list".into()]));
    assert!(rules[1].get("resourceNames").is_none());
    assert_eq!(strings(&rules[2]["resourceNames"]), names);
    assert!(of_kind(&docs, "Lease").is_empty());
}

#[test]
fn one_role_and_binding_per_written_namespace() {
    let config = wide_config();
    let docs = generate(&config, SEED);
    let namespaces = |kind| -> BTreeSet<String> {
        of_kind(&docs, kind)
            .iter()
            .map(|d| d["metadata"]["namespace"].as_str().unwrap().to_string())
            .collect()
    };
    let expected = BTreeSet::from(["cache".into(), "coord".into(), "default".into()]);
    assert_eq!(namespaces("Role"), expected);
    assert_eq!(namespaces("RoleBinding"), expected);
    assert_eq!(of_kind(&docs, "Role").len(), 3);
    for binding in of_kind(&docs, "RoleBinding") {
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], NAME);
        assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
        assert_eq!(binding["subjects"][0]["namespace"], NAME);
    }
}

fn rules_for<'a>(docs: &'a [Value], resource: &str) -> Vec<(&'a str, &'a Value)> {
    of_kind(docs, "Role")
        .into_iter()
        .flat_map(|role| {
            let ns = role["metadata"]["namespace"].as_str().unwrap();
            role["rules"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| strings(&r["resources"]).contains(resource))
                .map(move |r| (ns, r))
        })
        .collect()
}

#[test]
fn leases_only_with_leader_election_on_a_lease() {
    let mut config = load(SEED);
    assert!(rules_for(&generate(&config, SEED), "leases").is_empty());

    config.leader_election.enabled = true;
    let docs = generate(&config, SEED);
    let leases = rules_for(&docs, "leases");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].0, NAME, "the lease lives where the pod runs");
    assert_eq!(
        strings(&leases[0].1["resourceNames"]),
        BTreeSet::from(["epcheck".into()])
    );
    let lease = one(&docs, "Lease");
    assert_eq!(lease["metadata"]["namespace"], NAME);
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 2);

    // Consensus views: each replica's own Lease, listed by the leader.
    config.consensus.enabled = true;
    let docs = generate(&config, SEED);
    assert_least_privilege(&config, &docs);
    let leases = rules_for(&docs, "leases");
    assert_eq!(leases.len(), 2);
    let views = &leases[1].1;
    assert!(views.get("resourceNames").is_none());
    assert_eq!(
        strings(&views["verbs"]),
        BTreeSet::from(["create", "delete", "get", "list", "update"].map(String::from))
    );
    config.consensus.enabled = false;

    config.leader_election.backend = LeaderBackend::Redis;
    let docs = generate(&config, SEED);
    assert!(rules_for(&docs, "leases").is_empty());
    assert!(of_kind(&docs, "Lease").is_empty());
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 2);

    // The etcd lock needs no Lease, nor do its consensus views (they are etcd keys too).
    config.leader_election.backend = LeaderBackend::Etcd;
    for consensus in [false, true] {
        config.consensus.enabled = consensus;
        let docs = generate(&config, SEED);
        assert_least_privilege(&config, &docs);
        assert!(rules_for(&docs, "leases").is_empty());
        assert!(of_kind(&docs, "Lease").is_empty());
    }
    config.consensus.enabled = false;
}

#[test]
fn endpointslices_written_in_that_mode_and_handed_over_in_endpoints_mode() {
    let mut config = load(SEED);
    // Endpoints mode: list, update and delete (the hand-over), never create, and only where
    // a service is.
    let docs = generate(&config, SEED);
    let handover = rules_for(&docs, "endpointslices");
    let service_namespaces: BTreeSet<String> = config
        .services
        .iter()
        .map(|s| s.namespace.clone())
        .collect();
    let granted: BTreeSet<String> = handover.iter().map(|(ns, _)| ns.to_string()).collect();
    assert_eq!(granted, service_namespaces);
    for (_, rule) in &handover {
        assert_eq!(
            strings(&rule["verbs"]),
            BTreeSet::from(["list".into(), "update".into(), "delete".into()])
        );
    }
    config.mode = Mode::EndpointSlice;
    let docs = generate(&config, SEED);
    let slices = rules_for(&docs, "endpointslices");
    assert_eq!(slices.len(), 1);
    assert_eq!(
        strings(&slices[0].1["apiGroups"]),
        BTreeSet::from(["discovery.k8s.io".into()])
    );
}

#[test]
fn another_instance_gets_roles_of_its_own_name() {
    let mut config = load(SEED);
    config.instance = "team-a".into();
    let docs = generate(&config, SEED);
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["name"], "epcheck-team-a");
    let binding = one(&docs, "RoleBinding");
    assert_eq!(binding["metadata"]["name"], "epcheck-team-a");
    assert_eq!(binding["roleRef"]["name"], "epcheck-team-a");
    config.instance = "epcheck".into();
    assert_eq!(
        one(&generate(&config, SEED), "Role")["metadata"]["name"],
        NAME
    );
}
