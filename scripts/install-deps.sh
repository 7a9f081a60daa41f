#!/usr/bin/env bash
# Installs the system packages one part of the project needs, from Debian's
# archive with apt-get, and does nothing when they are already there:
#
#   scripts/install-deps.sh go          # the Go example: Go, grpc-go, protoc and its Go plugins
#   scripts/install-deps.sh node        # Node.js and npm, for the Node example (only when `node` is missing)
#   scripts/install-deps.sh containers  # podman/buildah to build and run the image, mmdebstrap, systemd-nspawn
#
# Needs root and apt-get when something is missing; otherwise it names the
# packages to install by hand and exits 1. Safe to run again (CI runs it).
set -euo pipefail

# Go: one apt-get call for all of them. Asked for one at a time, apt settles
# on golang-goprotobuf-dev (protobuf 1.3), and the client then panics at run
# time with "protobuf tag not enough fields".
go_packages=(golang-go golang-google-grpc-dev golang-google-protobuf-dev
    golang-github-golang-protobuf-1-5-dev protobuf-compiler protoc-gen-go protoc-gen-go-grpc)
# runc and crun: podman picks its runtime from containers.conf (see
# deploy/podman/containers.conf). uidmap, slirp4netns, netavark and
# aardvark-dns are what podman expects to find even on the host network.
container_packages=(podman buildah runc crun fuse-overlayfs slirp4netns netavark aardvark-dns
    uidmap iptables mmdebstrap systemd-container)

missing() {  # PACKAGE... -> the ones dpkg does not have installed
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$p"
    done
}

install() {  # PACKAGE...
    local need
    mapfile -t need < <(missing "$@")
    ((${#need[@]})) || return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: missing packages: ${need[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${*}) and rerun." >&2
        exit 1
    fi
    echo "install-deps: apt-get install ${*}"
    export DEBIAN_FRONTEND=noninteractive
    # Ask for the whole set again (not only what is missing): apt resolves
    # versions for the set as one, which is the point for the Go packages.
    apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$@" >/dev/null; } \
        || { echo "install-deps: apt-get install $* failed (above)." >&2; exit 1; }
}

[[ $# -gt 0 ]] || { echo "usage: $0 go|node|containers..." >&2; exit 2; }
for group in "$@"; do
    case $group in
        go) install "${go_packages[@]}" ;;
        # Any Node.js >= 18 will do (Debian's, or one installed otherwise).
        node) if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then install nodejs npm; fi ;;
        containers) install "${container_packages[@]}" ;;
        *) echo "install-deps: unknown group '$group' (go, node, containers)" >&2; exit 2 ;;
    esac
done
