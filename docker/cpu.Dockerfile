# syntax=docker/dockerfile:1
# CPU image of freezetune: freezetune-server (entrypoint), freezetune-model and
# the freezetune CLI, on Debian 12 with Debian's LibTorch and OpenBLAS.
#
#   docker build -f docker/cpu.Dockerfile -t freezetune:0.1.0-cpu .
#   docker run --rm -p 50051:50051 -p 9464:9464 -v ft-data:/var/lib/freezetune freezetune:0.1.0-cpu
#
# Every Debian package comes from scripts/debian-packages.txt through
# scripts/setup.sh, and the build is setup.sh's own cmake configure + build, so
# the image, CI and a developer's machine cannot drift apart. The runtime stage
# installs the same list minus the compilers and test/deploy tools
# (RUNTIME_SKIP_PACKAGES): the -dev packages bring the shared libraries.
ARG DEBIAN_IMAGE=debian:12

FROM ${DEBIAN_IMAGE} AS build
WORKDIR /src
COPY scripts/debian-packages.txt scripts/setup.sh scripts/
RUN scripts/setup.sh --no-build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN BUILD_DIR=/build FREEZETUNE_CMAKE_ARGS="-DFREEZETUNE_BUILD_TESTS=OFF" scripts/setup.sh \
 && install -d /opt/freezetune/bin \
 && install -m 0755 /build/server/freezetune-server /build/server/freezetune-worker /build/server/model/freezetune-model \
      /build/client/src/freezetune docker/grpc_health_check.py /opt/freezetune/bin/

FROM ${DEBIAN_IMAGE} AS runtime
ARG RUNTIME_SKIP_PACKAGES="npm cmake g++ make ccache pkg-config git libgtest-dev libgmock-dev libbenchmark-dev python3-torch python3-grpc-tools prometheus clang libclang-rt-14-dev kubernetes-client python3-yaml chromium python3-venv python3-setuptools python3-wheel postgresql"
COPY scripts/debian-packages.txt scripts/setup.sh /tmp/freezetune-setup/scripts/
RUN FREEZETUNE_SKIP_PACKAGES="${RUNTIME_SKIP_PACKAGES}" /tmp/freezetune-setup/scripts/setup.sh --no-build \
 && rm -rf /var/lib/apt/lists/* /tmp/freezetune-setup \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/freezetune --create-home \
      --shell /usr/sbin/nologin freezetune
COPY --from=build /opt/freezetune /opt/freezetune
ENV PATH=/opt/freezetune/bin:$PATH
# Numeric, so Kubernetes' runAsNonRoot can verify it (deploy/k8s runs as 10001 too).
USER 10001:10001
WORKDIR /var/lib/freezetune
VOLUME /var/lib/freezetune
# gRPC (FineTuneService, health, reflection) and Prometheus /metrics.
EXPOSE 50051 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "/opt/freezetune/bin/grpc_health_check.py", "127.0.0.1:50051"]
ENTRYPOINT ["/opt/freezetune/bin/freezetune-server"]
CMD ["--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9464", "--data_dir=/var/lib/freezetune"]
