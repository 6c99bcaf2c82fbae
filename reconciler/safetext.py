"""Make repository-controlled text safe to show to a person: terminal, CI log, PR comment.

Almost every string the reconciler prints comes from a repository anyone with a pull
request can write to: file names (Git accepts any byte but NUL and ``/`` in a name,
including ``ESC`` and newline), execution names, messages quoting values, commit
subjects, status files.  Printed raw, such a string can clear or retitle the terminal
(``ESC[2J``, ``ESC]0;…BEL``), plant a hyperlink (OSC 8), overwrite the line it is on
(``\\r``, backspace), reorder what the reader sees (bidi overrides such as U+202E), forge
whole extra lines (``\\n``, U+2028), or — in a GitHub Actions log — run a workflow command
(a line ``::add-mask::…``, ``::error::…`` or ``::stop-commands::…``).

One rule covers all of it: every character a terminal or log viewer may *act on* instead
of *show* is replaced by a visible escape, the way Python's ``repr`` spells it (``\\n``,
``\\x1b``, ``\\u202e``).  Those are the Unicode categories Cc (C0 and C1 controls and DEL),
Cf (format characters: bidi embeddings, overrides and isolates, zero-width characters),
Cs (lone surrogates, which is how undecodable bytes of a file name arrive) and the
line and paragraph separators U+2028/U+2029.  Ordinary text — including every non-ASCII
letter — is returned unchanged, so output for ordinary names is byte-identical; the
escaped form is for reading, not a reversible encoding (a backslash is not escaped).

The other functions add each medium's own rules on top: :func:`guard` keeps a line from
being read as a GitHub Actions workflow command, :func:`gh_data`/:func:`gh_property`
encode annotation data as the runner expects, :func:`md_text`/:func:`md_code` keep text
inside one Markdown table cell, and :func:`json_safe` makes ``json.dumps(...,
ensure_ascii=False)`` output escape the characters JSON itself allows raw.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


@lru_cache(maxsize=4096)
def is_unsafe(char: str) -> bool:
    """True for a character a terminal or log viewer may act on rather than display."""
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def escape_char(char: str) -> str:
    """The visible spelling of one unsafe character: ``\\n``, ``\\x1b``, ``\\u202e``, ``\\U000e0001``."""
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def clean(value: object) -> str:
    """``str(value)`` with every unsafe character escaped visibly; unchanged when there is none."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # the fast path: no Cc/Cf/Cs/Zl/Zp (isprintable is stricter)
        return text
    return "".join(escape_char(c) if is_unsafe(c) else c for c in text)


# A line the Actions runner treats as a command: "::name ...::data" (after leading
# whitespace, which the runner trims) or the older "##[name ...]data" form.
_COMMAND_LINE = re.compile(r"^(\s*)(::|##\[)")


def guard(line: str) -> str:
    """Keep a line from being read as a workflow command: its leading ``:`` or ``#`` is escaped.

    Applied to every line the reconciler did not mean as a command, whether or not it runs
    in GitHub Actions: a text output or log copied into a CI step (``cat report.txt``) is
    read by the runner all the same.
    """
    match = _COMMAND_LINE.match(line)
    if match is None:
        return line
    indent, marker = match.groups()
    return f"{indent}{escape_char(marker[0])}{line[len(indent) + 1:]}"


def safe_line(value: object) -> str:
    """One output line built from untrusted parts: cleaned, then guarded."""
    return guard(clean(value))


def safe_lines(lines: Iterable[object]) -> str:
    """Lines joined with newlines, each cleaned and guarded: a value cannot start a line."""
    return "\n".join(safe_line(line) for line in lines)


def safe_block(text: str) -> str:
    """A multi-line message composed by the reconciler (an error with indented details).

    Its newlines are kept — they are the message's own layout — but every line is cleaned
    and guarded, so a value inside cannot add control characters or workflow commands.
    """
    return safe_lines(text.split("\n"))


# -- GitHub Actions workflow commands ----------------------------------------------------

def gh_data(text: str) -> str:
    """The data part of a workflow command (after ``::``), encoded as the runner decodes it:
    ``%`` → ``%25``, ``\\r`` → ``%0D``, ``\\n`` → ``%0A``; every other unsafe character is
    escaped visibly, because the runner's log viewer interprets ANSI sequences too."""
    return clean(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def gh_property(text: str) -> str:
    """A property value of a workflow command (``file=…``, ``title=…``): as :func:`gh_data`,
    plus ``:`` → ``%3A`` and ``,`` → ``%2C``, which would otherwise end the property."""
    return gh_data(text).replace(":", "%3A").replace(",", "%2C")


# -- Markdown (pull-request comments) -------------------------------------------------------

_MD_PUNCT = re.compile(r"([\\`*_\[\]|~])")


def md_text(text: str) -> str:
    """Text for a Markdown table cell or list item that renders as exactly that text.

    Control characters and newlines are escaped first (a newline would end the table row);
    ``<``, ``>`` and ``&`` become entities (no HTML, no autolinks through ``<…>``); the
    Markdown punctuation that could start emphasis, code, links or strike-through, and
    ``|`` (a cell boundary), are backslash-escaped.
    """
    escaped = _MD_PUNCT.sub(r"\\\1", clean(text))
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_code(text: str, *, in_table: bool = True) -> str:
    """``text`` as an inline code span that stays inside its table cell.

    Inside a code span Markdown applies no escapes, so a backtick in the text is handled by
    a longer fence (CommonMark: the span ends at a backtick run of the same length), and in
    a table ``|`` is written ``\\|`` (GFM splits cells before parsing code spans, and takes
    ``\\|`` there as a literal pipe); a backslash run right before a ``|`` is doubled so it
    cannot pair with that escape (cmark-gfm reads ``\\\\|`` as an escaped backslash and a
    cell boundary).  ``<`` needs nothing: code spans are never HTML.
    """
    body = clean(text)
    if in_table:
        body = re.sub(r"\\+(?=\|)", lambda m: m.group() * 2, body).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * (longest + 1)
    if longest and (body.startswith("`") or body.endswith("`")):
        body = f" {body} "
    return f"{fence}{body}{fence}"


# -- JSON ---------------------------------------------------------------------------------

def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_safe(encoded: str) -> str:
    """Escape, inside JSON text, the characters ``json.dumps(..., ensure_ascii=False)`` leaves
    raw: DEL, C1 controls, format characters, line separators, lone surrogates.  JSON's own
    syntax is ASCII and ``json.dumps`` escapes C0 controls inside strings itself, so such a
    character can only be inside a string, where ``\\uXXXX`` (a surrogate pair above
    U+FFFF) decodes to the very same value.  Layout whitespace (``indent=``) is kept."""
    if encoded.isprintable():
        return encoded
    return "".join(_json_escape(c) if ord(c) >= 0x20 and is_unsafe(c) else c for c in encoded)
