"""The declared document types: WorkflowExecution and WorkflowDefinition (SPEC §2, §3).

These pydantic models are the single definition of the file formats: the validator uses
them, ``reconciler schema`` exports them as JSON Schema for editors, and the renderer
reads them.  They are strict on purpose — unknown fields and wrong types are errors, not
coercions — because a typo that passes review must not change what runs in production.

Single-field format rules raise ``PydanticCustomError`` whose *type* is the rule id, so the
validator can report ``[name-format]`` instead of a generic ``value_error``.
"""

from __future__ import annotations

import threading
import weakref
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from reconciler.declare import names

API_VERSION = "kubernaut.ai/v1alpha1"
Engine = Literal["tekton", "job"]
# the failure reasons of SPEC §6 (reconciler.observe.failures.FailureReason), for onFailureReasons
FailureReasonName = Literal["OOMKilled", "DeadlineExceeded", "Forbidden", "ResourceExhausted",
                            "ConfigurationError", "ImagePullBackOff", "TaskFailed", "Cancelled",
                            "ExternallyDeleted", "Unknown"]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


def _dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not names.DNS1123_LABEL.fullmatch(value):
        raise _fail(
            "name-format",
            f"{what} {value!r} must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters",
        )
    return value


def _dns_subdomain(value: str, what: str) -> str:
    if len(value) > 253 or not names.DNS1123_SUBDOMAIN.fullmatch(value):
        raise _fail(
            "name-format",
            f"{what} {value!r} must be a DNS-1123 subdomain: lowercase letters, digits, '-' and "
            "'.', at most 253 characters",
        )
    return value


def _image(value: str) -> str:
    if len(value) > 512 or not names.IMAGE_REFERENCE.fullmatch(value):
        raise _fail(
            "image-reference",
            f"{value!r} is not a valid OCI image reference (registry/path[:tag][@sha256:digest])",
        )
    return value


def _fail(rule: str, message: str) -> PydanticCustomError:
    """A pydantic error whose type is our rule id; the message is already formatted."""
    return PydanticCustomError(rule, "{msg}", {"msg": message})


def _version(value: str) -> str:
    if not names.VERSION.fullmatch(value):
        raise _fail(
            "version-format",
            f"version {value!r} must look like 1.2.0 (letters, digits, '.', '-', '+', '_')",
        )
    return value


ExecutionName = Annotated[str, AfterValidator(lambda v: _dns_label(v, "name"))]


class ObjectMeta(_Strict):
    name: str = Field(description="DNS-1123 label, unique in the repository; names the run's status file.")
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form labels for filtering.")
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _dns_label(v, "name")


class RemediationRequestRef(_Strict):
    name: str
    namespace: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _dns_subdomain(v, "name")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        return None if v is None else _dns_label(v, "namespace")


