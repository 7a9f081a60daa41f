#!/usr/bin/env bash
# Installs examples/node's locked dependencies (npm ci), and Node.js itself
# with apt-get when there is none. Does nothing when node_modules is current.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
    || bash "$here/../../scripts/install-deps.sh" node
stamp=$here/node_modules/.package-lock.json
if [[ -f $stamp && $stamp -nt $here/package-lock.json ]]; then
    exit 0
fi
npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
