#!/usr/bin/env bash
# `make image`: builds deploy/docker/Dockerfile as securechat:local.
#
#   bash deploy/docker/build.sh              # docker if an engine answers, else podman/buildah
#   BASE=pull bash deploy/docker/build.sh    # insist on python:3.11-slim-bookworm from a registry
#   BASE=bootstrap ...                       # insist on the Debian-bootstrapped base
#
# BASE=auto (the default) uses python:3.11-slim-bookworm when it is already
# local or can be pulled, and otherwise bootstraps the base from Debian
# packages (deploy/docker/base-image.sh). CI, which reaches no image
# registry, sets BASE=bootstrap and does not try.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../podman/env.sh
source "$root/deploy/podman/env.sh"

tag=${IMAGE:-securechat:local}
official=python:3.11-slim-bookworm
base=${BASE:-auto}
[[ ${CI:-} == true && $base == auto ]] && base=bootstrap

case $base in
    auto)
        if "$ENGINE" image inspect "$official" >/dev/null 2>&1 \
            || timeout 60 "$ENGINE" pull --quiet "$official" >/dev/null 2>&1; then
            base_image=$official
        else
            echo "no $official here and none could be pulled: bootstrapping the base from Debian packages"
            bash "$here/base-image.sh"
            base_image=localhost/securechat-base:bookworm
        fi ;;
    pull) "$ENGINE" pull --quiet "$official" >/dev/null; base_image=$official ;;
    bootstrap) bash "$here/base-image.sh"; base_image=localhost/securechat-base:bookworm ;;
    *) base_image=$base ;;
esac

args=(build -f "$root/deploy/docker/Dockerfile" -t "$tag" --build-arg "BASE_IMAGE=$base_image" --network=host)
# The host's CA bundle, for pip behind a TLS-intercepting proxy: a build
# secret, mounted only into the pip step, in no layer.
bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[[ -s $bundle ]] && args+=(--secret "id=ca-bundle,src=$bundle")
if [[ $ENGINE == podman ]]; then
    # buildah's default OCI format drops HEALTHCHECK.
    args+=(--format docker --pull=never)
else
    export DOCKER_BUILDKIT=1
fi
start=$SECONDS
"$ENGINE" "${args[@]}" "$root"
size=$("$ENGINE" image inspect --format '{{.Size}}' "$tag")
echo "built $tag from $base_image with $ENGINE in $((SECONDS - start))s ($((size / 1000000)) MB)"
