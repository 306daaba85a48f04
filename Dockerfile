# syntax=docker/dockerfile:1
# A small static image of epcheck (SPEC §10):
#   docker build -t ghcr.io/epcheck/epcheck:0.1.0 .
# The binary is linked statically against musl, so the final stage needs no libc: distroless
# static (CA certificates, /etc/passwd with the nonroot user 65532, nothing else: no shell).
# TLS uses rustls with ring; ring's C and assembly parts and jemalloc (the allocator) are
# compiled with musl-gcc (jemalloc's build needs make). The etcd store (feature `etcd`) needs
# protoc at build time for etcd-client's gRPC stubs.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools make protobuf-compiler \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
# The caches make rebuilds fast; the binary is copied out of the cached target dir in the
# same step, since a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p epcheck-cli --features etcd --target "${TARGET}" \
 && cp "target/${TARGET}/release/epcheck" /epcheck

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /epcheck /epcheck
USER 65532:65532
# /metrics, /healthz, /readyz (metrics.listen)
EXPOSE 9087
ENTRYPOINT ["/epcheck"]
CMD ["run", "-f", "/etc/epcheck/config.yaml"]
