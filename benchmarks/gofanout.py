"""Build benchmarks/go/PROGRAM (fanout: the grpc-go fan-out server; fanload: the Go load client; storm: the reconnect storm's client) from Debian's Go packages.

Nothing is fetched but Debian's packages: the build runs in GOPATH mode
against the sources they install under /usr/share/gocode, with the Go stubs
generated from protos/ by protoc into a temporary workspace. When they are
missing, `build` runs `scripts/install-deps.sh go` (as root: one apt-get
command for the whole set; asked apart, apt picks protobuf 1.3's Go package,
whose stubs panic at run time).

    python -m benchmarks.gofanout DEST [PROGRAM]     # writes DEST/PROGRAM (default fanout), prints its path
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "benchmarks" / "go"
PROTO = "securechat/v1/chat.proto"
GO_PACKAGE = "securechat/v1/chatpb"  # the proto has no go_package option: protoc is told with --go_opt=M
DEBIAN_GOCODE = Path("/usr/share/gocode")
TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")


def missing_tools() -> list[str]:
    """What the build needs and this machine lacks (empty when it can build)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not (DEBIAN_GOCODE / "src" / "google.golang.org" / "grpc").is_dir():
        missing.append("golang-google-grpc-dev")
    return missing


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"grpc-go fan-out server: {name} not found on PATH")
    return path


def build(dest: Path, program: str = "fanout") -> Path:
    """Compile benchmarks/go/PROGRAM into DEST/PROGRAM and return its path; RuntimeError naming what is missing."""
    if missing_tools():
        subprocess.run([shutil.which("bash") or "/bin/bash", str(ROOT / "scripts" / "install-deps.sh"), "go"], check=False)
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"grpc-go {program}: {', '.join(missing)} not installed; run scripts/install-deps.sh go as root")
    workspace = dest / "gopath"
    package = workspace / "src" / GO_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    mapping = f"M{PROTO}={GO_PACKAGE}"
    subprocess.run(
        [
            _tool("protoc"),
            f"-I{ROOT / 'protos'}",
            f"--go_out={package}",
            f"--go_opt={mapping}",
            f"--go-grpc_out={package}",
            f"--go-grpc_opt={mapping}",
            PROTO,
        ],
        check=True,
        cwd=workspace,
    )
    # protoc writes OUT/<go package path>/chat*.pb.go under the --go_out root.
    for produced in (package / GO_PACKAGE).glob("*.go"):
        produced.replace(package / produced.name)
    main_dir = workspace / "src" / program
    main_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(SOURCES / program / "main.go", main_dir / "main.go")
    binary = dest / program
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOPATH": f"{workspace}:{DEBIAN_GOCODE}",
        "GOCACHE": str(dest / "gocache"),
    }
    subprocess.run([_tool("go"), "build", "-o", str(binary), program], check=True, env=env, cwd=workspace)
    return binary


if __name__ == "__main__":
    print(build(Path(sys.argv[1]).resolve(), *sys.argv[2:3]))
