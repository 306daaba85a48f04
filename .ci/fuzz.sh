#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ briefly (FUZZING.md): the config file, the token file and the
# ApiServer's replies. Needs the nightly toolchain and cargo-fuzz (installed here when missing).
# FUZZ_SECONDS sets the time per target (default 20). The build goes to a target directory
# outside the clone, so later runs on the same machine reuse it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"
target_dir="${EPCHECK_FUZZ_TARGET:-$HOME/.cache/epcheck/fuzz-target}"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
start=$SECONDS
cargo +nightly fuzz build --target-dir "$target_dir"
echo "fuzz targets built in $((SECONDS - start)) s"
for t in config token apiserver_reply; do
  # A fresh corpus each run: findings are kept by libFuzzer as artifacts/<target>/crash-*.
  corpus="$(mktemp -d)"
  cargo +nightly fuzz run --target-dir "$target_dir" "$t" "$corpus" -- \
    -max_total_time="$seconds" -max_len=65536 2>&1 | grep -E '^(Done|==|SUMMARY|thread)' || true
  status=${PIPESTATUS[0]}
  rm -rf "$corpus"
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $t failed (exit $status); the input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
