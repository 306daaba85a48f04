#!/usr/bin/env bash
# Validates Kubernetes YAML against the Kubernetes OpenAPI schemas (SPEC §10), strictly:
# unknown fields are errors. Uses the kubernetes-validate PyPI package (schemas bundled, works
# offline once installed), installing it with pip if it is missing.
#
#   .ci/kube-validate.sh FILE|DIR...      a DIR means every *.yaml / *.yml directly in it
#   KUBE_VERSIONS="1.30 1.37" .ci/kube-validate.sh ...   (default: the newest bundled schema)
#
# Documents without apiVersion/kind (an epcheck config.yaml, a Prometheus rules file) and
# kustomization files are skipped with a note. Custom resources (ServiceMonitor,
# PrometheusRule, KuberhealthyCheck) have no bundled schema: they get a structural check
# (metadata.name, a spec mapping) and a note. Exits non-zero on any failure.
set -euo pipefail

if [ $# -eq 0 ]; then
    echo "usage: $0 FILE|DIR..." >&2
    exit 2
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import kubernetes_validate' 2>/dev/null; then
    echo "installing kubernetes-validate with pip" >&2
    "$PYTHON" -m pip install --quiet kubernetes-validate \
        || "$PYTHON" -m pip install --quiet --user kubernetes-validate \
        || "$PYTHON" -m pip install --quiet --break-system-packages kubernetes-validate
fi

exec "$PYTHON" - "$@" <<'PY'
import os
import sys

import kubernetes_validate
import yaml
from kubernetes_validate import utils

CUSTOM_GROUPS = ("monitoring.coreos.com/", "comcast.github.io/", "kuberhealthy.github.io/")

versions = os.environ.get("KUBE_VERSIONS", "").split() or [utils.latest_version()]


def files(args):
    for arg in args:
        if os.path.isdir(arg):
            for name in sorted(os.listdir(arg)):
                path = os.path.join(arg, name)
                if os.path.isfile(path) and name.endswith((".yaml", ".yml")):
                    yield path
        else:
            yield arg


def name_of(doc):
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return "%s %s%s" % (doc.get("kind"), ns + "/" if ns else "", meta.get("name"))


failures = 0
checked = 0
for path in files(sys.argv[1:]):
    try:
        with open(path, encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
    except (OSError, yaml.YAMLError) as e:
        print("FAIL %s: cannot read it as YAML: %s" % (path, e))
        failures += 1
        continue
    for i, doc in enumerate(docs, 1):
        where = "%s#%d" % (path, i)
        if doc is None:
            continue
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            print("SKIP %s: not a Kubernetes object (no apiVersion/kind)" % where)
            continue
        if doc["kind"] == "Kustomization":
            print("SKIP %s: a kustomization, not an object" % where)
            continue
        if str(doc["apiVersion"]).startswith(CUSTOM_GROUPS):
            meta = doc.get("metadata")
            if not isinstance(meta, dict) or not meta.get("name"):
                print("FAIL %s: %s has no metadata.name" % (where, doc["kind"]))
                failures += 1
            elif not isinstance(doc.get("spec"), dict):
                print("FAIL %s: %s has no spec mapping" % (where, name_of(doc)))
                failures += 1
            else:
                print("NOTE %s: %s is a custom resource: no bundled schema, structure checked"
                      % (where, name_of(doc)))
                checked += 1
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                print("ok   %s: %s (Kubernetes %s, strict)" % (where, name_of(doc), version))
                checked += 1
            except utils.ValidationError as e:
                loc = ".".join(str(p) for p in e.path)
                print("FAIL %s: %s (Kubernetes %s): %s: %s"
                      % (where, name_of(doc), version, loc or "(top)", e.message))
                failures += 1
            except (utils.SchemaNotFoundError, utils.InvalidSchemaError) as e:
                print("FAIL %s: %s: no schema: %s" % (where, name_of(doc), e))
                failures += 1
            except utils.VersionNotSupportedError:
                print("FAIL Kubernetes %s is not in this kubernetes-validate's schemas" % version)
                sys.exit(2)

print("%d checked, %d failed" % (checked, failures))
sys.exit(1 if failures else 0)
PY
