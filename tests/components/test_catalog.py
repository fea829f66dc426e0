"""The catalog: every fact has a source with a date, and the facts agree with each other."""

from __future__ import annotations

import dataclasses
import re

import pytest

from components import catalog, images, nvidia
from components.sources import READ_ON, Source


def sources_of(value: object) -> list[Source]:
    """Every Source reachable from a catalog row (fields, nested dataclasses, tuples)."""
    found: list[Source] = []
    if isinstance(value, Source):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            found += sources_of(getattr(value, f.name))
    elif isinstance(value, tuple | list):
        for item in value:
            found += sources_of(item)
    return found


ROWS = [*catalog.PROFILES, *catalog.OS_IMAGES, *images.PRESETS]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: getattr(r, "name", repr(r)))
def test_every_row_names_its_sources_with_a_date(row: object) -> None:
    sources = sources_of(row)
    assert sources, f"{row} has no source"
    for source in sources:
        assert source.where.strip() and source.says.strip()
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", source.read_on)
        assert source.read_on <= READ_ON


def test_a_row_without_a_source_fails_this_check() -> None:
    """The check above is not vacuous: a row that cites nothing fails it."""
    row = dataclasses.make_dataclass("Row", [("name", str), ("price", float)])("x", 1.0)
    with pytest.raises(AssertionError, match="has no source"):
        test_every_row_names_its_sources_with_a_date(row)
    with pytest.raises(ValueError, match="names where and what it says"):
        Source("", "")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        Source("x", "y", read_on="last week")


def test_the_guides_types_stay_in_the_catalog_marked_with_their_fate() -> None:
    p3 = catalog.find_profile("aws", "p3.2xlarge")
    nc6 = catalog.find_profile("azure", "Standard_NC6s_v3")
    n1 = catalog.find_profile("gcp", "n1-standard-16-v100")
    assert p3 and nc6 and n1
    assert p3.retirement and p3.retirement.since == "2025-12-20"
    assert p3.retirement.replacement == "g5.2xlarge"
    assert nc6.retirement and nc6.retirement.since == "2025-09-30"
    assert n1.sold and n1.shape_refusal(1) and n1.shape_refusal(2) is None
    for guide in (p3, nc6, n1):
        assert guide.recommended and guide.gpu is nvidia.V100


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_each_clouds_default_is_sold_in_an_accepted_shape(cloud: catalog.Cloud) -> None:
    profile = catalog.default_profile(cloud)
    assert profile.sold and profile.on_demand
    assert profile.shape_refusal(profile.default_gpu_count) is None
    image = catalog.os_image(cloud)
    assert nvidia.driver_cannot_drive(image.driver_branch, image.kernel_modules,
                                      profile.gpu) is None
    # Clara Train 4.1, the guides' container, runs natively there.
    clara = images.find_preset("clara-train")
    assert clara is not None and images.check_gpu(clara, profile.gpu, gpu_label="x") == []


def test_replacements_are_sold_on_the_same_cloud() -> None:
    for profile in catalog.PROFILES:
        if profile.retirement:
            replacement = catalog.find_profile(profile.cloud, profile.retirement.replacement)
            assert replacement is not None and replacement.sold and replacement.on_demand


def test_profiles_are_unique_priced_and_quota_bearing() -> None:
    keys = [(p.cloud, p.name) for p in catalog.PROFILES]
    assert len(keys) == len(set(keys))
    for profile in catalog.PROFILES:
        assert profile.hourly_cost(profile.default_gpu_count) > 0
        assert profile.vcpus > 0 and profile.memory_gib > 0
        assert (profile.accelerator_type is not None) == (profile.price_per_gpu_usd_hour > 0)
        assert profile.quotas, f"{profile.name} names no quota"
        for quota, need in profile.quota_needs(profile.default_gpu_count):
            assert need == (profile.vcpus if quota.unit == "vCPUs"
                            else profile.default_gpu_count)


def test_compute_capabilities() -> None:
    assert nvidia.V100.compute_capability == (7, 0)
    assert nvidia.T4.compute_capability == (7, 5)
    assert nvidia.A100_40.compute_capability == (8, 0)
    assert nvidia.A10G.compute_capability == (8, 6)
    assert nvidia.L4.compute_capability == (8, 9)
    assert nvidia.H100_80.compute_capability == (9, 0)


def test_quota_codes_as_the_clouds_name_them() -> None:
    g5 = catalog.find_profile("aws", "g5.2xlarge")
    p5 = catalog.find_profile("aws", "p5.4xlarge")
    assert g5 and p5
    assert [q.code for q in g5.quotas] == ["L-DB2E81BA"]
    assert [q.code for q in p5.quotas] == ["L-417A185B"]
    v100 = catalog.default_profile("gcp")
    assert [q.code for q in v100.quotas] == ["NVIDIA_V100_GPUS", "GPUS_ALL_REGIONS"]
    a100 = catalog.default_profile("azure")
    assert [q.code for q in a100.quotas] == ["standardNCADSA100v4Family"]
