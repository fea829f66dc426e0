"""The cloud-init user data a workstation boots with: its SSH host key, made by the
stack, so `scripts/bootstrap` knows the key before the first connection and pins it.

cloud-init's ssh module (https://cloudinit.readthedocs.io/en/latest/reference/
modules.html#ssh, read 2026-11-23) installs host keys given as ssh_keys
(<type>_private / <type>_public), deletes the image's own (ssh_deletekeys) and
generates the types in ssh_genkeytypes that are still missing: listing only
ed25519, which ssh_keys provides, leaves ours as the one host key. (Its schema
refuses an empty list: `cloud-init schema` checks this file in the tests.) The
document is built as data and rendered by a YAML library: no key material is
placed by hand.

Where the user data can be read: on AWS by processes on the host through IMDSv2
(the stack sets hop limit 1, so containers cannot); on Azure custom data is not
served by IMDS at all. GCP serves user-data to every process on the VM, containers
included, so the GCP stack does not hand a private key over this way.
"""

from __future__ import annotations

import yaml


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (a PEM key) as literal blocks, the way people write them."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def user_data(host_private_key: str, host_public_key: str) -> str:
    """#cloud-config that installs this ed25519 host key and no other."""
    document = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {
            "ed25519_private": host_private_key,
            "ed25519_public": host_public_key.strip(),
        },
    }
    return "#cloud-config\n" + yaml.dump(document, Dumper=_Dumper, sort_keys=False)
