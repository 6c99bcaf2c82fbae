"""Render a resolved execution into the run manifest (SPEC §5) with Jinja templates.

Templates are YAML text, and parameter values are arbitrary strings written by people
or an AI, so the classic failure is injection: a value like ``"x\\n  evil: true"`` adds a
key, ``{{ 7*7 }}`` is evaluated, ``'] , {name: X'`` closes a flow list.  Three defenses:

1. every ``{{ expression }}`` passes through ``finalize``, which emits it as a YAML
   *scalar* — strings double-quoted with every control character escaped, numbers and
   booleans bare — so no value can produce YAML structure, whatever the template author
   forgets;
2. values are data: Jinja never re-evaluates a rendered value, and the environment is
   an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``, no clock, no randomness;
3. the result is parsed back and checked: kind, name and ownership labels must be exactly
   what the reconciler expects, or rendering fails with a TemplateError.

The same input always yields byte-identical YAML (:func:`to_yaml`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reconciler.declare.declared import ResolvedExecution, gc_paused
from reconciler.errors import TemplateError
from reconciler.render.manifestload import load_manifest

MANAGED_BY = "kubernaut-gitops-reconciler"
LABEL_EXECUTION = "kubernaut.ai/workflow-execution"
LABEL_WORKFLOW = "kubernaut.ai/workflow-id"
LABEL_TARGET = "kubernaut.ai/target-resource"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_TARGET = "kubernaut.ai/target-resource"
ANNOTATION_REVISION = "reconciler.kubernaut.ai/git-revision"
ANNOTATION_SPEC_HASH = "reconciler.kubernaut.ai/spec-hash"
DEFAULT_NAMESPACE = "kubernaut-workflows"
TEMPLATE_FOR_ENGINE = {"tekton": "pipelinerun.yaml.j2", "job": "job.yaml.j2"}
KIND_FOR_ENGINE = {"tekton": ("tekton.dev/v1", "PipelineRun"), "job": ("batch/v1", "Job")}

_Dumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_ESCAPES = {
    "\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x00": "\\0",
    "\x07": "\\a", "\x08": "\\b", "\x0b": "\\v", "\x0c": "\\f", "\x1b": "\\e",
    "\x85": "\\N", "\xa0": "\\_", "\u2028": "\\L", "\u2029": "\\P",
}
_NEEDS_ESCAPE = re.compile('[\\\\"\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]')


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group(0)
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:  # a lone surrogate cannot be encoded; make it visible
        return "\\uFFFD"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def yaml_scalar(value: Any) -> str:
    """Render one value as YAML that can only ever be a single scalar (or a flow
    collection of such scalars)."""
    if type(value) is str:  # the common case first: most values need no escaping
        if _NEEDS_ESCAPE.search(value) is None:
            return f'"{value}"'
        return '"' + _NEEDS_ESCAPE.sub(_escape_char, value) + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else f'"{value}"'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{yaml_scalar(str(k))}: {yaml_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    text = str(value)
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


class RenderedRun:
    """The rendered run for one execution.

    ``text`` is the template output.  ``manifest`` — the parsed dict, checked for kind,
    name, namespace and ownership labels — is computed on first use: a cycle renders every
    execution to compare, but parses only those it is about to apply or print.
    """

    def __init__(self, execution: ResolvedExecution, renderer: Renderer, template_name: str, text: str):
        self.execution_name = execution.name
        self.engine = execution.engine
        self.api_version, self.kind = KIND_FOR_ENGINE[execution.engine]
        self.name = execution.run_name
        self.namespace = renderer.namespace
        self.text = text
        self._execution = execution
        self._template_name = template_name
        self._manifest: dict[str, Any] | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            try:
                loaded = load_manifest(self.text)
            except yaml.YAMLError as e:
                raise TemplateError(f"template {self._template_name} produced invalid YAML: {e}") from e
            _check(self._execution, self._template_name, loaded, self.namespace)
            self._manifest = loaded
            self._execution = None  # type: ignore[assignment]
        return self._manifest

    def to_yaml(self) -> str:
        return to_yaml(self.manifest)


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """Canonical, deterministic YAML for a manifest (key order as rendered)."""
    text: str = yaml.dump(
        manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
        allow_unicode=True, width=2**31 - 1,
    )
    return text


def builtin_templates_dir() -> Path:
    """templates/ in a source checkout; the copy packaged as reconciler.builtin_templates
    when installed from a wheel."""
    checkout = Path(__file__).resolve().parent.parent.parent / "templates"
    if (checkout / "pipelinerun.yaml.j2").is_file():
        return checkout
    from importlib import resources

    # via the regular package: builtin_templates has no __init__.py (it is templates/ in the
    # checkout), and a namespace package's files() is a MultiplexedPath, not a directory
    return Path(str(resources.files("reconciler").joinpath("builtin_templates")))


class Renderer:
    """Renders executions with the built-in templates, or a user's directory first."""

    def __init__(self, templates_dir: Path | None = None, namespace: str = DEFAULT_NAMESPACE):
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir is not None:
            if not templates_dir.is_dir():
                raise TemplateError(f"templates directory {templates_dir} does not exist")
            loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
        loaders.append(jinja2.FileSystemLoader(str(builtin_templates_dir())))
        self.namespace = namespace
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            finalize=yaml_scalar,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._templates: dict[str, jinja2.Template] = {}

    def _template(self, name: str) -> jinja2.Template:
        template = self._templates.get(name)
        if template is None:
            try:
                template = self.env.get_template(name)
            except jinja2.TemplateError as e:
                raise TemplateError(f"template {name}: {e}") from e
            self._templates[name] = template
        return template

    def context(self, execution: ResolvedExecution, revision: str = "") -> dict[str, Any]:
        params = [{"name": k, "value": v} for k, v in execution.parameters]
        params.append({"name": "TARGET_RESOURCE", "value": execution.target})
        ref = execution.document.spec.remediation_request_ref
        return {
            "namespace": self.namespace,
            "revision": revision,
            "managed_by": MANAGED_BY,
            "params": params,
            "execution": {
                "name": execution.name,
                "run_name": execution.run_name,
                "workflow_id": execution.workflow_id,
                "version": execution.version,
                "image": execution.image,
                "engine": execution.engine,
                "pipeline_name": execution.pipeline_name,
                "target": execution.target,
                "target_label": execution.target_label,
                "service_account": execution.service_account,
                "timeout": execution.timeout,
                "timeout_seconds": execution.timeout_seconds,
                "spec_hash": execution.spec_hash,
                "remediation_request": (
                    f"{ref.namespace}/{ref.name}" if ref and ref.namespace else ref.name if ref else ""
                ),
            },
        }

    def render(self, execution: ResolvedExecution, revision: str | None = None) -> RenderedRun:
        """Render ``execution``; ``revision`` defaults to the commit that last changed it."""
        if revision is None:
            revision = execution.origin.last_commit if execution.origin else ""
        template_name = TEMPLATE_FOR_ENGINE[execution.engine]
        try:
            text = self._template(template_name).render(self.context(execution, revision))
        except jinja2.TemplateError as e:
            raise TemplateError(f"template {template_name} failed for {execution.name}: {e}") from e
        return RenderedRun(execution, self, template_name, text)

    def render_all(self, executions: Iterable[ResolvedExecution]) -> dict[str, RenderedRun]:
        """Render many executions (a whole cycle) by name."""
        with gc_paused():
            return {e.name: self.render(e) for e in executions}

    def render_checked(self, execution: ResolvedExecution, revision: str | None = None) -> RenderedRun:
        """Render and parse/check at once (for callers that will apply the manifest)."""
        run = self.render(execution, revision)
        run.manifest  # noqa: B018 - parse and check now
        return run


def _check(execution: ResolvedExecution, template_name: str, manifest: Any, namespace: str) -> None:
    api_version, kind = KIND_FOR_ENGINE[execution.engine]
    expected_labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_EXECUTION: execution.name,
        LABEL_WORKFLOW: execution.workflow_id,
        LABEL_TARGET: execution.target_label,
    }
    problem = ""
    if not isinstance(manifest, dict):
        problem = "did not produce a mapping"
    elif (manifest.get("apiVersion"), manifest.get("kind")) != (api_version, kind):
        problem = f"must produce {api_version} {kind}"
    else:
        meta = manifest.get("metadata")
        if not isinstance(meta, dict) or meta.get("name") != execution.run_name:
            problem = f"metadata.name must be {execution.run_name}"
        elif meta.get("namespace") != namespace:
            problem = f"metadata.namespace must be {namespace}"
        else:
            found = meta.get("labels")
            labels: dict[str, Any] = found if isinstance(found, dict) else {}
            wrong = [k for k, v in expected_labels.items() if labels.get(k) != v]
            if wrong:
                problem = f"labels {', '.join(wrong)} are missing or wrong"
    if problem:
        raise TemplateError(f"template {template_name} {problem} (execution {execution.name})")
