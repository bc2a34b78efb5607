# syntax=docker/dockerfile:1
# CUDA image of freezetune: the official CUDA build of LibTorch on an NVIDIA
# CUDA base. Pick LibTorch and CUDA with build args (the defaults match):
#
#   docker build -f docker/cuda.Dockerfile -t freezetune:0.1.0-cuda12.6 \
#     --build-arg CUDA_VERSION=12.6.3 --build-arg LIBTORCH_VERSION=2.6.0 \
#     --build-arg LIBTORCH_URL=https://download.pytorch.org/libtorch/cu126/libtorch-cxx11-abi-shared-with-deps-2.6.0%2Bcu126.zip .
#   docker run --rm --gpus all -p 50051:50051 -p 9464:9464 freezetune:0.1.0-cuda12.6
#
# NVIDIA publishes its CUDA images on Ubuntu, not Debian, so this image is
# Ubuntu ${UBUNTU_VERSION}; the packages still come from
# scripts/debian-packages.txt through scripts/setup.sh (their names are the
# same there), minus Debian's LibTorch (libtorch-dev, python3-torch) and the
# Debian-only or test-only tools, and the build is setup.sh's cmake with
# -DTorch_DIR pointing at the downloaded LibTorch.
ARG CUDA_VERSION=12.6.3
ARG UBUNTU_VERSION=24.04

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu${UBUNTU_VERSION} AS build
ARG LIBTORCH_VERSION=2.6.0
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu126/libtorch-cxx11-abi-shared-with-deps-${LIBTORCH_VERSION}%2Bcu126.zip
ARG BUILD_SKIP_PACKAGES="npm libtorch-dev python3-torch kubernetes-client prometheus clang libclang-rt-14-dev python3-yaml chromium"
# No GPU at build time: name the architectures instead of probing for them.
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0"
ENV TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY scripts/debian-packages.txt scripts/setup.sh scripts/
RUN FREEZETUNE_SKIP_PACKAGES="${BUILD_SKIP_PACKAGES}" scripts/setup.sh --no-build \
 && rm -rf /var/lib/apt/lists/*
# python3 (from the list) unpacks the zip: no unzip package needed.
ADD ${LIBTORCH_URL} /tmp/libtorch.zip
RUN python3 -m zipfile -e /tmp/libtorch.zip /opt \
 && rm /tmp/libtorch.zip \
 && test -f /opt/libtorch/share/cmake/Torch/TorchConfig.cmake \
 && grep -q "${LIBTORCH_VERSION}" /opt/libtorch/build-version
COPY . .
RUN BUILD_DIR=/build FREEZETUNE_SKIP_PACKAGES="${BUILD_SKIP_PACKAGES}" \
    FREEZETUNE_CMAKE_ARGS="-DTorch_DIR=/opt/libtorch/share/cmake/Torch -DFREEZETUNE_BUILD_TESTS=OFF" \
    scripts/setup.sh \
 && install -d /opt/freezetune/bin \
 && install -m 0755 /build/server/freezetune-server /build/server/freezetune-worker /build/server/model/freezetune-model \
      /build/client/src/freezetune docker/grpc_health_check.py /opt/freezetune/bin/

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS runtime
ARG RUNTIME_SKIP_PACKAGES="npm libtorch-dev python3-torch kubernetes-client prometheus clang libclang-rt-14-dev python3-yaml cmake g++ make ccache pkg-config git libgtest-dev libgmock-dev libbenchmark-dev python3-grpc-tools chromium python3-venv python3-setuptools python3-wheel postgresql"
ENV DEBIAN_FRONTEND=noninteractive
COPY scripts/debian-packages.txt scripts/setup.sh /tmp/freezetune-setup/scripts/
RUN FREEZETUNE_SKIP_PACKAGES="${RUNTIME_SKIP_PACKAGES}" /tmp/freezetune-setup/scripts/setup.sh --no-build \
 && rm -rf /var/lib/apt/lists/* /tmp/freezetune-setup \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/freezetune --create-home \
      --shell /usr/sbin/nologin freezetune
# LibTorch's libraries (with their bundled CUDA/cuDNN) at the path the
# binaries' RPATH names.
COPY --from=build /opt/libtorch/lib /opt/libtorch/lib
COPY --from=build /opt/freezetune /opt/freezetune
ENV PATH=/opt/freezetune/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /var/lib/freezetune
VOLUME /var/lib/freezetune
EXPOSE 50051 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python3", "/opt/freezetune/bin/grpc_health_check.py", "127.0.0.1:50051"]
ENTRYPOINT ["/opt/freezetune/bin/freezetune-server"]
CMD ["--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9464", "--data_dir=/var/lib/freezetune"]
