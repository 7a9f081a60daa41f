"""Compile protos/ into securechat/_gen: the chat API and the CA service API.

Run with `make proto` (python tools/protogen.py). A test runs `generate()`
into a temporary directory and compares it with the checked-in stubs, so the
two never drift. This is a development tool: it is not part of the installed
package.

protoc writes Python modules that import each other by their proto path
(`from securechat.v1 import chat_pb2`). We keep that path in the descriptor
(reflection and other languages see `securechat/v1/chat.proto`) and rewrite
the one import so the stubs live flat in securechat/_gen.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
GEN_DIR = REPO_ROOT / "securechat" / "_gen"
SHIPPED_DIR = REPO_ROOT / "securechat" / "protos"
"""Copies of protos/ inside the package, so an installed securechat carries them (`securechat proto --out DIR`)."""
PROTO_FILES = {
    "securechat/v1/chat.proto": "chat",
    "securechat/ca/v1/ca.proto": "ca",
}


def generated_names(stem: str) -> tuple[str, ...]:
    return (f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py")


def generate(out_dir: Path, *, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Write the stubs for every proto into out_dir and return their paths."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for proto, stem in PROTO_FILES.items():
        with tempfile.TemporaryDirectory() as raw:
            args = [
                "grpc_tools.protoc",
                f"-I{proto_root}",
                f"--python_out={raw}",
                f"--pyi_out={raw}",
                f"--grpc_python_out={raw}",
                str(proto_root / proto),
            ]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {proto_root / proto}")
            package_dir = Path(raw) / Path(proto).parent
            module_path = ".".join(Path(proto).parent.parts)
            for name in generated_names(stem):
                text = (package_dir / name).read_text()
                text = text.replace(f"from {module_path} import {stem}_pb2", f"from securechat._gen import {stem}_pb2")
                target = out_dir / name
                target.write_text(text)
                written.append(target)
    return written


def copy_protos(out_dir: Path, *, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Copy every proto under out_dir with its proto path (securechat/v1/chat.proto, ...); return the copies."""
    written = []
    for proto in PROTO_FILES:
        target = out_dir / proto
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((proto_root / proto).read_bytes())
        written.append(target)
    return written


if __name__ == "__main__":
    for path in [*generate(GEN_DIR), *copy_protos(SHIPPED_DIR)]:
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    sys.exit(0)
