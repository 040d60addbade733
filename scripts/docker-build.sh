#!/usr/bin/env bash
# Builds vigil into a root file-system layout under OUTDIR. The Dockerfile's
# build stage runs this very script and copies OUTDIR over the runtime image,
# so a build here is the container's build (cmd/vigil/docker_build_test.go
# runs it, since Docker itself is not available to the tests).
#
#   bash scripts/docker-build.sh OUTDIR      # VIGIL_VERSION overrides the version
#
# Layout:
#   OUTDIR/usr/local/bin/vigil
#   OUTDIR/usr/share/vigil/examples/*.yaml
#   OUTDIR/usr/share/vigil/vigil.service, operations.md
#   OUTDIR/etc/vigil/                 (config volume; vigil.yaml goes here)
#   OUTDIR/var/lib/vigil/             (data volume: history, job locks, local repositories)
#   OUTDIR/var/cache/vigil/           (index cache)
set -euo pipefail

out=${1:?usage: docker-build.sh OUTDIR}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$(dirname "$0")/.."

version=${VIGIL_VERSION:-}
if [[ -z $version ]]; then
	version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
fi

# cgo is required: the run history uses SQLite through go-sqlite3. The
# binary links glibc dynamically, so the runtime image must be a glibc
# distribution at least as new as the build one (both Debian bookworm).
export CGO_ENABLED=1
go build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=${version}" \
	-o "$out/usr/local/bin/vigil" ./cmd/vigil

install -d -m 0755 "$out/usr/share/vigil/examples" "$out/etc/vigil"
install -m 0644 configs/examples/*.yaml "$out/usr/share/vigil/examples/"
install -m 0644 configs/vigil.service docs/operations.md "$out/usr/share/vigil/"
install -d -m 0750 "$out/var/lib/vigil" "$out/var/cache/vigil"

# The binary must start on this machine: a broken link step fails here,
# not in the container's first health check.
"$out/usr/local/bin/vigil" version
