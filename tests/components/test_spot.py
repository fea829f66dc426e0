"""Spot workstations: every spot input per cloud as the program declares it, the price
the plan states, and each bad request refused in one line beside its accepted neighbour."""

from __future__ import annotations

import subprocess

import pulumi
import pytest

from components import catalog
from stacktools.mock_engine import PROJECT_DIR, ProgramRun, run_program
from tests.support.stacks import RunStack, stack_config


def refused(stack: str, **overrides: object) -> str:
    config = stack_config(stack, **overrides)
    run = ProgramRun(stack=stack, config=config)
    with pytest.raises(pulumi.RunError) as caught:
        run_program(config, stack, run=run)
    assert run.resources == []
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_aws_spot_is_a_persistent_request_that_stops(run_stack: RunStack) -> None:
    vm = run_stack("aws-spot").one("aws:ec2/instance:Instance").inputs
    # RunInstances takes "stop" only with a persistent request (AWS API_SpotMarketOptions).
    assert vm["instanceMarketOptions"] == {
        "marketType": "spot",
        "spotOptions": {"spotInstanceType": "persistent",
                        "instanceInterruptionBehavior": "stop"},
    }
    assert vm["instanceInitiatedShutdownBehavior"] == "stop"  # autostop stops, too
    capped = run_stack("aws-spot", spotMaxPriceUsd="0.80").one("aws:ec2/instance:Instance")
    assert capped.inputs["instanceMarketOptions"]["spotOptions"]["maxPrice"] == "0.8"
    on_demand = run_stack("aws").one("aws:ec2/instance:Instance").inputs
    assert "instanceMarketOptions" not in on_demand


def test_gcp_spot_stops_on_preemption_and_keeps_gcps_fixed_settings(run_stack: RunStack) -> None:
    vm = run_stack("gcp-h100-spot").one("gcp:compute/instance:Instance").inputs
    assert vm["machineType"] == "a3-highgpu-1g"
    assert vm["scheduling"] == {
        "provisioningModel": "SPOT", "instanceTerminationAction": "STOP", "preemptible": True,
        "automaticRestart": False, "onHostMaintenance": "TERMINATE",
    }
    on_demand = run_stack("gcp").one("gcp:compute/instance:Instance").inputs
    assert on_demand["scheduling"] == {"onHostMaintenance": "TERMINATE",
                                       "automaticRestart": True}


def test_azure_spot_deallocates_and_pays_up_to_on_demand(run_stack: RunStack) -> None:
    vm = run_stack("azure-spot").one("azure-native:compute:VirtualMachine").inputs
    assert (vm["priority"], vm["evictionPolicy"]) == ("Spot", "Deallocate")
    assert vm["billingProfile"] == {"maxPrice": -1}
    capped = run_stack("azure-spot", spotMaxPriceUsd="1.5").one(
        "azure-native:compute:VirtualMachine").inputs
    assert capped["billingProfile"] == {"maxPrice": 1.5}
    on_demand = run_stack("azure").one("azure-native:compute:VirtualMachine").inputs
    assert "priority" not in on_demand and "billingProfile" not in on_demand


def test_the_hourly_cost_output_is_the_spot_price(run_stack: RunStack) -> None:
    g5 = catalog.find_profile("aws", "g5.2xlarge")
    assert g5 is not None
    assert run_stack("aws-spot").outputs["hourly_cost_usd"] == g5.spot_price_usd_hour
    v100 = run_stack("gcp", spot=True).outputs["hourly_cost_usd"]
    assert v100 == round(0.12932 + 1.0885, 4)  # N1 host + the V100's own spot price


def test_a_shape_sold_only_as_spot_is_planned_with_spot() -> None:
    assert run_program(stack_config("gcp-h100-spot"), "gcp-h100-spot")
    line = refused("gcp-h100-spot", spot=False)
    assert "is sold on gcp only as spot or flex-start" in line
    assert "set gpu-workbench:spot: true" in line


def test_spot_on_a_type_without_a_spot_price_is_refused() -> None:
    line = refused("aws-h100", spot=True)
    assert line.startswith("gpu-workbench:spot: 'true' is not possible with p5.4xlarge: the "
                           "catalog has no spot price for it in us-east-1")
    assert "use p5.48xlarge for spot" in line
    assert run_program(stack_config("aws-h100", profile="p5.48xlarge", spot=True), "x")


def test_a_cap_below_the_current_spot_price_is_refused() -> None:
    line = refused("aws-spot", spotMaxPriceUsd="0.20")
    assert line.startswith("gpu-workbench:spotMaxPriceUsd: '0.20' is below g5.2xlarge's spot "
                           "price $0.4533/h (us-east-1, read 2026-11-23)")
    assert run_program(stack_config("aws-spot", spotMaxPriceUsd="0.60"), "x")


@pytest.mark.parametrize(("stack", "overrides", "fragment"), [
    ("aws", {"spotMaxPriceUsd": "0.60"}, "applies with spot: true only"),
    ("gcp-h100-spot", {"spotMaxPriceUsd": "4"}, "cannot be set on gcp: Spot VMs take no price"),
    ("azure-spot", {"spotMaxPriceUsd": "cheap"}, "is not a price in USD per hour"),
    ("azure-spot", {"spotMaxPriceUsd": "0"}, "must be more than 0"),
    ("azure", {"spot": "sometimes"}, "accepted: true, false"),
])
def test_options_that_contradict_spot_are_one_line(
        stack: str, overrides: dict[str, object], fragment: str) -> None:
    assert fragment in refused(stack, **overrides)


def test_plan_shows_both_prices_the_saving_and_what_an_interruption_does() -> None:
    out = subprocess.run([str(PROJECT_DIR / "scripts" / "plan"), "azure-spot"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "$0.44/hour as spot vs $3.67/hour on-demand: 88% less" in out.stdout
    assert "Azure deallocates the VM" in out.stdout and "disks stay" in out.stdout
    assert "lowPriorityCores (Total Regional Low-priority vCPUs): 24 vCPUs" in out.stdout
    on_demand = subprocess.run([str(PROJECT_DIR / "scripts" / "plan"), "azure"],
                               capture_output=True, text=True, timeout=120)
    assert "$0.44/hour with spot: true (88% less" in on_demand.stdout
