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
ENV SOTTO_DATA=/data SOTTO_LISTEN=:7340
VOLUME /data
EXPOSE 7340
USER nonroot
ENTRYPOINT ["/usr/local/bin/sottod"]
