#!/usr/bin/env bash
# Makes a directory the image can mount at /etc/securechat from a
# `securechat quickstart --dir QS` set, which cannot be mounted as it is:
# it has no health.yaml for the HEALTHCHECK, its server listens on
# 127.0.0.1 (unreachable through a published port), and its 0600 keys belong
# to whoever ran quickstart, not the image's user 10001.
#
#   bash deploy/docker/from-quickstart.sh QS OUT [--listen HOST:PORT]
#
# OUT gets certs/ (without the CA key: the server never needs it), a
# server.yaml listening on --listen (default 0.0.0.0:50051; use 127.0.0.1:PORT
# with --network=host), and a health.yaml for the identity "probe", issued
# into QS/certs if it is not there yet. OUT is owned by 10001:10001 (with
# `podman unshare` when not root). Then:
#
#   podman run -d --read-only -p 127.0.0.1:50051:50051 -v "$PWD/OUT:/etc/securechat:ro" securechat:local
#   securechat hello --config QS/alice.yaml
set -euo pipefail
usage() { echo "usage: $0 QUICKSTART_DIR OUT_DIR [--listen HOST:PORT]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
qs=$1 out=$2
shift 2
listen=0.0.0.0:50051
while [[ $# -gt 0 ]]; do
    case $1 in
        --listen) [[ $# -ge 2 ]] || usage; listen=$2; shift 2 ;;
        *) usage ;;
    esac
done
securechat=${SECURECHAT:-securechat}
for f in server.yaml certs/ca.pem certs/server.pem certs/server-key.pem; do
    [[ -f $qs/$f ]] || { echo "from-quickstart: $qs/$f not found. Run 'securechat quickstart --dir $qs' first." >&2; exit 1; }
done
[[ -e $out ]] && { echo "from-quickstart: $out exists; remove it or pick another OUT_DIR." >&2; exit 1; }
if [[ ! -f $qs/certs/probe.pem ]]; then
    $securechat certs client probe --dir "$qs/certs" >/dev/null
fi
port=${listen##*:}

mkdir -p -m 0700 "$out/certs"
for name in ca server server-key probe probe-key; do
    install -m 0600 "$qs/certs/$name.pem" "$out/certs/$name.pem"
done
chmod 0644 "$out/certs/ca.pem" "$out/certs/server.pem" "$out/certs/probe.pem"
sed "s|^listen: .*|listen: $listen|" "$qs/server.yaml" >"$out/server.yaml"
grep -q "^listen: $listen\$" "$out/server.yaml" \
    || { echo "from-quickstart: $qs/server.yaml has no 'listen:' line to rewrite." >&2; exit 1; }
cat >"$out/health.yaml" <<YAML
# The HEALTHCHECK's client config: it runs inside the container and dials
# the server on loopback as the identity "probe".
target: localhost:$port
tls:
  ca: certs/ca.pem
  cert: certs/probe.pem
  key: certs/probe-key.pem
YAML
chmod 0644 "$out/server.yaml" "$out/health.yaml"
chmod 0750 "$out"
if [[ $(id -u) -eq 0 ]]; then
    chown -R 10001:10001 "$out"
else
    podman unshare chown -R 10001:10001 "$out"
fi
echo "$out: server.yaml (listen $listen), health.yaml (probe), certs/ owned by 10001:10001"
