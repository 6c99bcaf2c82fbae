"""The shapes the Git adapter reads out of text: commit ids, revisions, scp URLs, object ids.

Table-driven; the damage and redaction rules have their own tests (test_gitcache,
test_gitsource), through real git.
"""

from __future__ import annotations

import pytest

from reconciler.source.gitwords import is_commit_id, is_scp_url, object_ids, split_revision

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(("text", "expected"), [
    (SHA, True),
    (SHA + "\n", False),  # a pattern ending in $ with .match accepted this (the known bug, fixed)
    (SHA.upper(), False),  # git prints ids in lower case; a name in capitals is a ref, not an id
    (SHA[:-1], False),
    (SHA + "0", False),
    ("main", False),
    ("", False),
])
def test_a_commit_id_is_forty_lower_hex_digits_and_nothing_else(text: str, expected: bool) -> None:
    assert is_commit_id(text) is expected


@pytest.mark.parametrize(("rev", "expected"), [
    ("HEAD", ("HEAD", "")),
    ("HEAD~2^", ("HEAD", "~2^")),
    ("main^^", ("main", "^^")),
    ("release/1.2~10", ("release/1.2", "~10")),
    ("v1~x", ("v1~x", "")),  # not a suffix: the whole name stays the base
    ("", ("", "")),
])
def test_a_revision_splits_into_its_base_and_its_ancestry_suffix(rev: str, expected: tuple[str, str]) -> None:
    assert split_revision(rev) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("git@github.com:acme/repo.git", True),
    ("deploy.bot@git.example.org:team/repo", True),
    ("https://github.com/acme/repo.git", False),
    ("/srv/git/repo.git", False),
    ("repo@local", False),  # no ":path"
])
def test_an_scp_url_is_told_from_a_path(url: str, expected: bool) -> None:
    assert is_scp_url(url) is expected


def test_object_ids_are_the_distinct_full_ids_named_in_git_words() -> None:
    other = "f" * 40
    inside = "e" * 40
    text = f"error: unable to read {SHA}\nfatal: missing blob {other} (also {SHA}); short {SHA[:12]}; x{inside}y"
    assert object_ids(text) == [SHA, other]  # sorted, once each; an id inside a word is not one
