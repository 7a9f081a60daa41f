"""Compile protos/securechat/v1/chat.proto into securechat/_gen.

Run with `make proto` (python -m securechat.protogen). A test runs
`generate()` into a temporary directory and compares it with the checked-in
stubs, so the two never drift.

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
PROTO_FILE = "securechat/v1/chat.proto"
GEN_DIR = Path(__file__).resolve().parent / "_gen"
GENERATED = ("chat_pb2.py", "chat_pb2.pyi", "chat_pb2_grpc.py")


def generate(out_dir: Path, *, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Write the stubs for chat.proto into out_dir and return their paths."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as raw:
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"--python_out={raw}",
            f"--pyi_out={raw}",
            f"--grpc_python_out={raw}",
            str(proto_root / PROTO_FILE),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto_root / PROTO_FILE}")
        written = []
        for name in GENERATED:
            text = (Path(raw) / "securechat" / "v1" / name).read_text()
            text = text.replace("from securechat.v1 import chat_pb2", "from securechat._gen import chat_pb2")
            target = out_dir / name
            target.write_text(text)
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(GEN_DIR):
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    sys.exit(0)
