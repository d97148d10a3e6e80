# The CUDA agent image for GPU pools (links CUDA, needs nvcc to build):
#   docker build -f docker/agent-cuda.Dockerfile -t ghcr.io/inferpool/agent-cuda:0.1.0 .
FROM nvidia/cuda:12.8.1-devel-ubuntu24.04 AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p inferpool-agent --features cuda \
 && install -D target/release/inferpool-agent /out/inferpool-agent
RUN PIP_BREAK_SYSTEM_PACKAGES=1 INFERPOOL_MODELS=/models python3 hack/fetch-models \
 && rm -f /models/*/.verified

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04
LABEL dev.inferpool.image="ghcr.io/inferpool/agent-cuda" \
      org.opencontainers.image.title="inferpool agent (CUDA)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/inferpool-agent /usr/local/bin/inferpool-agent
COPY --from=build /models /models
# /v1/embeddings serves the bundled embedding model.
ENV INFERPOOL_EMBEDDING_MODEL=/models/all-minilm-l6-v2
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/inferpool-agent"]
