"""The catalog holds what the issue and the plan rely on, and is internally consistent."""

from __future__ import annotations

import pytest

from components import catalog

RECOMMENDED = {
    "aws": ("p3.2xlarge", "p3.2xlarge"),
    "gcp": ("n1-standard-16-v100", "n1-standard-16"),
    "azure": ("Standard_NC6s_v3", "Standard_NC6s_v3"),
}


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_recommended_type_is_the_guides_v100(cloud: catalog.Cloud) -> None:
    profile = catalog.recommended_profile(cloud)
    assert (profile.name, profile.machine_type) == RECOMMENDED[cloud]
    assert profile.gpu is catalog.V100 and profile.default_gpu_count == 1


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_each_cloud_has_current_mid_a100_and_h100_classes(cloud: catalog.Cloud) -> None:
    sold = [p for p in catalog.profiles_for(cloud) if p.sold]
    architectures = {p.gpu.model for p in sold}
    assert architectures & {catalog.L4.model, catalog.A10G.model, catalog.A10.model}
    assert architectures & {catalog.A100_40.model, catalog.A100_80.model}
    assert architectures & {catalog.H100_80.model, catalog.H100_NVL.model}


def test_retired_types_name_a_sold_replacement_on_the_same_cloud() -> None:
    retired = [p for p in catalog.PROFILES if not p.sold]
    assert {p.name for p in retired} == {"p3.2xlarge", "Standard_NC6s_v3"}
    for profile in retired:
        replacement = catalog.find_profile(profile.cloud, profile.replacement or "")
        assert replacement is not None and replacement.sold


def test_profiles_are_unique_and_priced() -> None:
    keys = [(p.cloud, p.name) for p in catalog.PROFILES]
    assert len(keys) == len(set(keys))
    for profile in catalog.PROFILES:
        assert profile.hourly_cost(profile.default_gpu_count) > 0
        assert profile.vcpus > 0 and profile.memory_gib > 0
        assert profile.gpu.compute_capability >= (7, 0)
        assert (profile.accelerator_type is not None) == (profile.price_per_gpu_usd_hour > 0)
    assert catalog.PRICES_READ_ON[:2] == "20"


def test_compute_capabilities() -> None:
    assert catalog.V100.compute_capability == (7, 0)
    assert catalog.A100_40.compute_capability == (8, 0)
    assert catalog.L4.compute_capability == (8, 9)
    assert catalog.H100_80.compute_capability == (9, 0)


def test_gcp_vcpu_cap_per_v100() -> None:
    n1 = catalog.find_profile("gcp", "n1-standard-16-v100")
    assert n1 is not None
    assert n1.vcpu_limit_exceeded(1) and not n1.vcpu_limit_exceeded(2)
