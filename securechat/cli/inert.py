"""Other people's text, made safe to print: the ONE function every renderer uses.

Everything the CLI shows that another party controls (a chat message, a
sender or room name, a server's error details, a certificate's subject or
SANs, a name in index.json) goes through `inert()` before it reaches a
terminal, a pipe or a log file:

- C0 and C1 control characters, DEL, and so every ANSI/VT escape sequence
  (ESC, CSI, OSC 0 window titles, OSC 8 hyperlinks), are shown as `\\x1b`,
  `\\x9b`, ...: the terminal never receives them;
- newlines, carriage returns and the Unicode line/paragraph separators are
  shown as `\\n`, `\\r`, `\\u2028`: one message is one line, so a newline
  cannot start a line that looks like it came from someone else;
- bidirectional overrides, embeddings and isolates (the "Trojan Source"
  characters, CVE-2021-42574), and invisible format characters that hide
  text (tag characters, the BOM, interlinear annotations) are shown as
  `\\u202e`, ...: text reads in the order it is stored;
- lone surrogates (which a UTF-8 terminal cannot print) are shown likewise.

What it does not do: markup. Rich markup (`[bold]`, `[link=...]`) and
prompt_toolkit HTML are only interpreted when a renderer asks for it, so
renderers print the result as plain text (`rich.text.Text`, prompt_toolkit
`FormattedText` tuples, `markup=False`), never as markup. Printable text,
emoji (with their joiners and variation selectors) and every script are
left as they are.
"""

from __future__ import annotations

import re

# One pass, one class: C0 controls, DEL and C1 controls; Arabic letter mark
# and LRM/RLM; line and paragraph separators; the bidi embeddings and
# overrides U+202A-U+202E and isolates U+2066-U+2069; the BOM / zero-width
# no-break space; interlinear annotation controls; tag characters; surrogates.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ufff9-\ufffb\U000e0000-\U000e007f\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def inert(text: str) -> str:
    """TEXT with every control, escape, line-breaking and bidi character shown as a visible escape."""
    if _UNSAFE.search(text) is None:  # the usual case: nothing to do
        return text
    return _UNSAFE.sub(_visible, text)
