#!/usr/bin/env bash
# Checks the Prometheus alert rules and runs their unit tests (SPEC §8.1).
# Called by .ci/run; runs from any directory; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found. On Debian/Ubuntu: apt-get update && apt-get install -y prometheus" >&2
    echo "(the package brings promtool and does not start a server)" >&2
    exit 1
fi

promtool --version 2>&1 | head -n 1
promtool check rules deploy/prometheus/alerts.yaml
promtool test rules deploy/prometheus/alerts_test.yaml
