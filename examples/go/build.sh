#!/usr/bin/env bash
# Builds examples/go into examples/go/bin/securechat-example, offline: Go in
# GOPATH mode against Debian's grpc-go and protobuf packages, no module proxy.
#
#   bash examples/go/build.sh            # installs the apt packages first if missing (as root)
#   examples/go/bin/securechat-example --dir DIR --target localhost:50051
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bash "$root/scripts/install-deps.sh" go

# A GOPATH workspace of our own: src/securechat-example holds main.go and the
# stubs protoc generates from the one source of truth, protos/.
ws=$here/.gopath
pkg=$ws/src/securechat-example
mkdir -p "$pkg/chatpb" "$here/bin"
cp "$here/main.go" "$pkg/main.go"
# chat.proto has no go_package option (it is language-neutral), so name the
# Go import path here with M flags.
m=Msecurechat/v1/chat.proto=securechat-example/chatpb
protoc -I "$root/protos" \
    --go_out="$pkg/chatpb" --go_opt=paths=source_relative --go_opt="$m" \
    --go-grpc_out="$pkg/chatpb" --go-grpc_opt=paths=source_relative --go-grpc_opt="$m" \
    securechat/v1/chat.proto
mv "$pkg/chatpb/securechat/v1/"*.go "$pkg/chatpb/"
rm -rf "$pkg/chatpb/securechat"

export GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$ws:/usr/share/gocode" GOCACHE="${GOCACHE:-$ws/cache}"
go vet securechat-example
go build -o "$here/bin/securechat-example" securechat-example
echo "built $here/bin/securechat-example"
