"""Notifications (reconciler.service.notify): routing rules, the Slack message, the signed webhook
verified by a real receiver, the configuration's rules and checks — and, end to end, the
real service sending commit statuses, a webhook and a Slack message for one execution."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from reconciler.declare.names import run_name
from reconciler.errors import ConfigError
from reconciler.service.app import check
from reconciler.service.config import describe, load_config
from reconciler.service.config_model import RouteRule
from reconciler.service.delivery_event import Event, event_id, matches
from reconciler.service.notify import SlackNotifications, WebhookNotifications, slack_message, verify, webhook_request
from tests.conftest import WorkRepo, execution_yaml
from tests.fakeforge import FakeForge, FakeReceiver
from tests.test_delivery import TOKEN, declare, notifier, result, state
from tests.test_service import World, service_world

HOOK_SECRET = "hmac-key-for-notify-tests-0123456789"
SECRETS = (TOKEN, HOOK_SECRET, "slacksecretpathvalue0123")


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        for secret in SECRETS:
            assert secret not in text, f"a credential reached the log: {record.getMessage()[:200]}"


def ev(phase: str = "Failed", reason: str = "OOMKilled", **kw: Any) -> Event:
    base: dict[str, Any] = {"workflow": "increase-memory-limit@1.2.0", "target": "payments/Deployment/api",
                            "namespace": "payments", "labels": {"team": "payments", "tier": "1"}}
    base.update(kw)
    return Event(event_id("oom", phase, reason), "oom", "Running", phase, reason, **base)


@pytest.mark.parametrize(("rules", "event", "expected"), [
    ([], ev(), True),  # no rules: everything
    ([{"phases": ["Failed"]}], ev(), True),
    ([{"phases": ["Failed"]}], ev("Completed", ""), False),
    ([{"phases": ["Failed"], "reasons": ["Dead*"]}], ev(), False),
    ([{"reasons": ["OOM*", "TaskFailed"]}], ev(), True),
    ([{"workflows": ["increase-*"]}], ev(), True),
    ([{"workflows": ["rollback-*"]}], ev(), False),
    ([{"namespaces": ["pay*"]}], ev(), True),
    ([{"namespaces": ["kube-system"]}], ev(), False),
    ([{"labels": {"team": "payments"}}], ev(), True),
    ([{"labels": {"team": "payments", "tier": "2"}}], ev(), False),  # every label must match
    ([{"phases": ["Skipped"]}, {"labels": {"team": "payments"}}], ev(), True),  # any rule
    ([{"phases": ["Failed"], "namespaces": ["payments"], "workflows": ["increase-memory-limit"]}], ev(), True),
])
def test_routing(rules: list[dict[str, Any]], event: Event, expected: bool) -> None:
    assert matches([RouteRule.model_validate(r) for r in rules], event) is expected


def test_slack_message_is_readable_and_escaped() -> None:
    event = ev(run="wfe-1", failed_task="patch", failed_step="apply",
               summary="The step ran out of memory <!channel> & more", message="ignored when a summary exists")
    text = slack_message(event, "https://kubernaut.example.com/executions/oom")["text"]
    assert text.splitlines()[0] == (":x: *Failed*: oom — increase-memory-limit@1.2.0 on payments/Deployment/api")
    assert "reason OOMKilled · run wfe-1 · failed in patch / apply" in text
    assert "&lt;!channel&gt; &amp; more" in text and "<!channel>" not in text  # no mention, no forged link
    assert text.endswith("<https://kubernaut.example.com/executions/oom|Open oom in the dashboard>")
    assert slack_message(event, "") == slack_message(event, "")  # the same transition, the same bytes


def test_webhook_signature_is_verifiable() -> None:
    request = webhook_request("https://r.example/hook", HOOK_SECRET, ev(), "")
    assert request.body is not None
    signature = request.header("X-Kubernaut-Signature-256")
    assert verify(HOOK_SECRET.encode(), request.body, signature)
    assert not verify(b"another key", request.body, signature)
    assert not verify(HOOK_SECRET.encode(), request.body + b" ", signature)
    assert request.header("X-Kubernaut-Delivery") == event_id("oom", "Failed", "OOMKilled")


def test_webhook_and_slack_over_http(tmp_path: Path) -> None:
    d = declare(tmp_path, "oom")
    with FakeReceiver(HOOK_SECRET) as receiver:
        receiver.rate_limited = 1  # Slack's 429 + Retry-After first
        hook = WebhookNotifications("audit", lambda: receiver.hook_url, lambda: HOOK_SECRET)
        slack = SlackNotifications("oncall", lambda: receiver.slack_url, [RouteRule(phases=["Failed"])])
        wrong = WebhookNotifications("wrong", lambda: receiver.hook_url, lambda: "not-the-key")
        n = notifier([hook, slack, wrong], tmp_path, public_url="https://kubernaut.example.com")
        n.start()
        try:
            n.observe(result(d, state("oom", "Running")))
            failed = state("oom", "Failed", "OOMKilled", failure={
                "reason": "OOMKilled", "wasExecutionFailure": True, "failedTaskName": "patch",
                "naturalLanguageSummary": "The patch step was OOMKilled."})
            n.observe(result(d, failed))
            assert receiver.wait_for(lambda: len(receiver.hooks) == 2 and len(receiver.slack) == 1)
            assert receiver.wait_for(lambda: receiver.count(401) >= 2)  # refused, retried, refused
        finally:
            n.stop()
    # every delivery the receiver accepted was signed with the configured key
    payloads = [h["payload"] for h in receiver.hooks]
    assert [(p["transition"]["from"], p["transition"]["to"]) for p in payloads] == [("", "Running"),
                                                                                   ("Running", "Failed")]
    last = payloads[-1]
    assert last["execution"]["name"] == "oom" and last["execution"]["commit"] == d.commits["oom"]
    assert last["execution"]["targetResource"] == "payments/Deployment/payment-api"
    assert last["status"]["phase"] == "Failed" and last["failureDetails"]["failedTaskName"] == "patch"
    assert last["link"] == "https://kubernaut.example.com/executions/oom"
    assert receiver.hooks[-1]["headers"]["x-kubernaut-delivery"] == event_id("oom", "Failed", "OOMKilled")
    # Slack got only the failure (its rule), after honouring the 429
    assert "The patch step was OOMKilled." in receiver.slack[0]["text"]
    # the sink with the wrong key was refused (401) and retried, never accepted
    shown = {s["sink"]: s for s in n.deliveries("oom")}
    assert shown["audit"]["result"] == "delivered" and shown["oncall"]["result"] == "delivered"
    assert shown["wrong"]["result"] == "retrying" and "401" in shown["wrong"]["error"]
    assert all(HOOK_SECRET not in s["error"] and "slacksecretpath" not in s["error"] for s in shown.values())


# -- configuration ----------------------------------------------------------------------------

def _config(notifications: dict[str, Any], tmp: Path) -> Any:
    return load_config(None, environ={}, overrides={
        "repository": {"url": "https://github.com/acme/remediations.git", "cache_dir": str(tmp / "cache")},
        "notifications": notifications})


@pytest.mark.parametrize(("notifications", "message"), [
    ({"webhooks": [{"url": "https://r.example/hook"}]}, "needs secretFile or secretEnv"),
    ({"webhooks": [{"secretEnv": "K"}]}, "exactly one of url or urlFile"),
    ({"webhooks": [{"url": "ftp://r.example", "secretEnv": "K"}]}, "http(s) URL"),
    ({"slack": [{"name": "oncall"}]}, "webhookUrlFile or webhookUrlEnv"),
    ({"commitStatuses": [{"type": "github"}]}, "tokenFile or tokenEnv"),
    ({"commitStatuses": [{"type": "bitbucket", "tokenEnv": "T"}]}, "notifications.commitStatuses.[0].type"),
    ({"commitStatuses": [{"type": "github", "tokenEnv": "T", "apiUrl": "api.github.com"}]}, "apiUrl must be"),
    ({"slack": [{"webhookUrlEnv": "A"}, {"webhookUrlEnv": "B"}]}, "two sinks are named 'slack'"),
    ({"slack": [{"name": "Bad Name", "webhookUrlEnv": "A"}]}, "notifications.slack.[0].name"),
    ({"slack": [{"webhookUrlEnv": "A", "rules": [{"phases": ["Done"]}]}]}, "notifications.slack.[0].rules.[0].phases"),
    ({"replayWindow": "soon"}, "notifications.replayWindow"),
    ({"publicUrl": "kubernaut.example.com"}, "publicUrl must be"),
])
def test_invalid_notification_settings_are_named(notifications: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _config(notifications, tmp_path)
    assert message in str(raised.value)


def test_config_check_reports_unreadable_secrets_and_describe_hides_them(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.invalid/services/T0001/B0001/slacksecretpathvalue0123")
    config = _config({
        "commitStatuses": [{"type": "github", "tokenFile": str(tmp_path / "absent")},
                           {"name": "local", "type": "gitea", "tokenEnv": "SLACK_URL", "repository": "a/b/c"}],
        "webhooks": [{"url": "https://user:pw@r.example/hook?token=abc", "secretEnv": "NOPE"}],
        "slack": [{"webhookUrlEnv": "SLACK_URL"}]}, tmp_path)
    problems = [p for p in check(config) if "notifications" in p]
    assert any(p.startswith("notifications.commitStatuses[0] token: cannot read") for p in problems)
    assert any("notifications.commitStatuses[1].repository: need owner/name" in p for p in problems)
    assert any("notifications.webhooks[0] secret: environment variable NOPE is not set" in p for p in problems)
    assert len(problems) == 3  # the valid Slack sink is not a problem
    shown = json.dumps(describe(config))
    assert "slacksecretpathvalue0123" not in shown and "pw@" not in shown and "token=abc" not in shown
    assert "SLACK_URL (set)" in shown and "NOPE (NOT SET)" in shown


def test_deploy_config_example_is_valid() -> None:
    """The commented example in deploy/base/config.yaml, uncommented, loads."""
    text = (Path(__file__).resolve().parents[1] / "deploy/base/config.yaml").read_text()
    start = text.index("# notifications:")
    block = "\n".join(line[2:] if line.startswith("# ") else line[1:] if line.startswith("#") else line
                      for line in text[start:].splitlines()
                      if line.startswith("#"))
    data = yaml.safe_load(block)
    config = load_config(None, environ={}, overrides={"repository": {"url": "https://github.com/a/b.git"},
                                                      "notifications": data["notifications"]})
    assert [name for name, _ in config.notifications.sinks()] == ["github", "audit", "oncall"]


# -- end to end through the service ---------------------------------------------------------------

@pytest.fixture
def world(make_repo: Callable[[str], WorkRepo], tmp_path: Path) -> Iterator[World]:
    with service_world(make_repo("seed"), tmp_path) as w:
        yield w


def test_service_sends_statuses_webhook_and_slack_and_survives_a_forge_outage(world: World) -> None:
    tmp = world.tmp
    (tmp / "forge-token").write_text(TOKEN + "\n")
    (tmp / "hook-key").write_text(HOOK_SECRET + "\n")
    with FakeForge("github", token=TOKEN) as forge, FakeReceiver(HOOK_SECRET) as receiver:
        (tmp / "slack-url").write_text(receiver.slack_url + "\n")
        forge.down = True  # down from the start: cycles and status commits must not wait for it
        notifications = {
            "publicUrl": "https://kubernaut.example.com", "retryBaseDelay": "1s", "retryMaxDelay": "1s",
            "commitStatuses": [{"type": "github", "apiUrl": forge.api_url, "repository": forge.repository,
                                "tokenFile": str(tmp / "forge-token")}],
            "webhooks": [{"name": "audit", "url": receiver.hook_url, "secretFile": str(tmp / "hook-key")}],
            "slack": [{"name": "oncall", "webhookUrlFile": str(tmp / "slack-url"),
                       "rules": [{"phases": ["Completed", "Failed"]}]}]}
        svc = world.service("solo", notifications=notifications)
        assert svc.wait_for(lambda: svc.cycles >= 1, 10)
        declared = world.push(**{"executions/oom.yaml": execution_yaml("oom")})
        svc.trigger()
        run = run_name("payments/Deployment/payment-api")
        assert world.server.wait_for_object("tekton.dev", "v1", "pipelineruns", "kubernaut-workflows", run,
                                            timeout=10) is not None
        world.tekton.start("kubernaut-workflows", run)
        world.tekton.succeed("kubernaut-workflows", run)
        # the outcome reaches the remote while the forge is still down
        assert svc.wait_for(lambda: (world.remote_status("oom") or {}).get("status", {}).get("phase")
                            == "Completed", 15)
        assert forge.statuses == [] and forge.count(503) >= 1
        assert receiver.wait_for(lambda: len(receiver.slack) == 1 and len(receiver.hooks) >= 2)
        cycles = svc.cycles
        forge.down = False
        assert svc.notifier.wait_empty(15)
        svc.trigger()  # an unchanged cycle sends nothing
        assert svc.wait_for(lambda: svc.cycles > cycles, 10)
        assert svc.notifier.wait_empty(5)
        detail = svc.execution("oom")
        metrics = svc.metrics.exposition().decode()
        page = httpx.get(f"{svc.servers[2].url}/executions/oom").text
    sha = declared  # the seed commits straight to main: the declaring commit is on the main line
    assert {s for s, _ in forge.seen("kubernaut/oom")} == {sha}
    assert [s for _, s in forge.seen("kubernaut/oom")] in (["pending", "pending", "success"], ["pending", "success"])
    assert len({(s["state"], s["description"]) for s in forge.statuses}) == len(forge.statuses)  # no duplicates
    assert [h["payload"]["transition"]["to"] for h in receiver.hooks][-1] == "Completed"
    assert ":white_check_mark: *Completed*: oom" in receiver.slack[0]["text"]
    assert detail is not None
    assert {d["sink"]: d["result"] for d in detail["deliveries"]} == {"github": "delivered", "audit": "delivered",
                                                                     "oncall": "delivered"}
    assert 'kubernaut_reconciler_deliveries_total{result="sent",sink="oncall"} 1.0' in metrics
    assert 'id="deliveries"' in page and page.count('class="delivery"') == 3  # the dashboard's last delivery
    signature = receiver.hooks[0]["headers"]["x-kubernaut-signature-256"]
    body = json.dumps(receiver.hooks[0]["payload"], sort_keys=True, separators=(",", ":")).encode()
    assert hmac.compare_digest(signature, "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest())
