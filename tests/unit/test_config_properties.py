"""Property tests for the config loaders: any YAML gives a config or one ConfigError, never a crash.

A ConfigError carries every problem of the file; each is one line naming the file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from securechat.config import SERVER_KEYS, load_client_config, load_server_config
from securechat.errors import ConfigError

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True), st.text(max_size=30)
)
keys = st.one_of(st.sampled_from([*SERVER_KEYS, "cert", "key", "client_ca", "mtls", "allow", "level", "format", "target", "ca",
                                  "max_text_length", "queue_size", "history_size", "time_seconds", "max_ping_strikes"]), st.text(max_size=12))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)), max_leaves=20)


def load(loader, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            loader(path)
        except ConfigError as exc:
            message = str(exc)
            assert exc.problems and message.splitlines() == [str(problem) for problem in exc.problems]
            for line in message.splitlines():
                assert line.startswith("config.yaml: ")
            assert "Traceback" not in message


@settings(max_examples=300, deadline=None)
@given(document=documents)
def test_any_yaml_structure_loads_or_raises_one_config_error(document):
    """Mappings, lists and scalars in any shape: a ServerConfig/ClientConfig or a ConfigError, one line per problem."""
    text = yaml.safe_dump(document, allow_unicode=True)
    load(load_server_config, text)
    load(load_client_config, text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_loads_or_raises_one_config_error(text):
    """Arbitrary text (broken YAML, tabs, control characters) is a ConfigError naming the file, not a traceback."""
    load(load_server_config, text)
    load(load_client_config, text)
