# The engine's image: the release binary on a slim Debian, run as a non-root user with no shell
# login and nothing else installed but the CA certificates a `rediss://` URL is checked against.
#   docker build -t maestro .
#   docker run --rm -e MAESTRO_REDIS_URL=redis://host:6379 -v maestro-data:/var/lib/maestro maestro
# Building needs only a C compiler (libgit2 and mimalloc are built from source); the rust
# image has one.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin maestro \
 && strip target/release/maestro

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 maestro \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin maestro \
 && install -d -o 10001 -g 10001 /var/lib/maestro
COPY --from=build /src/target/release/maestro /usr/local/bin/maestro
USER 10001:10001
WORKDIR /var/lib/maestro
ENV MAESTRO_DATA_DIR=/var/lib/maestro/data \
    MAESTRO_HTTP=0.0.0.0:9090
VOLUME ["/var/lib/maestro"]
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/maestro"]
CMD ["run"]
