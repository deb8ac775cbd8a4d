"""E9101: an IAM Allow on ``Resource: "*"`` carries its reason in the resource's Metadata."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from cfnlint.rules import CloudFormationLintRule, RuleMatch

from iotpipe.lintrules._template import METADATA_KEY, SOURCE_URL, Path, annotation, as_list, properties, resources

REASON_KEY = "wildcard-resources"
# Where each resource type keeps its policy documents: a top-level PolicyDocument, or a Policies list of them.
DOCUMENT_TYPES = frozenset({
    "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy", "AWS::IAM::UserPolicy",
    "AWS::IAM::GroupPolicy", "AWS::IoT::Policy", "AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy",
    "AWS::SQS::QueuePolicy",
})
POLICIES_TYPES = frozenset({"AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"})
# Not checked: AWS::KMS::Key's KeyPolicy, where "*" means the key itself (a key policy cannot name another
# resource; AWS KMS developer guide, "Key policies": "the resource is the KMS key to which the key policy is
# attached").


def policy_documents(resource_type: str, props: Mapping[str, Any], path: Path) -> Iterator[tuple[Path, Any]]:
    """``(path, document)`` of every policy document the resource holds."""
    if resource_type in DOCUMENT_TYPES:
        yield (*path, "PolicyDocument"), props.get("PolicyDocument")
    elif resource_type in POLICIES_TYPES and isinstance(props.get("Policies"), list):
        for index, policy in enumerate(props["Policies"]):
            if isinstance(policy, Mapping):
                yield (*path, "Policies", index, "PolicyDocument"), policy.get("PolicyDocument")


def wildcard_statements(document: Any, path: Path) -> Iterator[tuple[Path, Mapping[str, Any]]]:
    """``(path, statement)`` of every Allow statement whose Resource is or contains ``"*"``."""
    if not isinstance(document, Mapping):
        return
    statements = document.get("Statement")
    listed = isinstance(statements, list)
    for index, statement in enumerate(as_list(statements)):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
            continue
        if "*" in as_list(statement.get("Resource")):
            yield ((*path, "Statement", index) if listed else (*path, "Statement")), statement


class IamWildcardResource(CloudFormationLintRule):
    """An Allow on every resource must say why no ARN can be named."""

    id = "E9101"
    shortdesc = "IAM Resource \"*\" needs a reason"
    description = (
        "An Allow statement with Resource \"*\" (in a role, user, group, managed or inline policy, IoT policy, "
        "or bucket, topic or queue policy) needs a Sid and a non-empty reason under the resource's "
        f"Metadata.{METADATA_KEY}.{REASON_KEY}.<Sid>: most actions accept an ARN, and the few that do not "
        "(iot:DescribeEndpoint) should say so where the policy is reviewed. KMS key policies are exempt: there "
        "\"*\" means the key itself."
    )
    source_url = SOURCE_URL
    tags: ClassVar[list[str]] = ["iotpipe", "iam", "least-privilege"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        """A match per unexplained wildcard statement."""
        matches = []
        for logical_id, resource_type, resource in resources(cfn.template):
            reasons = annotation(resource, REASON_KEY)
            path: Path = ("Resources", logical_id, "Properties")
            for doc_path, document in policy_documents(resource_type, properties(resource), path):
                for statement_path, statement in wildcard_statements(document, doc_path):
                    problem = _problem(statement, reasons, logical_id)
                    if problem:
                        matches.append(RuleMatch([*statement_path, "Resource"], problem))
        return matches


def _problem(statement: Mapping[str, Any], reasons: Mapping[str, Any], logical_id: str) -> str:
    sid = statement.get("Sid")
    where = f"Resources/{logical_id}/Metadata/{METADATA_KEY}/{REASON_KEY}"
    if not isinstance(sid, str) or not sid:
        return (f"{logical_id}: an Allow statement on Resource \"*\" has no Sid; scope it to ARNs, or give it a "
                f"Sid and the reason no ARN can be named under {where}/<Sid>")
    reason = reasons.get(sid)
    if not isinstance(reason, str) or not reason.strip():
        return (f"{logical_id}: statement {sid} allows {_actions(statement)} on Resource \"*\" without a reason; "
                f"scope it to ARNs, or say why no ARN can be named under {where}/{sid}")
    return ""


def _actions(statement: Mapping[str, Any]) -> str:
    return ", ".join(str(action) for action in as_list(statement.get("Action"))) or "its actions"
