"""Run the real Pulumi program offline, under Pulumi's own mock engine, and record it.

Used by `scripts/plan` and by the tests. It never invents a cloud value:
every resource's outputs are its inputs and nothing more, so computed values
(IDs, IPs) stay unknown, exactly as in a `pulumi preview`; every invoke the
program makes must be listed in INVOKE_RESULTS, whose values are the marker
KNOWN_AFTER_UP. An invoke not listed is an error, because an unmocked invoke
silently answers {} and turns the program's lookups into None.
"""

from __future__ import annotations

import json
import logging
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks, rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROJECT_NAME = "gpu-workbench"
KNOWN_AFTER_UP = "(known after up)"
SECRET = "[secret]"

# An invoke the offline engine answers as Pulumi's engine answers one it cannot
# serve yet: the whole result unknown (ResourceInvokeResponse.unknown), so every
# value the program derives from it prints as "(known after up)", typed or not.
WHOLLY_UNKNOWN: dict[str, Any] = {}

# What each lookup the program makes returns offline. Real values exist only at
# `pulumi up`.
INVOKE_RESULTS: dict[str, dict[str, Any]] = {
    "aws:ssm/getParameter:getParameter": WHOLLY_UNKNOWN,
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": WHOLLY_UNKNOWN,
    "aws:ebs/getVolume:getVolume": WHOLLY_UNKNOWN,
    "gcp:compute/getDisk:getDisk": WHOLLY_UNKNOWN,
    "azure-native:compute:getDisk": WHOLLY_UNKNOWN,
    # The identity running `pulumi up`: empty offline, so the plan cannot compare it.
    "gcp:organizations/getClientOpenIdUserInfo:getClientOpenIdUserInfo": {
        "id": KNOWN_AFTER_UP, "email": "",
    },
    "gcp:serviceaccount/getAccount:getAccount": WHOLLY_UNKNOWN,
}


class OfflineError(RuntimeError):
    """The program asked the offline engine for something it cannot answer honestly."""


@dataclass(frozen=True)
class DeclaredResource:
    urn: str
    type: str
    name: str
    parent_urn: str
    custom: bool
    inputs: dict[str, Any]
    # input name -> URNs of the resources its value came from (e.g. which
    # security group a rule's securityGroupId is the ID of)
    input_sources: dict[str, list[str]] = field(default_factory=dict)
    retain_on_delete: bool = False
    ignore_changes: tuple[str, ...] = ()

    def source_of(self, input_name: str) -> list[str]:
        return self.input_sources.get(input_name, [])


@dataclass(frozen=True)
class Invocation:
    token: str
    args: dict[str, Any]


@dataclass
class ProgramRun:
    stack: str
    config: dict[str, str]
    resources: list[DeclaredResource] = field(default_factory=list)
    invokes: list[Invocation] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def of_type(self, type_token: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str) -> DeclaredResource:
        found = self.of_type(type_token)
        if len(found) != 1:
            raise AssertionError(f"expected one {type_token}, found {len(found)}")
        return found[0]

    def named(self, name: str) -> DeclaredResource:
        (found,) = [r for r in self.resources if r.name == name]
        return found

    def invokes_of(self, token: str) -> list[Invocation]:
        return [i for i in self.invokes if i.token == token]


class _RecordingMocks(mocks.Mocks):
    def __init__(self, run: ProgramRun) -> None:
        self.run = run

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        # Empty ID and no extra state: in a preview, Pulumi treats both as unknown.
        return "", dict(args.inputs)

    def call(self, args: mocks.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        self.run.invokes.append(Invocation(args.token, dict(args.args)))
        if args.token not in INVOKE_RESULTS:
            raise OfflineError(f"the offline plan has no answer for invoke {args.token}; "
                               "add it to components/mock_engine.INVOKE_RESULTS")
        return dict(INVOKE_RESULTS[args.token])


class _RecordingMonitor(mocks.MockMonitor):
    """Pulumi's mock monitor, also keeping each resource's parent and inputs."""

    def __init__(self, recorder: _RecordingMocks) -> None:
        super().__init__(recorder)
        self.run = recorder.run

    def Invoke(self, request: Any) -> Any:
        response = super().Invoke(request)  # records the call and checks it is listed
        if INVOKE_RESULTS.get(request.tok) is WHOLLY_UNKNOWN:
            from pulumi.runtime.proto import resource_pb2

            return resource_pb2.ResourceInvokeResponse(unknown=True)
        return response

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.run.resources.append(DeclaredResource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent_urn=request.parent,
                custom=bool(request.custom),
                inputs=_mark_unknowns(
                    rpc.deserialize_properties(request.object, keep_unknowns=True)),
                input_sources={key: list(deps.urns)
                               for key, deps in request.propertyDependencies.items()},
                retain_on_delete=bool(request.retainOnDelete),
                ignore_changes=tuple(request.ignoreChanges),
            ))
        return response


