# syntax=docker/dockerfile:1
#
# The StreamHub server: a static binary on an empty base, run as the non-root
# user 65532. `make image` builds the same image without Docker
# (cmd/streamhub-image); keep the two in step.
#
#   docker build --build-arg VERSION="$(git describe --tags --always)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" -t streamhub .
#
# The build context keeps .git (see .dockerignore) so that the go command
# records the revision that `streamhub --version` prints.

FROM golang:1.27.3 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=auto -ldflags='-s -w' -o /out/streamhub ./cmd/streamhub

FROM scratch
# passwd and group entries of the non-root user, nsswitch.conf, and Debian's
# CA certificates for TLS to Redis or a collector.
COPY cmd/streamhub-image/rootfs/ /
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build --chmod=0755 /out/streamhub /usr/local/bin/streamhub
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="streamhub" \
      org.opencontainers.image.description="StreamHub real-time streaming server" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 65532:65532
# gRPC (--grpc-addr), HTTP and WebSocket (--http-addr), admin (--admin-addr).
EXPOSE 50051 8080 8081
ENTRYPOINT ["/usr/local/bin/streamhub"]
