# The CUDA agent image for GPU pools. The build stage needs neither NVIDIA's devel image nor
# a GPU: hack/build-cuda installs nvcc and the CUDA headers from PyPI (CUDA 13.0, pinned
# there) and builds for one compute capability (90, Hopper, by default; README, "CUDA
# builds", lists the others). The image needs a driver >= 580 on the node.
#   docker build -f docker/agent-cuda.Dockerfile -t ghcr.io/inferpool/agent-cuda:0.1.0 .
#   docker build -f docker/agent-cuda.Dockerfile --build-arg CUDA_COMPUTE_CAP=80 \
#     -t ghcr.io/inferpool/agent-cuda:0.1.0-sm80 .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG CUDA_COMPUTE_CAP=90
# candle picks its quantized CPU kernels at compile time: AVX2/FMA for any x86-64-v3 node.
ENV RUSTFLAGS="-C target-cpu=x86-64-v3" INFERPOOL_CACHE=/cache
RUN hack/build-cuda --compute-cap "$CUDA_COMPUTE_CAP" >/tmp/agent-path \
 && install -D "$(cat /tmp/agent-path)" /out/inferpool-agent
# The bundled model lands where `spec.model.source: bundled` points (/models/...).
RUN PIP_BREAK_SYSTEM_PACKAGES=1 INFERPOOL_MODELS=/models hack/fetch-models \
 && rm -f /models/*/.verified

# The same CUDA release as the build: libcudart, libcublas(Lt), libcurand, libnvrtc 13;
# libcuda comes from the node's driver through the NVIDIA container runtime.
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04
LABEL dev.inferpool.image="ghcr.io/inferpool/agent-cuda" \
      org.opencontainers.image.title="inferpool agent (CUDA)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/inferpool-agent /usr/local/bin/inferpool-agent
COPY --from=build /models /models
# /v1/embeddings serves the bundled embedding model.
ENV INFERPOOL_EMBEDDING_MODEL=/models/all-minilm-l6-v2
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/inferpool-agent"]
