# vigil in a container: the scheduler daemon as a non-root user.
#
#   docker build -t vigil --build-arg VIGIL_VERSION=$(git describe --always) .
#   docker run -d --name vigil \
#     -v /srv/vigil/etc:/etc/vigil:ro -v vigil-data:/var/lib/vigil \
#     -v /srv/samba:/srv/samba:ro vigil
#
# The build steps are scripts/docker-build.sh, which the tests run outside
# Docker; keep every build step in that script, not here.

# Build on the same Debian release as the runtime image: the binary links
# glibc (cgo, for SQLite), and a newer build glibc would not load on it.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VIGIL_VERSION=dev
RUN VIGIL_VERSION=${VIGIL_VERSION} bash scripts/docker-build.sh /out

FROM debian:bookworm-slim
# ca-certificates for S3 and vCenter over TLS, tzdata for CRON_TZ and the
# configured timezone.
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates tzdata \
	&& rm -rf /var/lib/apt/lists/* \
	&& groupadd --system --gid 10001 vigil \
	&& useradd --system --uid 10001 --gid vigil --home-dir /var/lib/vigil --no-create-home --shell /usr/sbin/nologin vigil
COPY --from=build /out/ /
RUN chown vigil:vigil /var/lib/vigil /var/cache/vigil
USER vigil:vigil
ENV VIGIL_CONFIG=/etc/vigil/vigil.yaml \
	XDG_CACHE_HOME=/var/cache
# Config (read-only is fine), history + job locks + local repositories, index cache.
VOLUME ["/etc/vigil", "/var/lib/vigil", "/var/cache/vigil"]
# Healthy = a daemon holds the history lock and the history is readable.
HEALTHCHECK --interval=1m --timeout=20s --start-period=30s --retries=3 \
	CMD ["/usr/local/bin/vigil", "health"]
# docker stop sends SIGTERM: running jobs are cancelled, given their
# grace period and recorded "cancelled". Give it time: docker stop -t 60.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/vigil", "daemon"]
CMD ["--log-format", "json"]
