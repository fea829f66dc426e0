"""Where a fact comes from: every fact the program relies on about a cloud or NVIDIA
names a source (a URL, or a repository, path and commit) and the date it was read.

tests/components/test_sources.py fails for a catalog row without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# When the sources below were read for this version of the catalog.
READ_ON = "2026-11-23"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Source:
    """A document, and what we took from it."""

    where: str  # URL, or owner/repo path @commit
    says: str  # the fact, briefly, with the source's own date where it has one
    read_on: str = READ_ON
    confidence: str = "high"  # high: primary source read; medium: secondary or partial; low

    def __post_init__(self) -> None:
        if not self.where.strip() or not self.says.strip():
            raise ValueError("a source names where and what it says")
        if not _DATE.match(self.read_on):
            raise ValueError(f"read_on must be YYYY-MM-DD, not {self.read_on!r}")
        if self.confidence not in ("high", "medium", "low"):
            raise ValueError(f"confidence must be high, medium or low, not {self.confidence!r}")

    def cite(self) -> str:
        return f"{self.where} (read {self.read_on})"


# --- price catalogs (SkyPilot's, generated from the clouds' price APIs) ---------------------
SKYPILOT_AWS = Source(
    "skypilot-org/skypilot-catalog catalogs/v9/aws/vms.csv @3e9a1751",
    "us-east-1 Linux on-demand prices and shapes (vCPU, GiB, GPU) per instance type; "
    "undated snapshot from before the 2026-07-13 refresh", confidence="medium")
SKYPILOT_GCP = Source(
    "skypilot-org/skypilot-catalog catalogs/v8/gcp/vms.csv @006059e0",
    "us-central1 on-demand and spot prices, host and GPU rows, zones per type; snapshot "
    "late 2025 or newer", confidence="medium")
SKYPILOT_AZURE = Source(
    "skypilot-org/skypilot-catalog catalogs/v6/azure/vms.csv @098741e7",
    "eastus Linux pay-as-you-go and spot prices per size (Azure Retail Prices API); "
    "undated snapshot", confidence="medium")
