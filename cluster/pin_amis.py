"""Write cluster/cluster.pinned.yaml: cluster.yaml with each ``resolve:ssm:`` AMI resolved to its id.

EC2 resolves an ``ImageId: resolve:ssm:<parameter>`` at launch only for a caller allowed
``ssm:GetParameters``. ``ray up`` launches the head with your credentials, but the CARLA nodes
are launched later by the autoscaler on the head, under the role Ray gives it
(``ray-autoscaler-v1``: AmazonEC2FullAccess and AmazonS3FullAccess, no SSM), so they would
be refused. This script resolves the parameters once, with your credentials (boto3's default
chain, as ``ray up``), in the config's region, and writes the same file with the ids in place
(comments and all), for ``ray up cluster/cluster.pinned.yaml``. Run it again to move to a
newer AMI.

    python cluster/pin_amis.py [--config cluster/cluster.yaml] [--out cluster/cluster.pinned.yaml]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SSM = re.compile(r"resolve:ssm:(?P<name>[^\s\"']+)")


def pin(text: str, resolve: Callable[[str, str], str]) -> str:
    """``text`` (a cluster config) with every ``resolve:ssm:<name>`` replaced by
    ``resolve(region, name)``, the AMI id; `ValueError` if an answer is not one."""
    region = yaml.safe_load(text)["provider"]["region"]
    ids: dict[str, str] = {}
    for name in {m["name"] for m in SSM.finditer(text)}:
        ami = resolve(region, name)
        if not re.fullmatch(r"ami-[0-9a-f]{8,17}", ami):
            raise ValueError(f"SSM parameter {name} in {region} holds {ami!r}, not an AMI id")
        ids[name] = ami
    return SSM.sub(lambda m: ids[m["name"]], text)


def ssm_resolver() -> Callable[[str, str], str]:
    """Resolve SSM parameters with boto3 and your AWS credentials."""
    import boto3  # noqa: PLC0415  (installed next to the Ray CLI, as `ray up` needs it)

    def resolve(region: str, name: str) -> str:
        client = boto3.client("ssm", region_name=region)
        return client.get_parameter(Name=name)["Parameter"]["Value"]

    return resolve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=HERE / "cluster.yaml")
    p.add_argument("--out", type=Path, default=HERE / "cluster.pinned.yaml")
    a = p.parse_args(argv)
    pinned = pin(a.config.read_text(), ssm_resolver())
    a.out.write_text(pinned)
    for ami in sorted(set(re.findall(r"ImageId: (ami-[0-9a-f]+)", pinned))):
        print(f"pinned {ami}")
    print(f"wrote {a.out}; now: ray up {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
