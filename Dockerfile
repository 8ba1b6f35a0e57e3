# syntax=docker/dockerfile:1
#
# vault-server and vaultctl in a distroless image (docs/production.md).
#
#   docker build -t vault-server:local .                      # the server (last stage)
#   docker build --target example-app -t vault-example-app:local .
#
# The runtime image runs as a non-root user (65532), needs no writable path
# but /data (SQLite; unused on PostgreSQL) and /tmp, so it runs with a
# read-only root filesystem (`read_only: true`, `readOnlyRootFilesystem`).
# It has no shell and no curl: the health check is `vaultctl health`
# (exit 0 when unsealed and active, 2 when sealed, 1 when unreachable).

ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Caches keep the registry and build directory between builds; the binaries
# are copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vault-server -p vault-client --bins \
 && install -D -m 0755 target/release/vault-server /out/bin/vault-server \
 && install -D -m 0755 target/release/vaultctl /out/bin/vaultctl \
 && install -d -m 0700 /out/data

# An example application fed by `vaultctl exec` (docker-compose.yml): a
# libpq client whose database password arrives in its environment only.
FROM debian:bookworm-slim AS example-app
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /out/bin/vaultctl /usr/local/bin/vaultctl
COPY deploy/docker/example-app.sh /usr/local/bin/example-app
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/vaultctl"]

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/bin/vault-server /out/bin/vaultctl /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data /data
COPY deploy/docker/vault.toml /etc/vault/vault.toml
USER 65532:65532
ENV VAULT_CONFIG=/etc/vault/vault.toml \
    VAULT_ADDR=http://127.0.0.1:8200
VOLUME ["/data"]
EXPOSE 8200
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/vaultctl", "health"]
ENTRYPOINT ["/usr/local/bin/vault-server"]
CMD ["server"]
