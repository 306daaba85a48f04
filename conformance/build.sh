#!/usr/bin/env bash
# Builds the conformance control plane (test support, not product) into
# target/conformance/kube-conformance. The Go build cache (go env GOCACHE) makes rebuilds fast:
# the first build takes about 10 minutes on 2 cores, a rebuild with a warm cache seconds.
#
# Another Kubernetes release: KUBE_VERSION=v1.36.4 bash conformance/build.sh (rewrites go.mod's
# k8s.io/kubernetes requirement and the replace lines of the staging modules in a scratch copy).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../target/conformance/kube-conformance}"
version="${KUBE_VERSION:-}"
src="$here"
if [ -n "$version" ]; then
  # Build another release from a scratch copy so the committed go.mod/go.sum stay pinned.
  src="$(mktemp -d)"
  trap 'rm -rf "$src"' EXIT
  cp -r "$here/go.mod" "$here/go.sum" "$here/cmd" "$src/"
  staging="v0.${version#v1.}"
  sed -i -E "s#^(\tk8s\.io/[a-z-]+ => k8s\.io/[a-z-]+) v0\.[0-9]+\.[0-9]+\$#\1 $staging#" "$src/go.mod"
  (cd "$src" && go get "k8s.io/kubernetes@$version" && go mod tidy)
else
  version="$(cd "$src" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
fi
minor="${version#v1.}"
minor="${minor%%.*}"
mkdir -p "$(dirname "$out")"
cd "$src"
go build -trimpath -o "$out" \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
  ./cmd/kube-conformance
echo "built $out ($version)"
