"""iotpipe's invariants as cfn-lint rules, one per module (cfn-lint's ``rules/`` shape), ids E9101-E9104.

``iotpipe lint`` and ``deploy`` load them through cfn-lint's custom-rules mechanism (``append_rules``, the
``--append-rules`` option), so a customised template keeps the guarantees of the default one. With cfn-lint
alone: ``cfn-lint --append-rules iotpipe.lintrules template.yml``.
"""

from __future__ import annotations

from iotpipe.lintrules.alarm_notifies_topic import AlarmNotifiesTopic
from iotpipe.lintrules.encryption_at_rest import EncryptionAtRest
from iotpipe.lintrules.iam_wildcard_resource import IamWildcardResource
from iotpipe.lintrules.partition_arns import PartitionAwareArns

__all__ = ["RULE_IDS", "AlarmNotifiesTopic", "EncryptionAtRest", "IamWildcardResource", "PartitionAwareArns"]

RULE_IDS = tuple(rule.id for rule in (IamWildcardResource, PartitionAwareArns, AlarmNotifiesTopic, EncryptionAtRest))
