# syntax=docker/dockerfile:1
# nats-account-server container image.
#
#   docker build -t nats-account-server .
#   docker run --rm -p 9090:9090 -v "$PWD/nas:/etc/nas:ro" nats-account-server
#
# The image ships no configuration: mount a directory holding nas.conf at /etc/nas (the
# Kubernetes examples in deploy/kubernetes/ mount a ConfigMap there). The process runs as the
# distroless "nonroot" user (uid/gid 65532); a directory store belongs on a volume at
# /var/lib/nas, which that user owns.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds (BuildKit); the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin nats-account-server \
    && install -D -m 0755 target/release/nats-account-server /out/nats-account-server \
    && install -d -m 0750 /out/var/lib/nas

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/nats-account-server /usr/local/bin/nats-account-server
COPY --from=builder --chown=65532:65532 /out/var/lib/nas /var/lib/nas
USER 65532:65532
WORKDIR /var/lib/nas
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/nats-account-server", "-c", "/etc/nas/nas.conf"]
