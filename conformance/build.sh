#!/usr/bin/env bash
# Builds the conformance control plane (test support, not product) into
# target/conformance/kube-conformance. The Go build cache (go env GOCACHE) makes rebuilds fast:
# the first build takes about 10 minutes on 2 cores, a rebuild with a warm cache seconds.
#
# Another Kubernetes release: KUBE_VERSION=v1.36.3 bash conformance/build.sh /tmp/kc builds it
# in a scratch module whose requirements come from that release's own go.mod.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../target/conformance/kube-conformance}"
version="${KUBE_VERSION:-}"
src="$here"
if [ -n "$version" ]; then
  # Another release, from a scratch module so the committed go.mod/go.sum stay pinned. Its
  # requirements come from that release alone: the staging modules it replaces (the list
  # changes between releases) at the matching v0.x, and the etcd server it pins.
  src="$(mktemp -d)"
  trap 'rm -rf "$src"' EXIT
  kube_mod="$(cd "$src" && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
  staging="v0.${version#v1.}"
  etcd="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$kube_mod")"
  {
    echo "module github.com/epcheck/epcheck/conformance"
    echo
    echo "go $(awk '$1 == "go" {print $2; exit}' "$here/go.mod")"
    echo
    echo "replace ("
    awk -v v="$staging" '$2 == "=>" && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " " v}' "$kube_mod"
    echo ")"
  } > "$src/go.mod"
  cp -r "$here/cmd" "$src/"
  (cd "$src" && go get "k8s.io/kubernetes@$version" "go.etcd.io/etcd/server/v3@$etcd" && go mod tidy)
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
