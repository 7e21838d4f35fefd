# Container image for sottod. Build: docker build -t sottod .
# Run:   docker run -p 7340:7340 -v sotto-data:/data sottod
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/sottod ./cmd/sottod && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sottod /usr/local/bin/sottod
# The data directory must belong to the unprivileged user the server runs as.
COPY --from=build --chown=65532:65532 /out/data /data
# Plain HTTP: put a TLS-terminating proxy in front, or mount certificates and
# set SOTTO_TLS_CERT / SOTTO_TLS_KEY (then SOTTO_ALLOW_PLAIN_HTTP is not needed).
ENV SOTTO_DATA=/data SOTTO_LISTEN=:7340 SOTTO_ALLOW_PLAIN_HTTP=true
VOLUME /data
EXPOSE 7340
USER nonroot
ENTRYPOINT ["/usr/local/bin/sottod"]
