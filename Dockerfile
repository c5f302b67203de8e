# The image the DaemonSet and the compose rig run: four static binaries and
# nothing else. This multi-stage build needs the golang image from a
# registry; `make image` builds the same image offline from binaries built
# by the host's Go toolchain (deploy/image/Dockerfile).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/loomnet/loom/agent.Version=${VERSION} -X github.com/loomnet/loom/cniplugin.Version=${VERSION} -X main.Version=${VERSION}" \
      -o /out/ ./cmd/loomd ./cmd/loom ./cmd/loomctl ./cmd/loom-kube-policy

FROM scratch
COPY --from=build /out/loomd /out/loom /out/loomctl /out/loom-kube-policy /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/loomd"]
