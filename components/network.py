"""Firewall rules every cloud opens, computed once from the spec.

A cloud module only translates these into its own resources; it never decides
which port opens to which CIDR.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from components.spec import WorkstationSpec

PORT_PURPOSES = {
    22: "SSH",
    8888: "JupyterLab on the host",
    8890: "JupyterLab in the container",
    5000: "Clara AIAA server",
}


def port_purpose(port: int) -> str:
    return PORT_PURPOSES.get(port, "app port")


@dataclass(frozen=True)
class IngressRule:
    port: int
    cidr: str
    description: str

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_network(self.cidr).version == 6


def ingress_rules(spec: WorkstationSpec) -> tuple[IngressRule, ...]:
    """One rule per port x CIDR, in the order the stack lists them."""
    return tuple(
        IngressRule(port, cidr, f"{port_purpose(port)} from {cidr}")
        for port in spec.open_ports
        for cidr in spec.allowed_cidrs
    )


@dataclass(frozen=True)
class PortRule:
    """All sources of one port and IP family: GCP and Azure rules take a list of
    sources but refuse to mix IPv4 and IPv6 in one rule."""

    port: int
    ip_version: int
    cidrs: tuple[str, ...]

    @property
    def name_suffix(self) -> str:
        return f"{self.port}" if self.ip_version == 4 else f"{self.port}-v6"


def port_rules(spec: WorkstationSpec) -> tuple[PortRule, ...]:
    rules = []
    for port in spec.open_ports:
        for version in (4, 6):
            cidrs = tuple(c for c in spec.allowed_cidrs
                          if ipaddress.ip_network(c).version == version)
            if cidrs:
                rules.append(PortRule(port, version, cidrs))
    return tuple(rules)
