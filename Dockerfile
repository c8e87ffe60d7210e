# The updraft image: one binary for every role (scheduler, api-server, standalone, task workers).
#
#   docker build -t updraft:0.1.0 .
#
# Build stage: the standard Rust image compiles the release binary. Final stage: Debian slim
# with bash (tasks of the local executor are bash commands), CA certificates and tini, running
# as uid 50000 / gid 0 like Airflow's image, so the same securityContext fits.
#
# The root filesystem may be mounted read-only: everything Updraft writes goes under
# $UPDRAFT_HOME (/opt/updraft: the generated config, logs, the SQLite file of `standalone`) and
# /tmp, which a deployment mounts as volumes, e.g.
#   docker run --read-only --tmpfs /tmp -v updraft-home:/opt/updraft -p 8080:8080 \
#     updraft:0.1.0 standalone --host 0.0.0.0

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p updraft \
    && install -m 0755 target/release/updraft /usr/local/bin/updraft

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 50000 --gid 0 --home-dir /opt/updraft --no-create-home \
        --shell /bin/bash updraft \
    && mkdir -p /opt/updraft/dags /opt/updraft/logs \
    && chown -R 50000:0 /opt/updraft \
    && chmod -R g=u /opt/updraft
COPY --from=build /usr/local/bin/updraft /usr/local/bin/updraft
ENV UPDRAFT_HOME=/opt/updraft \
    HOME=/opt/updraft
WORKDIR /opt/updraft
VOLUME ["/opt/updraft"]
USER 50000:0
EXPOSE 8080 8974
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/updraft"]
CMD ["--help"]
