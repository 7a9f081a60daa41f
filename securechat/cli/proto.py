"""`securechat proto`: write the wire API's .proto files, for other languages' code generators."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.output import reports_errors
from securechat.errors import FileExistsRefused, SecureChatError

PROTOS = ("securechat/v1/chat.proto", "securechat/ca/v1/ca.proto")
"""The proto paths, as protoc and server reflection name them."""


@reports_errors
def proto(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the .proto files into.", metavar="DIR")],
    force: Annotated[bool, typer.Option("--force", help="Replace files that exist.")] = False,
) -> None:
    """Write the .proto files of the chat and CA services (as shipped in this package).

    They keep their proto paths (DIR/securechat/v1/chat.proto, ...), so protoc
    is run with -I DIR, the way grpcurl and other languages expect.

    \b
    Examples:
      securechat proto --out proto
      protoc -I proto --go_out=. --go-grpc_out=. proto/securechat/v1/chat.proto
    """
    shipped = resources.files("securechat") / "protos"
    targets = [out / name for name in PROTOS]
    if not force:
        for target in targets:
            if target.exists():
                raise FileExistsRefused(target)
    for name, target in zip(PROTOS, targets, strict=True):
        source = shipped.joinpath(*name.split("/"))
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise SecureChatError(
                f"{name} is missing from this installation ({exc.strerror}). Reinstall securechat."
            ) from exc
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except OSError as exc:
            raise SecureChatError(
                f"{target} could not be written ({exc.strerror}). Check the directory and its permissions."
            ) from exc
        typer.echo(f"wrote {target}")
    typer.echo(f"Generate code with: protoc -I {out} ... {targets[0]}")
