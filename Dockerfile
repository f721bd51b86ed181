# syntax=docker/dockerfile:1
# Multi-stage: cargo-chef caches the dependency build in its own layer.
FROM rust:1.95-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin thryve-bridge

# The test image: the toolchain plus the sources, for `docker compose --profile test run tests`.
FROM builder AS tests
RUN cargo test --locked --no-run
CMD ["cargo", "test", "--locked"]

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home bridge \
    && mkdir -p /var/lib/thryve-bridge/spool \
    && chown bridge /var/lib/thryve-bridge/spool
COPY --from=builder /app/target/release/thryve-bridge /usr/local/bin/thryve-bridge
USER bridge
EXPOSE 8080
ENV BIND_ADDR=0.0.0.0:8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["thryve-bridge", "healthcheck"]
ENTRYPOINT ["thryve-bridge"]
CMD ["serve"]
