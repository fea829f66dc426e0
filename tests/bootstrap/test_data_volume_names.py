"""The data-volume step's pure parts: which guest device is the stack's volume on each
cloud (the names components/ attach it under), and fstab(5) escaping."""

from __future__ import annotations

import pytest

from bootstrap.options import BootstrapOptions
from bootstrap.steps import data_volume as dv


def test_each_clouds_volume_id_maps_to_the_device_the_stack_attaches() -> None:
    from components import aws, azure, gcp

    assert dv.declared_devices("vol-0123456789abcdef0") == (
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0",)
    assert dv.declared_devices("projects/p/zones/us-central1-a/disks/wb-data") == (
        f"/dev/disk/by-id/google-{gcp.DATA_DEVICE_NAME}",)
    assert dv.declared_devices("/subscriptions/s/resourceGroups/rg/providers/"
                               "Microsoft.Compute/disks/wb-data") == (
        f"/dev/disk/azure/scsi1/lun{azure.DATA_LUN}",)
    # Xen instance types show the attachment's name, /dev/sdf as /dev/xvdf.
    assert aws.DATA_DEVICE.replace("/dev/sd", "/dev/xvd") == dv.AWS_XEN_DEVICE


def test_the_volume_id_is_checked_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="is not an AWS, GCP or Azure disk ID"):
        BootstrapOptions(data_volume_id="disk-1")
    with pytest.raises(ValueError, match="is a disk on aws, but --cloud is gcp"):
        BootstrapOptions(data_volume_id="vol-0123456789abcdef0", cloud="gcp")
    with pytest.raises(ValueError, match="both name the data disk; give one"):
        BootstrapOptions(data_volume_id="vol-0123456789abcdef0", data_device="/dev/sdf")
    with pytest.raises(ValueError, match="must not hold control characters"):
        BootstrapOptions(data_mount="/data\nx")


@pytest.mark.parametrize("path, field", [
    ("/data", "/data"),
    ("/mnt/my data", "/mnt/my\\040data"),
    ("/mnt/tab\there", "/mnt/tab\\011here"),
    ("/mnt/back\\slash", "/mnt/back\\134slash"),
    ("/mnt/\\040 literal", "/mnt/\\134040\\040literal"),
])
def test_fstab_escapes_round_trip(path: str, field: str) -> None:
    assert dv.fstab_escape(path) == field
    assert dv.fstab_unescape(field) == path
    assert " " not in field and "\t" not in field


def test_fstab_line_has_the_real_type_the_ordering_and_replaces_only_its_own() -> None:
    old = (b"# /etc/fstab\nUUID=aaa / ext4 defaults 0 1\n"
           b"UUID=old /mnt/my\\040data ext4 defaults,nofail 0 2\n/dev/sdz /mnt/my ext4 x 0 0\n")
    new = dv.fstab_with_mount(old, "bbb", "/mnt/my data", "xfs").decode().splitlines()
    assert new == ["# /etc/fstab", "UUID=aaa / ext4 defaults 0 1", "/dev/sdz /mnt/my ext4 x 0 0",
                   "UUID=bbb /mnt/my\\040data xfs defaults,nofail,x-systemd.before="
                   "docker.service,x-systemd.device-timeout=10s 0 0"]