class WorkflowRef(_Strict):
    workflow_id: str = Field(description="Catalog id of the workflow, a DNS-1123 label.")
    version: str = Field(description='Workflow version, quoted: "1.2.0".')
    container_image: str | None = Field(
        default=None,
        description="OCI bundle (tekton) or image (job); required unless the catalog supplies it.",
    )
    execution_engine: Engine | None = Field(default=None, description="tekton (default) or job.")
    pipeline_name: str | None = Field(
        default=None, description='Pipeline inside the bundle; default "workflow".'
    )

    @field_validator("workflow_id")
    @classmethod
    def _workflow_id(cls, v: str) -> str:
        return _dns_label(v, "workflowId")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return _version(v)

    @field_validator("container_image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        return None if v is None else _image(v)

    @field_validator("pipeline_name")
    @classmethod
    def _pipeline(cls, v: str | None) -> str | None:
        return None if v is None else _dns_label(v, "pipelineName")


class ExecutionConfig(_Strict):
    service_account_name: str | None = Field(
        default=None, description='ServiceAccount of the run; default "default".'
    )
    timeout: str | None = Field(
        default=None, description="Go duration such as 30m or 1h30m; default 30m, at most 24h."
    )

    @field_validator("service_account_name")
    @classmethod
    def _sa(cls, v: str | None) -> str | None:
        return None if v is None else _dns_subdomain(v, "serviceAccountName")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            names.parse_duration(v)
        except ValueError as e:
            raise _fail("duration-format", str(e)) from None
        return v


class ExecutionSpec(_Strict):
    remediation_request_ref: RemediationRequestRef | None = None
    workflow_ref: WorkflowRef
    target_resource: str = Field(
        description='The lock key: "namespace/Kind/name", or "Kind/name" for cluster-scoped kinds.'
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Keys ^[A-Z][A-Z0-9_]*$ (TARGET_RESOURCE is reserved); scalar values, passed as strings.",
    )
    execution_config: ExecutionConfig = Field(default_factory=ExecutionConfig)
    confidence: float | None = Field(default=None, ge=0.0, le=1.0, description="Audit only.")
    rationale: str | None = Field(default=None, max_length=16384, description="Audit only.")
    suspend: bool = Field(default=False, description="true: merged but not started until set to false.")
    after: list[ExecutionName] = Field(
        default_factory=list,
        description="Start only when each of these executions (names on the tracked branch) is Completed; "
                    "if one ends Failed or Skipped this one is Skipped (DependencyNotMet).",
    )
    on_failure_of: str | None = Field(
        default=None,
        description="The fallback: start only if this execution ends Failed; Skipped (DependencyNotMet) "
                    "if it completes or is skipped.",
    )
    on_failure_reasons: list[FailureReasonName] = Field(
        default_factory=list,
        description="With onFailureOf: only when it failed for one of these reasons (failureDetails.reason).",
    )
    override_breaker: bool = Field(
        default=False,
        description="Start even if the failure breaker is open (ConsecutiveFailures); honoured only where "
                    "the reconciler's policy sets allowBreakerOverride.",
    )

    @property
    def dependencies(self) -> tuple[str, ...]:
        """Every execution this one waits for: ``after`` then ``onFailureOf``."""
        return (*self.after, *((self.on_failure_of,) if self.on_failure_of else ()))

    @field_validator("after")
    @classmethod
    def _after(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise _fail("dependency-duplicate", "after names an execution more than once")
        return v

    @field_validator("on_failure_of")
    @classmethod
    def _on_failure_of(cls, v: str | None) -> str | None:
        return None if v is None else _dns_label(v, "onFailureOf")

    @field_validator("target_resource")
    @classmethod
    def _target(cls, v: str) -> str:
        try:
            names.parse_target(v)
        except ValueError as e:
            raise _fail("target-format", str(e)) from None
        return v


class WorkflowExecution(_Strict):
    """One declared remediation run (SPEC §3)."""

    api_version: Literal["kubernaut.ai/v1alpha1"]
    kind: Literal["WorkflowExecution"]
    metadata: ObjectMeta
    spec: ExecutionSpec


class DeclaredParameter(_Strict):
    name: str
    required: bool = False
    description: str | None = None


class WorkflowDefinitionSpec(_Strict):
    workflow_id: str
    version: str
    description: str | None = None
    container_image: str
    execution_engine: Engine = "tekton"
    pipeline_name: str = "workflow"
    parameters: list[DeclaredParameter] = Field(default_factory=list)

    @field_validator("workflow_id")
    @classmethod
    def _workflow_id(cls, v: str) -> str:
        return _dns_label(v, "workflowId")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return _version(v)

    @field_validator("container_image")
    @classmethod
    def _image(cls, v: str) -> str:
        return _image(v)

    @field_validator("pipeline_name")
    @classmethod
    def _pipeline(cls, v: str) -> str:
        return _dns_label(v, "pipelineName")


class WorkflowDefinition(_Strict):
    """A catalog entry (``workflows/*.yaml``): what a workflow is and which parameters it takes."""

    api_version: Literal["kubernaut.ai/v1alpha1"]
    kind: Literal["WorkflowDefinition"]
    metadata: ObjectMeta
    spec: WorkflowDefinitionSpec

    @property
    def key(self) -> tuple[str, str]:
        return (self.spec.workflow_id, self.spec.version)


class _SharedFieldsSet(set[str]):
    """A set of field names shared by many model instances: reads as any set (pydantic's
    serializer wants a ``set``), refuses to change (it would change every sharer's)."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a shared set of field names cannot change (copy the model without update=)")

    add = discard = remove = pop = clear = update = _refuse
    difference_update = intersection_update = symmetric_difference_update = _refuse
    __ior__ = __iand__ = __isub__ = __ixor__ = _refuse


_FIELDS_SETS: dict[frozenset[str], _SharedFieldsSet] = {}
_M = TypeVar("_M", bound=BaseModel)
_set_slot = object.__setattr__


def _share_fields_set(model: BaseModel) -> None:
    key = frozenset(model.__pydantic_fields_set__)
    shared = _FIELDS_SETS.get(key)
    if shared is None:
        shared = _FIELDS_SETS[key] = _SharedFieldsSet(key)
    _set_slot(model, "__pydantic_fields_set__", shared)


# equal sub-models shared across executions (see ``share_fields_sets``): weak values, so an
# entry goes with the last execution holding it (a long churn never accumulates old values)
_SHARED_MODELS: weakref.WeakValueDictionary[tuple[Any, ...], BaseModel] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def _shared_model(model: _M) -> _M:
    """One instance per distinct value of a frozen model whose fields are all scalars (str,
    None): ``model`` itself the first time, the instance held since for every equal one.  The
    key has the class, every field value and the set of fields given, so a shared instance
    dumps (``exclude_unset`` too), compares and hashes exactly as ``model`` would."""
    key = (type(model), *model.__dict__.values(), frozenset(model.__pydantic_fields_set__))
    with _SHARED_LOCK:  # loads run on the scheduler's threads and the dashboard's
        held = _SHARED_MODELS.get(key)
        if held is None:
            _SHARED_MODELS[key] = model
            return model
    return held  # type: ignore[return-value]


def share_fields_sets(execution: WorkflowExecution) -> WorkflowExecution:
    """``execution`` made compact: the set of field names each of its models was given
    replaced by one shared set per distinct set (the same few across every execution), and
    its ``workflowRef`` and ``executionConfig`` by one shared instance per distinct value.

    pydantic keeps a new ``set`` per model instance (216 bytes each, five models per execution:
    ~54 MB at 50 000 executions kept for a plan), and a model with its own ``__dict__`` per
    instance (~264 bytes for a workflowRef or an executionConfig, which thousands of executions
    declare alike: ~5 MB at 10 000).  The models are frozen and hold only scalars there, and
    nothing here copies them with ``model_copy(update=...)`` (the one pydantic call that would
    add to the set: the shared set refuses, loudly, rather than change another execution's);
    equality, ``model_dump`` (``exclude_unset`` too) and ``model_fields_set`` read the same
    names and values."""
    _share_fields_set(execution)
    _share_fields_set(execution.metadata)
    spec = execution.spec
    _share_fields_set(spec)
    _share_fields_set(spec.workflow_ref)
    _share_fields_set(spec.execution_config)
    fields = spec.__dict__  # a frozen model refuses setattr; its field values live here
    fields["workflow_ref"] = _shared_model(spec.workflow_ref)
    fields["execution_config"] = _shared_model(spec.execution_config)
    if spec.remediation_request_ref is not None:
        _share_fields_set(spec.remediation_request_ref)
    return execution
