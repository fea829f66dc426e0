"""The Pulumi program: stack config -> WorkstationSpec -> one cloud component -> outputs.

Only the chosen cloud's SDK is imported: each costs 0.4-1.2 s to import and
a user with one cloud account should not need the others' credentials.
"""

import sys
from pathlib import Path

import pulumi

PROJECT_DIR = Path(__file__).resolve().parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from components.spec import CONFIG_NAMESPACE, SpecError, load_spec  # noqa: E402

config = pulumi.Config(CONFIG_NAMESPACE)


def stack_keys() -> list[str]:
    """The keys the stack sets in our namespace: Pulumi hands every config value to the
    program (runtime config, or PULUMI_CONFIG), declared or not."""
    from pulumi.runtime.config import CONFIG, get_config_env

    prefix = f"{CONFIG_NAMESPACE}:"
    names = set(CONFIG.get()) | set(get_config_env() or {})
    return sorted(k[len(prefix):] for k in names if k.startswith(prefix))


try:
    spec = load_spec(
        config.get,
        stack=pulumi.get_stack(),
        project_dir=PROJECT_DIR,
        deploying=not pulumi.runtime.is_dry_run(),
        keys=stack_keys(),
    )
except SpecError as error:
    # RunError: Pulumi prints the one line, without a traceback, and exits non-zero.
    raise pulumi.RunError(str(error)) from None

for warning in spec.warnings:
    pulumi.log.warn(warning)

if spec.cloud == "aws":
    from components.aws import AwsWorkstation as Component
elif spec.cloud == "gcp":
    from components.gcp import GcpWorkstation as Component  # type: ignore[assignment]
else:
    from components.azure import AzureWorkstation as Component  # type: ignore[assignment]

workstation = Component("workstation", spec)
for output_name, value in workstation.outputs.items():
    pulumi.export(output_name, value)
