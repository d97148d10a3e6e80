# The operator image: docker build -f docker/operator.Dockerfile -t ghcr.io/inferpool/operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p inferpool-operator \
 && install -D target/release/inferpool-operator /out/inferpool-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL dev.inferpool.image="ghcr.io/inferpool/operator" \
      org.opencontainers.image.title="inferpool operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/inferpool-operator /usr/local/bin/inferpool-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/inferpool-operator"]
CMD ["run"]