def _mark_unknowns(value: Any) -> Any:
    """Inputs the engine does not know yet (from a wholly unknown invoke, or another
    resource's output) as the plan prints them."""
    from pulumi.output import Unknown

    if isinstance(value, Unknown) or value == rpc.UNKNOWN:
        return KNOWN_AFTER_UP
    if rpc.is_rpc_secret(value):  # a secret input: its value, as the engine would see it
        return _mark_unknowns(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _mark_unknowns(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark_unknowns(v) for v in value]
    return value


class _WarningLog(logging.Handler):
    def __init__(self, run: ProgramRun) -> None:
        super().__init__(logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        self.run.warnings.append(record.getMessage())


def stack_file(stack_or_path: str, project_dir: Path = PROJECT_DIR) -> tuple[str, Path]:
    """Resolve `aws` to stacks/Pulumi.aws.yaml; a path is taken as it is."""
    as_path = Path(stack_or_path)
    if as_path.suffix in (".yaml", ".yml") or "/" in stack_or_path:
        name = as_path.name.removeprefix("Pulumi.").rsplit(".", 1)[0]
        return name, as_path
    return stack_or_path, project_dir / "stacks" / f"Pulumi.{stack_or_path}.yaml"


def read_stack_config(path: Path) -> dict[str, str]:
    """Stack YAML -> the raw config map the Pulumi CLI hands a program.

    The CLI passes strings; lists, numbers and booleans as their JSON text.
    """
    document = yaml.safe_load(path.read_text()) or {}
    values = document.get("config") or {}
    if not isinstance(values, dict):
        raise OfflineError(f"{path}: 'config' is not a mapping")
    raw: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict) and "secure" in value:
            raise OfflineError(f"{path}: {key} is a secret; the offline plan cannot decrypt it")
        raw[key] = value if isinstance(value, str) else json.dumps(value)
    return raw


def run_program(
    config: dict[str, str],
    stack: str,
    project_dir: Path = PROJECT_DIR,
    run: ProgramRun | None = None,
) -> ProgramRun:
    """Run __main__.py under the mock engine as a preview; return what it declared.

    Raises whatever the program raises (pulumi.RunError for bad config); pass
    `run` to inspect what had been declared by then.
    """
    run = run if run is not None else ProgramRun(stack=stack, config=dict(config))
    recorder = _RecordingMocks(run)
    settings.set_root_resource(None)  # type: ignore[arg-type]  # each run: a fresh Stack
    mocks.set_mocks(recorder, project=PROJECT_NAME, stack=stack, preview=True,
                    monitor=_RecordingMonitor(recorder))
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    runtime_config.set_all_config(config)

    logger = logging.getLogger("gpu-workbench.offline")
    logger.propagate = False
    handler = _WarningLog(run)
    logger.addHandler(handler)
    settings.SETTINGS.engine.logger = logger
    try:
        def program() -> None:
            runpy.run_path(str(project_dir / "__main__.py"), run_name="__main__")

        _sync_await(run_pulumi_func(program))
        root = settings.get_root_resource()
        assert root is not None
        for name, value in root.outputs.items():  # type: ignore[attr-defined]
            run.outputs[name] = _resolve(value)
    finally:
        logger.removeHandler(handler)
    return run


def _resolve(value: Any) -> Any:
    from pulumi import Output

    output = Output.from_input(value)
    if _sync_await(output.is_secret()):
        return SECRET
    if not _sync_await(output.is_known()):
        return KNOWN_AFTER_UP
    return _sync_await(output.future())
