"""Commit-signature verification: the optional review gate of SPEC §4 step 2.

Merging a pull request is the approval, but anyone who can push to the tracked branch
(a leaked token, a misconfigured branch protection) could otherwise start remediations
on production.  With a policy configured, an execution only starts when the commit that
put its current content on the branch carries a valid SSH or GPG signature from an
allowed signer; otherwise it is held with reason ``UnverifiedCommit``.

Which commit must be signed:

* ``files`` — per execution file, the commit that last changed it as ``git log`` reports
  it (``origin.last_commit``; for a file never changed, the commit that introduced it).
  For a true merge that is the *feature-branch* commit, so an unsigned feature commit
  merged by a signed merge commit does not pass.  In addition, the commit on the tracked
  branch's first-parent chain that brought that change in (the merge commit, when the
  change arrived through a merge) must be signed too.  A squash or rebase merge puts
  new commits on the branch itself: those are the ones checked.
* ``head`` — as Flux: only the tip of the tracked branch, ignoring commits that only
  change ``<path>/status/`` (the reconciler's own unsigned write-back, which never
  changes what runs); every execution shares that one verdict.

Verification runs ``git log --format=%G?…`` in the bare cache with the allowed-signers
file passed through ``GIT_CONFIG_COUNT`` (appended after any entries in ``source.env``),
global and system git config ignored, and ``GNUPGHOME`` pointing at a private temporary
directory holding only the configured keyring (imported once, ultimately trusted), so
neither the host's keys nor its git config can make a signature pass.  Results are
cached per commit for as long as the trust material is unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from reconciler.declare.declared import Declaration
from reconciler.errors import ConfigError, GitCommandFailed, GitError
from reconciler.source import gitcmd
from reconciler.source.gitsource import GitSource

_SHA = re.compile(r"[0-9a-f]{40}", re.ASCII)  # a whole value: fullmatch
_MODES = ("off", "files", "head")
_TIMEOUT = 120.0


@dataclass(frozen=True)
class Verification:
    """The verdict for one commit. ``reason`` is a sentence for status messages."""

    commit: str
    valid: bool
    signer: str
    reason: str


@dataclass(frozen=True)
class SignaturePolicy:
    mode: Literal["off", "files", "head"] = "off"
    allowed_signers_file: Path | None = None  # git's gpg.ssh.allowedSignersFile format
    gpg_keyring: Path | None = None  # exported public keys (gpg --export [--armor])

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"signature mode must be one of {', '.join(_MODES)}, not {self.mode!r}")
        if self.mode != "off" and self.allowed_signers_file is None and self.gpg_keyring is None:
            raise ValueError(f"signature mode {self.mode!r} needs an allowed signers file or a GPG keyring")


class SignatureVerifier:
    """Verifies commits of ``source``'s cache repository against ``policy``."""

    def __init__(self, source: GitSource, policy: SignaturePolicy):
        self.source = source
        self.policy = policy
        self._cache: dict[str, Verification] = {}
        self._material = ""
        self._gnupg: Path | None = None
        self._fingerprints: frozenset[str] = frozenset()
        self._finalizer: weakref.finalize[..., SignatureVerifier] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Remove the private GNUPGHOME (also done when the verifier is collected)."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer, self._gnupg = None, None

    def __enter__(self) -> SignatureVerifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- verification --------------------------------------------------------------------

    def verify_commit(self, commit: str) -> Verification:
        return self.verify_commits([commit])[commit]

    def verify_commits(self, commits: Iterable[str]) -> dict[str, Verification]:
        """Verdicts for several commits (full shas or revisions), one ``git log`` for all new ones."""
        self._refresh_material()
        shas = {c: c if _SHA.fullmatch(c) else self.source.resolve(c) for c in commits}
        todo = list(dict.fromkeys(s for s in shas.values() if s not in self._cache))
        if todo:
            self._cache.update(self._run_log(todo))
        return {c: self._cache[s] for c, s in shas.items()}

    def gate(self, decl: Declaration, head: str) -> dict[str, Verification]:
        """Execution name → verdict. Executions whose verdict is not valid must not start."""
        if self.policy.mode == "off" or not decl.executions:
            return {}
        if self.policy.mode == "head":
            verdict = self.verify_commit(self._tip(head))
            return {e.name: verdict for e in decl.executions}
        merged_by = self._first_parent_changes(head)
        wanted: dict[str, list[str]] = {}
        for e in decl.executions:
            if e.origin is not None:
                last = e.origin.last_commit
                wanted[e.name] = list(dict.fromkeys([last, merged_by.get(e.file, last)]))
        verdicts = self.verify_commits(c for commits in wanted.values() for c in commits)
        result: dict[str, Verification] = {}
        for e in decl.executions:
            if e.name not in wanted:
                result[e.name] = Verification("", False, "", f"{e.file} has no commit history to verify")
                continue
            last, *merge = wanted[e.name]
            result[e.name] = verdicts[last]
            if verdicts[last].valid and merge and not verdicts[merge[0]].valid:
                bad = verdicts[merge[0]]
                result[e.name] = replace(bad, reason=f"{bad.reason}; it is the commit on {self.source.branch} "
                                         f"that merged {e.file}'s last change ({last[:12]})")
        return result

    # -- history -------------------------------------------------------------------------

    def _tip(self, head: str) -> str:
        """The newest first-parent commit at or before ``head`` that changed anything but status/."""
        status = f"{self.source.path}/status" if self.source.path else "status"
        try:
            found = self.source._git().log("--first-parent", "-1", "--format=%H", head, "--",
                                           ":(top)", f":(top,exclude){status}")
        except GitCommandFailed as e:
            raise GitError(f"cannot read history at {head[:12]}: {e.stderr or e}") from e
        return str(found).strip() or head

    def _first_parent_changes(self, head: str) -> dict[str, str]:
        """Execution file → the newest commit on the first-parent chain whose diff against
        its first parent touched it (the merge commit when the change came from a merge)."""
        executions = f"{self.source.path}/executions" if self.source.path else "executions"
        try:
            log = self.source._git().log("--first-parent", "--diff-merges=first-parent", "--no-renames",
                                         "--format=%x01%H", "--name-only", "-z", head, "--", executions)
        except GitCommandFailed as e:
            raise GitError(f"cannot read history at {head[:12]}: {e.stderr or e}") from e
        changes: dict[str, str] = {}
        for block in str(log).split("\x01"):
            sha, _, names = block.partition("\0")
            for name in names.split("\0"):
                if name.strip("\n"):
                    changes.setdefault(name.strip("\n"), sha)
        return changes

    # -- git and gpg ---------------------------------------------------------------------

    def _run_log(self, shas: list[str]) -> dict[str, Verification]:
        self.source._git()  # make sure the cache repository exists
        try:
            proc = gitcmd.run(
                ["log", "--no-walk=unsorted", "--format=%x01%H%x00%G?%x00%GK%x00%GS%x00%GF%x00%GP",
                 *shas, "--"],
                cwd=self.source.cache_path, env=self._env(), check=True, timeout=_TIMEOUT,
            )
        except subprocess.CalledProcessError as e:
            stderr = e.stderr.decode(errors="replace").strip()[:300]
            raise GitError(f"cannot verify commit signatures: {stderr}") from e
        except (OSError, subprocess.TimeoutExpired) as e:
            raise GitError(f"cannot verify commit signatures: {e}") from e
        found: dict[str, Verification] = {}
        for record in proc.stdout.decode(errors="replace").split("\x01"):
            fields = record.strip("\n").split("\0")
            if len(fields) == 6:
                found[fields[0]] = self._judge(*fields)
        missing = [s[:12] for s in shas if s not in found]
        if missing:
            raise GitError(f"git reported no signature status for {', '.join(missing)}")
        return found

    def _judge(self, sha: str, code: str, key: str, signer: str, fpr: str, primary: str) -> Verification:
        short = sha[:12]
        ssh = key.startswith("SHA256:")
        kind = "SSH" if ssh else "GPG"
        who = signer or key
        if code == "G" or (code == "U" and not ssh and {fpr, primary} & self._fingerprints):
            return Verification(sha, True, who, f"commit {short} has a good {kind} signature by {who} ({key})")
        sentences = {
            "N": f"commit {short} is not signed",
            "U": f"commit {short} is signed by an unknown key ({key}): not an allowed signer",
            "E": f"commit {short} is signed by an unknown key ({key}): not in the allowed signers or keyring",
            "B": f"commit {short} has a bad signature (altered after signing, or corrupt)",
            "X": f"commit {short} has a signature by {who} that has expired",
            "Y": f"commit {short} is signed by {who} with an expired key ({key})",
            "R": f"commit {short} is signed by {who} with a revoked key ({key})",
        }
        reason = sentences.get(code, f"commit {short} has an unrecognised signature status {code!r}")
        return Verification(sha, False, signer if code in ("X", "Y", "R") else "", reason)

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.source.env}
        env.pop("GIT_CONFIG_PARAMETERS", None)  # `git -c` of a parent process; it would override ours
        count = int(env.get("GIT_CONFIG_COUNT") or 0)
        signers = self.policy.allowed_signers_file
        ours = {
            "gpg.ssh.allowedSignersFile": str(signers.resolve()) if signers else os.devnull,
            "gpg.program": "gpg", "gpg.openpgp.program": "gpg", "gpg.x509.program": "gpgsm",
            "gpg.ssh.program": "ssh-keygen",
        }
        for index, (key, value) in enumerate(ours.items(), start=count):
            env[f"GIT_CONFIG_KEY_{index}"], env[f"GIT_CONFIG_VALUE_{index}"] = key, value
        env.update({"GIT_CONFIG_COUNT": str(count + len(ours)), "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_CONFIG_GLOBAL": os.devnull, "GNUPGHOME": str(self._gnupg_home())})
        return env

    def _refresh_material(self) -> None:
        """Drop cached verdicts and the imported keyring when the trust files change."""
        digest = hashlib.sha256()
        for label, path in (("ssh", self.policy.allowed_signers_file), ("gpg", self.policy.gpg_keyring)):
            if path is None:
                continue
            try:
                digest.update(label.encode() + b"\0" + path.read_bytes() + b"\0")
            except OSError as e:
                raise ConfigError(f"cannot read the {label} trust file {path}: {e.strerror or e}") from e
        if digest.hexdigest() != self._material:
            self._cache.clear()
            self.close()
            self._material = digest.hexdigest()

    def _gnupg_home(self) -> Path:
        """A private GNUPGHOME with only the configured keyring, every key ultimately trusted.
        Always used, even without a keyring, so the host's own keys never count."""
        if self._gnupg is not None:
            return self._gnupg
        home = Path(tempfile.mkdtemp(prefix="kgr-gnupg-"))  # short path: gpg socket names are limited
        self._finalizer = weakref.finalize(self, shutil.rmtree, home, True)
        (home / "gpg.conf").write_text("no-autostart\nno-auto-key-retrieve\n")
        try:
            fingerprints = self._import_keyring(home, self.policy.gpg_keyring)
        except ConfigError:
            self._finalizer()
            raise
        self._gnupg, self._fingerprints = home, frozenset(fingerprints)
        return home

    @classmethod
    def _import_keyring(cls, home: Path, keyring: Path | None) -> list[str]:
        """Import ``keyring`` into ``home``; trust its primary keys ultimately; their fingerprints."""
        if keyring is None:
            return []
        cls._gpg(home, "--import", str(keyring), what=f"cannot import the GPG keyring {keyring}")
        lines = cls._gpg(home, "--with-colons", "--fingerprint", "--list-keys").splitlines()
        fingerprints = [line.split(":")[9] for previous, line in itertools.pairwise(lines)
                        if previous.startswith("pub:") and line.startswith("fpr:")]
        if not fingerprints:
            raise ConfigError(f"the GPG keyring {keyring} holds no public key")
        cls._gpg(home, "--import-ownertrust", stdin="".join(f"{f}:6:\n" for f in fingerprints))
        return fingerprints

    @staticmethod
    def _gpg(home: Path, *args: str, stdin: str = "", what: str = "") -> str:
        try:
            proc = subprocess.run(["gpg", "--batch", "--no-tty", "--homedir", str(home), *args],
                                  input=stdin, capture_output=True, text=True, check=True, timeout=_TIMEOUT)
        except subprocess.CalledProcessError as e:
            said = " ".join(line for line in e.stderr.splitlines() if str(home) not in line)
            raise ConfigError(f"{what or f'gpg {args[0]} failed'}: {said.strip()[:300]}") from e
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ConfigError(f"cannot run gpg: {e}") from e
        return proc.stdout
