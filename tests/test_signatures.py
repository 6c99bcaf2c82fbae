"""The signature gate against real keys and real repositories (ssh-keygen, gpg, git)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.errors import ConfigError
from reconciler.source.gitsource import GitSource
from reconciler.source.signatures import SignaturePolicy, SignatureVerifier, Verification
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git


@dataclass(frozen=True)
class Keys:
    alice: Path  # private key of an allowed signer
    mallory: Path  # private key nobody allowed
    allowed: Path  # allowed-signers file naming alice only


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("keys")
    for who in ("alice", "mallory"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / who),
                        "-C", f"{who}@example.com"], check=True)
    public = " ".join((base / "alice.pub").read_text().split()[:2])
    allowed = base / "allowed_signers"
    allowed.write_text(f'alice@example.com namespaces="git" {public}\n')
    return Keys(base / "alice", base / "mallory", allowed)


def commit(repo: WorkRepo, message: str, key: Path | None, files: dict[str, str] | None = None) -> str:
    """Commit ``files``, SSH-signed with ``key`` or unsigned."""
    for rel, text in (files or {}).items():
        repo.write(rel, text)
    repo.git("add", "-A")
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}.pub", "commit", "-S"] if key else \
        ["commit", "--no-gpg-sign"]
    repo.git(*sign, "-q", "--allow-empty", "-m", message)
    return repo.git("rev-parse", "HEAD")


def exe(name: str) -> str:
    return execution_yaml(name, target=f"payments/Deployment/{name}")


def gate(repo: WorkRepo, cache_dir: Path, policy: SignaturePolicy) -> dict[str, Verification]:
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    head = source.fetch()
    decl = source.load(head)
    assert decl.valid, decl.problems
    with SignatureVerifier(source, policy) as verifier:
        return verifier.gate(decl, head)


@pytest.fixture
def repo(make_repo: Callable[[str], WorkRepo], keys: Keys) -> WorkRepo:
    r = make_repo("repo")
    commit(r, "catalog", keys.alice, {"workflows/w.yaml": CATALOG})
    return r


# -- single commits ------------------------------------------------------------------------

def _tamper(repo: WorkRepo, keys: Keys) -> str:
    signed = commit(repo, "approved change", keys.alice, {"executions/a.yaml": exe("a")})
    body = repo.git("cat-file", "commit", signed).replace("approved change", "forged change") + "\n"
    forged = subprocess.run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], cwd=repo.path, input=body,
                            text=True, capture_output=True, check=True).stdout.strip()
    repo.git("update-ref", "refs/heads/main", forged)
    return forged


CASES: list[tuple[str, Callable[[WorkRepo, Keys], str], bool, str, str]] = [
    ("allowed signer", lambda r, k: commit(r, "ok", k.alice, {"executions/a.yaml": exe("a")}),
     True, "alice@example.com", "good SSH signature by alice@example.com (SHA256:"),
    ("unsigned", lambda r, k: commit(r, "plain", None, {"executions/a.yaml": exe("a")}),
     False, "", "is not signed"),
    ("unknown key", lambda r, k: commit(r, "evil", k.mallory, {"executions/a.yaml": exe("a")}),
     False, "", "is signed by an unknown key (SHA256:"),
    ("altered after signing", _tamper, False, "", "has a bad signature"),
]


@pytest.mark.parametrize(("label", "make", "valid", "signer", "reason"), CASES, ids=[c[0] for c in CASES])
def test_verify_commit(repo: WorkRepo, keys: Keys, cache_dir: Path, label: str,
                       make: Callable[[WorkRepo, Keys], str], valid: bool, signer: str, reason: str) -> None:
    sha = make(repo, keys)
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    assert source.fetch() == sha
    with SignatureVerifier(source, SignaturePolicy("files", allowed_signers_file=keys.allowed)) as verifier:
        verdict = verifier.verify_commit(sha)
        assert (verdict.commit, verdict.valid, verdict.signer) == (sha, valid, signer), verdict
        assert reason in verdict.reason and sha[:12] in verdict.reason
        assert verifier.verify_commit("main") == verdict  # a revision resolves to the same cached verdict
        assert gate(repo, cache_dir / "2", SignaturePolicy("files", allowed_signers_file=keys.allowed)) == \
            {"a": verdict}


# -- modes ---------------------------------------------------------------------------------

def test_head_mode_checks_only_the_tip_files_mode_every_file(repo: WorkRepo, keys: Keys, cache_dir: Path) -> None:
    old = commit(repo, "unsigned old", None, {"executions/a.yaml": exe("a")})
    tip = commit(repo, "signed tip", keys.alice, {"executions/b.yaml": exe("b")})
    head = gate(repo, cache_dir, SignaturePolicy("head", allowed_signers_file=keys.allowed))
    assert {n: (v.commit, v.valid) for n, v in head.items()} == {"a": (tip, True), "b": (tip, True)}
    files = gate(repo, cache_dir, SignaturePolicy("files", allowed_signers_file=keys.allowed))
    assert {n: (v.commit, v.valid) for n, v in files.items()} == {"a": (old, False), "b": (tip, True)}
    assert files["a"].reason == f"commit {old[:12]} is not signed"


def test_head_mode_skips_status_only_commits_but_not_others(repo: WorkRepo, keys: Keys, cache_dir: Path) -> None:
    signed = commit(repo, "signed", keys.alice, {"executions/a.yaml": exe("a")})
    commit(repo, "reconciler status write-back", None, {"status/a.yaml": "status: {}\n"})
    policy = SignaturePolicy("head", allowed_signers_file=keys.allowed)
    verdict = gate(repo, cache_dir, policy)["a"]
    assert (verdict.commit, verdict.valid, verdict.signer) == (signed, True, "alice@example.com")
    readme = commit(repo, "unsigned docs change", None, {"README.md": "hello\n"})
    verdict = gate(repo, cache_dir, policy)["a"]
    assert (verdict.commit, verdict.valid) == (readme, False)


def test_mode_off_and_policy_validation(repo: WorkRepo, keys: Keys, cache_dir: Path) -> None:
    commit(repo, "unsigned", None, {"executions/a.yaml": exe("a")})
    assert gate(repo, cache_dir, SignaturePolicy()) == {}
    with pytest.raises(ValueError, match="allowed signers file or a GPG keyring"):
        SignaturePolicy("files")
    with pytest.raises(ValueError, match="must be one of"):
        SignaturePolicy("tip", allowed_signers_file=keys.allowed)  # type: ignore[arg-type]


# -- merges --------------------------------------------------------------------------------

def _merge(repo: WorkRepo, keys: Keys, feature_key: Path | None, merge_key: Path | None,
           squash: bool = False) -> tuple[str, str]:
    repo.git("checkout", "-q", "-b", "feature")
    feature = commit(repo, "feature", feature_key, {"executions/c.yaml": exe("c")})
    repo.git("checkout", "-q", "main")
    commit(repo, "main moves on", keys.alice, {"executions/d.yaml": exe("d")})  # so the merge is not a fast-forward
    if squash:
        repo.git("merge", "-q", "--squash", "feature")
        return feature, commit(repo, "squashed feature", merge_key)
    if merge_key:
        repo.git("-c", "gpg.format=ssh", "-c", f"user.signingkey={merge_key}.pub",
                 "merge", "-q", "--no-ff", "-S", "-m", "merge feature", "feature")
    else:
        repo.git("merge", "-q", "--no-ff", "--no-gpg-sign", "-m", "merge feature", "feature")
    return feature, repo.git("rev-parse", "HEAD")


def test_merge_commit_does_not_launder_an_unsigned_feature_commit(repo: WorkRepo, keys: Keys,
                                                                    cache_dir: Path) -> None:
    feature, merge = _merge(repo, keys, feature_key=None, merge_key=keys.alice)
    verdicts = gate(repo, cache_dir, SignaturePolicy("files", allowed_signers_file=keys.allowed))
    assert (verdicts["c"].commit, verdicts["c"].valid) == (feature, False)
    assert verdicts["d"].valid
    head = gate(repo, cache_dir, SignaturePolicy("head", allowed_signers_file=keys.allowed))
    assert (head["c"].commit, head["c"].valid) == (merge, True)  # head mode trusts the signed tip, as Flux does


def test_unsigned_merge_of_a_signed_feature_commit_fails(repo: WorkRepo, keys: Keys, cache_dir: Path) -> None:
    _, merge = _merge(repo, keys, feature_key=keys.alice, merge_key=None)
    verdicts = gate(repo, cache_dir, SignaturePolicy("files", allowed_signers_file=keys.allowed))
    assert (verdicts["c"].commit, verdicts["c"].valid) == (merge, False)
    assert "not signed" in verdicts["c"].reason and "that merged executions/c.yaml" in verdicts["c"].reason
    assert verdicts["d"].valid


def test_signed_merge_of_signed_feature_commit_passes(repo: WorkRepo, keys: Keys, cache_dir: Path) -> None:
    feature, _ = _merge(repo, keys, feature_key=keys.alice, merge_key=keys.alice)
    verdicts = gate(repo, cache_dir, SignaturePolicy("files", allowed_signers_file=keys.allowed))
    assert (verdicts["c"].commit, verdicts["c"].valid, verdicts["d"].valid) == (feature, True, True)


@pytest.mark.parametrize(("feature_by", "squash_by", "valid"), [
    ("mallory", "alice", True),  # the feature branch's own commits never reach main: only the squash counts
    ("alice", None, False),
])
def test_squash_commit_is_what_counts(repo: WorkRepo, keys: Keys, cache_dir: Path, feature_by: str,
                                      squash_by: str | None, valid: bool) -> None:
    _, squashed = _merge(repo, keys, feature_key=getattr(keys, feature_by),
                         merge_key=getattr(keys, squash_by) if squash_by else None, squash=True)
    verdicts = gate(repo, cache_dir, SignaturePolicy("files", allowed_signers_file=keys.allowed))
    assert (verdicts["c"].commit, verdicts["c"].valid) == (squashed, valid)


# -- trust material and isolation ----------------------------------------------------------

def test_existing_git_config_entries_and_global_config_cannot_widen_trust(
        repo: WorkRepo, keys: Keys, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evil = commit(repo, "evil", keys.mallory, {"executions/a.yaml": exe("a")})
    everyone = tmp_path / "everyone"
    everyone.write_text("".join(f'{p.name[:-4]}@example.com {" ".join(p.read_text().split()[:2])}\n'
                                for p in (keys.alice.with_suffix(".pub"), keys.mallory.with_suffix(".pub"))))
    global_config = tmp_path / "gitconfig"
    global_config.write_text(f"[gpg \"ssh\"]\n\tallowedSignersFile = {everyone}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_config))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'gpg.ssh.allowedSignersFile'='{everyone}'")  # as under `git -c`
    env = {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": "gpg.ssh.allowedSignersFile", "GIT_CONFIG_VALUE_0": str(everyone),
           "GIT_CONFIG_KEY_1": "core.quotePath", "GIT_CONFIG_VALUE_1": "false"}
    source = GitSource(str(repo.path), cache_dir=cache_dir, env=env)
    source.fetch()
    with SignatureVerifier(source, SignaturePolicy("files", allowed_signers_file=keys.allowed)) as verifier:
        assert not verifier.verify_commit(evil).valid
    with SignatureVerifier(source, SignaturePolicy("files", allowed_signers_file=everyone)) as verifier:
        assert verifier.verify_commit(evil).valid  # the same commit passes once its key is allowed


def test_cache_is_dropped_when_the_allowed_signers_change(repo: WorkRepo, keys: Keys, cache_dir: Path,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = commit(repo, "by mallory", keys.mallory, {"executions/a.yaml": exe("a")})
    allowed = tmp_path / "allowed"
    allowed.write_text(keys.allowed.read_text())
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    source.fetch()
    calls: list[object] = []
    real_run = subprocess.run

    def counting_run(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real_run(*args, **kwargs)  # type: ignore[call-overload]

    with SignatureVerifier(source, SignaturePolicy("files", allowed_signers_file=allowed)) as verifier:
        monkeypatch.setattr(subprocess, "run", counting_run)
        assert not verifier.verify_commit(sha).valid
        assert not verifier.verify_commit(sha).valid
        assert len(calls) == 1  # the second answer came from the cache
        mallory = " ".join(keys.mallory.with_suffix(".pub").read_text().split()[:2])
        allowed.write_text(allowed.read_text() + f"mallory@example.com {mallory}\n")
        assert verifier.verify_commit(sha).signer == "mallory@example.com"
        allowed.unlink()
        with pytest.raises(ConfigError, match="cannot read the ssh trust file"):
            verifier.verify_commit(sha)


# -- GPG -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpgKey:
    home: Path  # GNUPGHOME holding the secret key
    fingerprint: str
    keyring: Path  # its exported public key


@pytest.fixture(scope="module")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GpgKey]]:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (apt-get install -y gnupg): GPG signatures untested")
    made: dict[str, GpgKey] = {}
    try:
        for who in ("bob", "eve"):
            home = Path(tempfile.mkdtemp(prefix=f"kgr-test-{who}-"))  # short: gpg-agent socket paths are limited
            gpg = ["gpg", "--batch", "--homedir", str(home)]
            subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", f"{who} <{who}@example.com>",
                            "ed25519", "sign", "never"], check=True, capture_output=True)
            listing = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True,
                                     text=True).stdout
            fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
            keyring = tmp_path_factory.mktemp("gpg") / f"{who}.asc"
            keyring.write_bytes(subprocess.run([*gpg, "--armor", "--export", fingerprint], check=True,
                                               capture_output=True).stdout)
            made[who] = GpgKey(home, fingerprint, keyring)
        yield made
    finally:
        for key in made.values():
            subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "gpg-agent"], check=False)
            shutil.rmtree(key.home, ignore_errors=True)


def gpg_commit(repo: WorkRepo, key: GpgKey, message: str, monkeypatch: pytest.MonkeyPatch,
               files: dict[str, str]) -> str:
    monkeypatch.setenv("GNUPGHOME", str(key.home))  # the signer's own home stays set while verifying
    for rel, text in files.items():
        repo.write(rel, text)
    git(repo.path, "add", "-A")
    git(repo.path, "-c", "gpg.format=openpgp", "-c", f"user.signingkey={key.fingerprint}",
        "commit", "-q", "-S", "-m", message)
    return repo.git("rev-parse", "HEAD")


def test_gpg_signatures(repo: WorkRepo, keys: Keys, cache_dir: Path, gpg_keys: dict[str, GpgKey],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    bob = gpg_commit(repo, gpg_keys["bob"], "by bob", monkeypatch, {"executions/a.yaml": exe("a")})
    eve = gpg_commit(repo, gpg_keys["eve"], "by eve", monkeypatch, {"executions/b.yaml": exe("b")})
    ssh = commit(repo, "by alice over ssh", keys.alice, {"executions/c.yaml": exe("c")})
    both = SignaturePolicy("files", allowed_signers_file=keys.allowed, gpg_keyring=gpg_keys["bob"].keyring)
    verdicts = gate(repo, cache_dir, both)
    assert {n: (v.commit, v.valid) for n, v in verdicts.items()} == {"a": (bob, True), "b": (eve, False),
                                                                     "c": (ssh, True)}
    assert verdicts["a"].signer == "bob <bob@example.com>"
    assert "good GPG signature by bob <bob@example.com>" in verdicts["a"].reason
    assert "unknown key" in verdicts["b"].reason
    ssh_only = gate(repo, cache_dir, SignaturePolicy("files", allowed_signers_file=keys.allowed))
    assert not ssh_only["a"].valid  # the signer's GNUPGHOME in the environment is never consulted
    gpg_only = gate(repo, cache_dir, SignaturePolicy("files", gpg_keyring=gpg_keys["bob"].keyring))
    assert (gpg_only["a"].valid, gpg_only["c"].valid) == (True, False)  # no allowed signers: SSH never passes


def test_unusable_gpg_keyring_is_a_configuration_error_and_leaves_nothing_behind(
        repo: WorkRepo, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (apt-get install -y gnupg)")
    sha = commit(repo, "x", None)
    source = GitSource(str(repo.path), cache_dir=cache_dir)
    source.fetch()
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: str, **kwargs: str) -> str:
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    (tmp_path / "empty.asc").write_text("")
    with SignatureVerifier(source, SignaturePolicy("files", gpg_keyring=tmp_path / "empty.asc")) as verifier, \
            pytest.raises(ConfigError, match=r"cannot import the GPG keyring .*empty.asc: gpg: no valid OpenPGP data"):
        verifier.verify_commit(sha)
    assert made and not any(os.path.exists(p) for p in made)
    with SignatureVerifier(source, SignaturePolicy("files", gpg_keyring=tmp_path / "absent.asc")) as verifier, \
            pytest.raises(ConfigError, match="cannot read the gpg trust file"):
        verifier.verify_commit(sha)
