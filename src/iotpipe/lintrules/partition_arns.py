"""E9102: ARNs the template builds name the partition through ``${AWS::Partition}``, never literally."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from cfnlint.rules import CloudFormationLintRule, RuleMatch

from iotpipe.lintrules._template import SOURCE_URL, Path, properties, resources, strings

LITERAL_PARTITION = re.compile(r"arn:aws(-cn|-us-gov|-iso|-iso-[a-z])?:")
# A whole ARN of one account's existing resource (a customer KMS key from the config, say) already names its
# partition along with its account; only ARNs built in the template must follow the stack's partition.
ACCOUNT_RESOURCE_ARN = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:[^*${}]+$")


def literal_partitions(value: Any, path: Path) -> list[tuple[Path, str]]:
    """``(path, text)`` of each string in ``value`` that spells a partition literally in a built ARN."""
    return [(where, text) for where, text in strings(value, path)
            if LITERAL_PARTITION.search(text) and not ACCOUNT_RESOURCE_ARN.match(text)]


class PartitionAwareArns(CloudFormationLintRule):
    """A literal ``arn:aws:`` breaks the stack in aws-cn, aws-us-gov and the isolated partitions."""

    id = "E9102"
    shortdesc = "ARNs are partition-aware"
    description = (
        "An ARN in a resource's properties or an output spells its partition literally (arn:aws:...). Build it "
        "with Fn::Sub and ${AWS::Partition} (arn:${AWS::Partition}:s3:::...) so the template deploys in every "
        "partition. A complete ARN of one account's existing resource (12-digit account, no wildcard) is allowed."
    )
    source_url = SOURCE_URL
    tags: ClassVar[list[str]] = ["iotpipe", "arn", "partition"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        """A match per string that hard-codes the partition."""
        found: list[tuple[Path, str]] = []
        for logical_id, _, resource in resources(cfn.template):
            found += literal_partitions(properties(resource), ("Resources", logical_id, "Properties"))
        outputs = cfn.template.get("Outputs")
        if isinstance(outputs, dict):
            found += literal_partitions(outputs, ("Outputs",))
        return [RuleMatch(list(path), f"{'/'.join(str(p) for p in path)}: {_excerpt(text)} names the partition "
                                      "literally; write arn:${AWS::Partition}:... in Fn::Sub")
                for path, text in found]


def _excerpt(text: str) -> str:
    start = LITERAL_PARTITION.search(text)
    begin = start.start() if start else 0
    piece = text[begin:begin + 60]
    return repr(piece + ("..." if len(text) > begin + 60 else ""))
