#!/usr/bin/env bash
# Pinned command-line tools for the deployment tests (tests/unit/test_deploy_*.py), built from
# the Go module proxy into .tools/bin/ of the project (gitignored):
#   helm         lint and render deploy/helm/stream-monitor
#   kubeconform  validate the rendered manifests against Kubernetes JSON schemas
#   docker-compose  `docker-compose config`: deploy/compose/compose.yaml against the Compose
#                   Specification (it needs no container engine for that)
# Idempotent: a tool whose pinned version is already there is not rebuilt (a cold build takes
# about 5 minutes of CPU). Needs Go >= 1.26.8 (found on PATH or at /usr/local/go/bin); without
# Go it says so and exits 0, and the tests that need these tools skip with that reason.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$root/.tools/bin"

HELM_MODULE="helm.sh/helm/v4"
HELM_VERSION="v4.3.2"
KUBECONFORM_MODULE="github.com/yannh/kubeconform"
KUBECONFORM_VERSION="v0.7.0"
COMPOSE_MODULE="github.com/docker/compose/v5"
# The newest release whose go.mod asks for no newer Go than this machine's (1.26.8).
COMPOSE_VERSION="v5.6.0"

go_bin="$(command -v go || true)"
[[ -z "$go_bin" && -x /usr/local/go/bin/go ]] && go_bin=/usr/local/go/bin/go
if [[ -z "$go_bin" ]]; then
    echo "tools.sh: no Go toolchain: helm and kubeconform not installed (their tests skip)" >&2
    exit 0
fi
mkdir -p "$bin"

# install NAME MODULE/CMD VERSION VERSION_VARIABLE: `go install` once per pinned version (a stamp
# file records it), with the version stamped in as the projects' own release builds do.
install() {
    local name="$1" pkg="$2" version="$3" version_var="$4"
    local stamp="$bin/.$name-$version"
    if [[ -x "$bin/$name" && -f "$stamp" ]]; then return; fi
    echo "tools.sh: building $name $version from the Go module proxy" >&2
    # -trimpath: reproducible; nice: the machine is shared. CGO off: static binaries.
    CGO_ENABLED=0 GOBIN="$bin" GOFLAGS="-trimpath -buildvcs=false" \
        nice -n 10 "$go_bin" install -ldflags "-s -w -X $version_var=$version" "$pkg@$version"
    rm -f "$bin/.$name-"*
    touch "$stamp"
}

# Compose's go.mod has `exclude` directives, which `go install pkg@version` refuses: build it as
# the main module instead, from its source in the module cache (downloaded from the proxy).
install_compose() {
    local stamp="$bin/.docker-compose-$COMPOSE_VERSION"
    if [[ -x "$bin/docker-compose" && -f "$stamp" ]]; then return; fi
    echo "tools.sh: building docker-compose $COMPOSE_VERSION from the Go module proxy" >&2
    local dir work
    dir="$(GOFLAGS=-mod=mod "$go_bin" mod download -json "$COMPOSE_MODULE@$COMPOSE_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -d "$dir" ]] || { echo "tools.sh: $COMPOSE_MODULE@$COMPOSE_VERSION not downloaded" >&2; exit 1; }
    work="$(mktemp -d)"
    cp -r "$dir/." "$work/"
    chmod -R u+w "$work"
    (cd "$work" && CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" nice -n 10 "$go_bin" build \
        -ldflags "-s -w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION" \
        -o "$bin/docker-compose" ./cmd)
    rm -rf "$work"
    rm -f "$bin/.docker-compose-"*
    touch "$stamp"
}

install helm "$HELM_MODULE/cmd/helm" "$HELM_VERSION" "$HELM_MODULE/internal/version.version"
install kubeconform "$KUBECONFORM_MODULE/cmd/kubeconform" "$KUBECONFORM_VERSION" main.version
install_compose
echo "tools.sh: helm $("$bin/helm" version --short), kubeconform $("$bin/kubeconform" -v)," \
    "$("$bin/docker-compose" version --short)" >&2
