# The CPU agent image, with the default model bundled:
#   docker build -f docker/agent.Dockerfile -t ghcr.io/inferpool/agent:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# candle picks its quantized kernels at compile time: AVX2/FMA for any x86-64-v3 node.
ENV RUSTFLAGS="-C target-cpu=x86-64-v3"
RUN cargo build --release --locked -p inferpool-agent \
 && install -D target/release/inferpool-agent /out/inferpool-agent
# The bundled model lands where `spec.model.source: bundled` points (/models/...).
RUN PIP_BREAK_SYSTEM_PACKAGES=1 INFERPOOL_MODELS=/models hack/fetch-models \
 && rm -f /models/*/.verified

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL dev.inferpool.image="ghcr.io/inferpool/agent" \
      org.opencontainers.image.title="inferpool agent (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/inferpool-agent /usr/local/bin/inferpool-agent
COPY --from=build /models /models
# /v1/embeddings serves the bundled embedding model.
ENV INFERPOOL_EMBEDDING_MODEL=/models/all-minilm-l6-v2
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/inferpool-agent"]
