"""What git's words mean: which of them say the local cache is damaged, and which must
never be shown (credentials in URLs, headers and assignments).

Every message git prints passes through here before it reaches an error, a log or a
status: :func:`clean_stderr` and :func:`redact_text` take out anything that looks like a
credential, and :func:`suspect` tells whether the words point at the *local* object
database or refs (a deleted pack, a truncated object, a ref to nothing) rather than the
network — only that makes the cache heal itself (:mod:`reconciler.source.gitcache`), so an
outage never costs a re-clone.  The revision and URL shapes the source accepts are here
too: this module is the one place in the Git adapter that reads text with regular
expressions.  Pure functions of strings; no git is run here.
"""

from __future__ import annotations

import re

from reconciler.errors import GitCommandFailed

_COMMIT_ID = re.compile(r"[0-9a-f]{40}", re.ASCII)
_OBJECT_ID = re.compile(r"\b[0-9a-f]{40}\b", re.ASCII)
_REV_SUFFIX = re.compile(r"(.*?)((?:[~^][0-9]*)*)", re.ASCII | re.DOTALL)
_SCP_URL = re.compile(r"[\w.-]+@[\w.-]+:")


def is_commit_id(text: str) -> bool:
    """A full 40-hex commit id, nothing before or after it."""
    return _COMMIT_ID.fullmatch(text) is not None


def object_ids(text: str) -> list[str]:
    """The distinct 40-hex object ids named in ``text`` (git's words), sorted."""
    return sorted(set(_OBJECT_ID.findall(text)))


def split_revision(rev: str) -> tuple[str, str]:
    """(base, its ``~N``/``^N`` suffix): ``HEAD~2^`` → (``HEAD``, ``~2^``)."""
    found = _REV_SUFFIX.fullmatch(rev)
    assert found is not None  # the pattern matches any text
    return found.group(1), found.group(2)


def is_scp_url(url: str) -> bool:
    """``user@host:path``: a Git URL in scp form, not a local path."""
    return _SCP_URL.match(url) is not None


# What git prints when the *local* object database or refs are damaged (a deleted or
# truncated pack, a corrupt loose object, a ref to a missing object, a broken pack index).
# A network failure prints none of these; lines from the other side ("remote: ...") are
# not considered.  A match is only a suspicion: it is confirmed locally (fsck, cat-file)
# before the cache is rebuilt.
_DAMAGE = re.compile("|".join([
    r"packfile \S+ cannot be accessed", r"packed object \S+ .*is corrupt", r"loose object \S+ .*is corrupt",
    r"corrupt loose object", r"corrupt packed object", r"\bbad (?:tree |commit |tag |blob )?object\b",
    r"missing (?:blob|tree|commit|tag) [0-9a-f]{7,}", r"did not send all necessary objects",
    r"unable to read (?:tree |commit |blob |tag |sha1 file |object )?[0-9a-f]{7,}", r"unable to unpack",
    r"inflate: data stream error", r"object file \S+ is empty", r"does not point to a valid object",
    r"invalid sha1 pointer", r"index file \S+ is too small", r"non-monotonic index", r"bad pack(?:file)? ",
    r"packfile \S+ does not match index", r"unable to parse object", r"could not read [0-9a-f]{40}",
    r"broken link from", r"not a git repository", r"unable to open object pack directory",
]), re.IGNORECASE)


def suspect(stderr: str) -> str:
    """The line of git's stderr that suggests a damaged cache, or ""."""
    for line in stderr.splitlines():
        if not line.lstrip().lower().startswith("remote:") and _DAMAGE.search(line):
            return line.strip()
    return ""


# Where a URL can carry a credential: the user-info (``https://oauth2:TOKEN@host``, a
# password with an unencoded "/" included) and the query string.  Every query *value* of
# a URL is redacted, not only the ones with credential-like names: a Git remote is
# identified by its host and path, and the names used for tokens are open-ended
# (``private_token``, ``access_token``, ``sig``, ``X-Amz-Signature``, ...).
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^:/?#\s@'\"<>`]*(?::[^\s'\"<>`]*)?@")
_QUERY_VALUE = re.compile(r"([?&;][^=&#;]*=)[^&#;]*")
_SCP_PASSWORD = re.compile(r"^[^@/\s:]+:[^@\s]*@(?=[^:/\s]+:)")  # user:token@host:path
# credential-looking assignments and headers anywhere in git's output (GIT_TRACE, curl)
_CREDENTIAL_WORDS = r"(?:token|password|passwd|secret|key|signature|credential)"
_ASSIGNMENT = re.compile(rf"(?i)\b([\w.-]*{_CREDENTIAL_WORDS}[\w.-]*\s*[=:]\s*)(?!\*\*\*)[^\s&'\",;]+")
_AUTH_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization:\s*)(?:(?:basic|bearer|token)\s+)?[^\s'\"]+")


def _redact_one_url(url: str) -> str:
    url = _USERINFO.sub(r"\1***@", url)
    head, mark, rest = url.partition("?")
    return head + mark + _QUERY_VALUE.sub(r"\1***", "?" + rest)[1:] if mark else url


def redact_url(url: str) -> str:
    """The URL without any user, password or token (safe for logs, errors, status)."""
    if "://" not in url:
        return _SCP_PASSWORD.sub("***@", url)  # git@host:path keeps its (public) user
    return _redact_one_url(url)


def redact_text(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` (an error message, git's stderr) with every credential it may carry
    replaced by ``***``: user-info and query values of URLs, ``Authorization`` headers,
    ``token=``/``password:``-style assignments, and the literal ``secrets`` given."""
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_IN_TEXT.sub(lambda m: _redact_one_url(m.group(0)), text)
    text = _USERINFO.sub(r"\1***@", text)  # a password holding a space or a quote
    text = _AUTH_HEADER.sub(r"\1***", text)
    return _ASSIGNMENT.sub(r"\1***", text)


def clean_stderr(error: GitCommandFailed, url: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """git's stderr, shortened, with every credential redacted (``url`` and ``secrets``
    literally, then anything that looks like one) — safe for errors, logs and status."""
    text = (error.stderr or str(error)).strip().replace("stderr:", "").strip(" '\n")
    extra = [url] if url and url != redact_url(url) else []
    for literal in extra:
        text = text.replace(literal, redact_url(literal))
    return redact_text(text, secrets)[:500]
