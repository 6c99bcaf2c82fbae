"""The review gate in front of every new run (SPEC §4 step 2): who signed it, is it allowed, is now a good time.

Merging a pull request is the approval; the gate makes that approval checkable:

* **signatures** — the commits that declared or last changed an execution (and the
  catalog it takes its image from) carry a valid signature from an allowed signer,
  otherwise ``UnverifiedCommit``;
* **policy** — the reconciler's own configuration (never the watched repository) decides
  which images, namespaces, kinds and service accounts are acceptable, otherwise
  ``PolicyViolation`` naming the rule;
* **sync windows and concurrency** — outside an allow window, inside a deny window, or at
  the concurrent-run limit, new executions wait (``SyncWindowClosed``,
  ``ConcurrencyLimit``) and start when it opens.

Only executions that have not started are gated: a run that exists is followed whatever
the gate says now.  Verification errors fail closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from reconciler.declare.declared import Declaration, ResolvedExecution
from reconciler.errors import ReconcilerError
from reconciler.gate.policy import Policy, concurrency_allows, evaluate, summary, sync_window_decision
from reconciler.gate.windows import WindowDecision
from reconciler.source.signatures import SignatureVerifier

UNVERIFIED = "UnverifiedCommit"
POLICY = "PolicyViolation"
WINDOW = "SyncWindowClosed"
CONCURRENCY = "ConcurrencyLimit"
BLOCKING_REASONS = frozenset({UNVERIFIED, POLICY})


@dataclass(frozen=True)
class Block:
    reason: str
    message: str
    rules: tuple[str, ...] = ()


@dataclass
class Gate:
    policy: Policy | None = None
    verifier: SignatureVerifier | None = None

    def blocked(self, decl: Declaration, head: str) -> dict[str, Block]:
        """Executions that must not start at ``head``, with why (signatures, then policy)."""
        out: dict[str, Block] = {}
        if self.verifier is not None:
            try:
                for name, verdict in self.verifier.gate(decl, head).items():
                    if not verdict.valid:
                        out[name] = Block(UNVERIFIED, verdict.reason)
                out.update(self._catalog(decl, head, out))
            except ReconcilerError as e:  # fail closed: nothing new starts unverified
                for execution in decl.executions:
                    out[execution.name] = Block(UNVERIFIED, f"signature verification failed: {e}")
        if self.policy is not None:
            for execution in decl.executions:
                violations = evaluate(execution, self.policy)
                if violations and execution.name not in out:
                    out[execution.name] = Block(POLICY, summary(violations), tuple(v.rule for v in violations))
        return out

    def _catalog(self, decl: Declaration, head: str, already: dict[str, Block]) -> dict[str, Block]:
        """In files mode the catalog is part of what runs (it supplies images): the commit
        that last changed workflows/ must be verified too."""
        verifier = self.verifier
        if verifier is None or verifier.policy.mode != "files" or not decl.catalog:
            return {}
        source = verifier.source
        path = f"{source.path}/workflows" if source.path else "workflows"
        last = str(source._git().log("-1", "--format=%H", head, "--", path)).strip()
        if not last:
            return {}
        verdict = verifier.verify_commit(last)
        if verdict.valid:
            return {}
        message = f"the workflow catalog was last changed by an unverified commit: {verdict.reason}"
        return {e.name: Block(UNVERIFIED, message) for e in decl.executions if e.name not in already}

    def window(self, execution: ResolvedExecution, now: datetime) -> WindowDecision | None:
        if self.policy is None or not self.policy.sync_windows:
            return None
        return sync_window_decision(execution, self.policy, now)

    def concurrency_allows(self, running: int) -> bool:
        return self.policy is None or concurrency_allows(running, self.policy)
