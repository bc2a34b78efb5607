# CPU image of freezetune-server. Build from the repo root:
#   docker build -f docker/cpu.Dockerfile -t freezetune:cpu .
# Packages come from scripts/debian-packages.txt through scripts/setup.sh: the
# same list and the same steps as a local build, so the two cannot drift.
FROM debian:12 AS build
COPY scripts/debian-packages.txt scripts/setup.sh /src/scripts/
RUN /src/scripts/setup.sh --no-build && rm -rf /var/lib/apt/lists/*
COPY . /src
WORKDIR /src
RUN BUILD_DIR=/build scripts/setup.sh \
 && cmake --install /build --prefix /opt/freezetune --component runtime || \
    (mkdir -p /opt/freezetune/bin && cp /build/server/freezetune-server /build/server/model/freezetune-model /build/client/src/freezetune /opt/freezetune/bin/)

FROM debian:12 AS runtime
# The runtime needs the shared libraries the -dev packages bring; installing the
# same list keeps one source of truth at the cost of a larger image.
COPY scripts/debian-packages.txt scripts/setup.sh /src/scripts/
RUN /src/scripts/setup.sh --no-build && rm -rf /var/lib/apt/lists/* /src
COPY --from=build /opt/freezetune /opt/freezetune
RUN useradd --system --uid 10001 --home /var/lib/freezetune --create-home freezetune
USER 10001
WORKDIR /var/lib/freezetune
EXPOSE 50051 9464
HEALTHCHECK --interval=30s --timeout=5s CMD ["/opt/freezetune/bin/freezetune", "--server", "127.0.0.1:50051", "list", "--limit", "1"]
ENTRYPOINT ["/opt/freezetune/bin/freezetune-server", "--listen", "0.0.0.0:50051", "--metrics_listen", "0.0.0.0:9464", "--data_dir", "/var/lib/freezetune"]
