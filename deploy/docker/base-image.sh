#!/usr/bin/env bash
# Bootstraps the image's base from Debian packages, for machines that reach
# Debian's archive but no image registry:
#
#   bash deploy/docker/base-image.sh      # -> localhost/securechat-base:bookworm (Python 3.11)
#
# It stands in for python:3.11-slim-bookworm: Debian bookworm (minbase) with
# python3, python3-venv and ca-certificates, docs and man pages left out.
# Does nothing when the tag exists (REBUILD=1 makes it again).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../podman/env.sh
source "$here/../podman/env.sh"

tag=${BASE_TAG:-localhost/securechat-base:bookworm}
suite=bookworm
if [[ ${REBUILD:-0} != 1 ]] && "$ENGINE" image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag exists (REBUILD=1 to make it again)"
    exit 0
fi
command -v mmdebstrap >/dev/null 2>&1 \
    || { echo "base-image: mmdebstrap is missing: run 'bash scripts/install-deps.sh containers' (as root)" >&2; exit 1; }

start=$SECONDS
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The host's apt sources name the mirror this machine reaches.
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --format=tar "$suite" "$tmp/rootfs.tar"
"$ENGINE" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --message "debian $suite minbase + python3 (mmdebstrap)" "$tmp/rootfs.tar" "$tag" >/dev/null
python=$("$ENGINE" run --rm --network=host "$tag" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
echo "base image $tag: debian $suite, python $python, made in $((SECONDS - start))s"
