# syntax=docker/dockerfile:1
#
# One Dockerfile, one target per service:
#   docker build --target orders-api .
#   docker build --target orders-batch .
#   docker build --target orders-load .
# docker-compose.yml builds them. cargo-chef compiles the dependencies in a layer
# of their own, keyed only on the manifests and Cargo.lock, so a change to the
# project's code recompiles the project's crates and nothing else. The build
# needs no database: the queries are checked at run time, not by sqlx macros.

FROM rust:1.95.0-slim-trixie AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json \
        --package orders-api --package orders-batch --package orders-load
COPY . .
RUN cargo build --release --locked --package orders-api --package orders-batch --package orders-load

# The services link only glibc (TLS is rustls), so a slim Debian of the same
# release as the builder is enough. curl is there for the healthcheck. The
# packages follow the pinned Debian release rather than exact versions, which
# its security updates would remove from the archive and break the build.
FROM debian:trixie-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin orders
USER 10001:10001

FROM runtime AS orders-api
COPY --from=builder /build/target/release/orders-api /usr/local/bin/orders-api
ENV LISTEN_ADDR=0.0.0.0:3000
EXPOSE 3000
# Ready means the database answers, not only that the port is open. The port
# is LISTEN_ADDR's: change both together.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--output", "/dev/null", "http://127.0.0.1:3000/readyz"]
ENTRYPOINT ["/usr/local/bin/orders-api"]

# orders-batch serves nothing: it is healthy while it runs, and a run that
# fails shows up as a non-zero exit and in its logs.
FROM runtime AS orders-batch
COPY --from=builder /build/target/release/orders-batch /usr/local/bin/orders-batch
ENTRYPOINT ["/usr/local/bin/orders-batch"]

# The load generator: a client of orders-api, under compose's "load" profile.
FROM runtime AS orders-load
COPY --from=builder /build/target/release/orders-load /usr/local/bin/orders-load
ENTRYPOINT ["/usr/local/bin/orders-load"]
