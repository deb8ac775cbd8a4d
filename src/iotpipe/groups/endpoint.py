"""Endpoint group: a custom resource that looks up the account's AWS IoT data endpoint (iot:Data-ATS).

The seed's ``IoTEndpoint`` output was ``${AWS::AccountId}.iot.${AWS::Region}.amazonaws.com``, which is not how
AWS IoT endpoints are formed: DescribeEndpoint returns "identifier.iot.region.amazonaws.com" with a per-account
identifier, and only DescribeEndpoint knows it. CloudFormation has no attribute for it, so a small function
calls DescribeEndpoint (endpointType iot:Data-ATS, the endpoint for Amazon Trust Services certificates) once per
stack operation and answers CloudFormation through the pre-signed response URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import awacs.iot as awsiot
from awacs.aws import Allow, Statement
from troposphere import AWSObject, GetAtt, Output, Ref, Tags, iam
from troposphere import awslambda as tplambda
from troposphere import cloudformation as tpcfn
from troposphere import logs as tplogs

from iotpipe import naming, policies
from iotpipe.config import PipelineConfig
from iotpipe.groups.keys import KeyGroup
from iotpipe.naming import DEFAULT_NAMES, Names

ENDPOINT_TYPE = "iot:Data-ATS"
LOOKUP_RUNTIME = "python3.13"

# Inline (Code.ZipFile), stdlib + boto3 only; one JSON log line per request, never the event (it holds the
# pre-signed response URL).
LOOKUP_CODE = '''\
import json
import logging
import urllib.request

import boto3

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)
PHYSICAL_ID = "iot-data-endpoint"


def _log(message, **fields):
    LOG.info(json.dumps({"message": message, **fields}, sort_keys=True))


def _respond(event, context, status, data, reason):
    body = json.dumps({
        "Status": status,
        "Reason": reason or "see CloudWatch log stream " + context.log_stream_name,
        "PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_ID,
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": data,
    }).encode("utf-8")
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                     headers={"Content-Type": "", "Content-Length": str(len(body))})
    with urllib.request.urlopen(request, timeout=30) as response:
        _log("response sent", status=status, httpStatus=response.status)


def handler(event, context):
    request_type = event.get("RequestType")
    endpoint_type = (event.get("ResourceProperties") or {}).get("EndpointType", "iot:Data-ATS")
    _log("request", requestType=request_type, logicalId=event.get("LogicalResourceId"),
         endpointType=endpoint_type)
    status, data, reason = "SUCCESS", {}, ""
    try:
        if request_type in ("Create", "Update"):
            address = boto3.client("iot").describe_endpoint(endpointType=endpoint_type)["endpointAddress"]
            data = {"Address": address}
            _log("endpoint found", address=address)
    except Exception as exc:  # any failure must still answer CloudFormation, or the stack waits an hour
        LOG.exception("DescribeEndpoint failed")
        status, reason = "FAILED", "DescribeEndpoint failed: " + str(exc)[:200]
    _respond(event, context, status, data, reason)
'''


class IoTEndpointLookup(tpcfn.CustomResource):
    """``Custom::IoTEndpoint``: a custom resource whose ``Address`` attribute is the data endpoint.

    A ``Custom::`` type name (rather than AWS::CloudFormation::CustomResource) says what it is in the console and
    in change sets.
    """

    resource_type = naming.IOT_ENDPOINT_RESOURCE_TYPE
    props: ClassVar[dict[str, tuple[object, bool]]] = {"ServiceToken": (str, True), "EndpointType": (str, True)}


@dataclass(frozen=True)
class EndpointGroup:
    """The lookup's resources and the endpoint address it yields."""

    resources: tuple[AWSObject, ...]
    address: GetAtt
    outputs: tuple[Output, ...] = ()


def build_endpoint(cfg: PipelineConfig, names: Names = DEFAULT_NAMES, *, keys: KeyGroup) -> EndpointGroup:
    """The lookup function (its own role and encrypted log group) and the ``Custom::IoTEndpoint`` resource."""
    log_group = _log_group(cfg, names, keys)
    role = _role(names, log_group)
    function = _function(names, role, log_group)
    lookup = IoTEndpointLookup(names.id(naming.IOT_ENDPOINT), ServiceToken=GetAtt(function, "Arn"),
                               EndpointType=ENDPOINT_TYPE)
    return EndpointGroup((log_group, role, function, lookup), GetAtt(lookup, "Address"))


def _log_group(cfg: PipelineConfig, names: Names, keys: KeyGroup) -> tplogs.LogGroup:
    return tplogs.LogGroup(
        names.id(naming.IOT_ENDPOINT_LOG_GROUP),
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
        LogGroupName=names.endpoint_log_group_name(),
        RetentionInDays=cfg.processor.log_retention_days,
        KmsKeyId=cfg.processor.log_kms_key_arn or keys.key_arn,
    )


def _role(names: Names, log_group: tplogs.LogGroup) -> iam.Role:
    describe = Statement(Sid="DescribeDataEndpoint", Effect=Allow, Action=[awsiot.DescribeEndpoint],
                         Resource=["*"])
    return iam.Role(
        names.id(naming.IOT_ENDPOINT_ROLE),
        # The reason lint rule E9101 (iotpipe.lintrules) asks of every Allow on Resource "*".
        Metadata={"iotpipe": {"wildcard-resources": {"DescribeDataEndpoint": (
            "iot:DescribeEndpoint has no resource type in the Service Authorization Reference (AWS IoT), so "
            "\"*\" is the only resource IAM accepts; it reads one hostname and the role can do nothing else.")}}},
        AssumeRolePolicyDocument=policies.assume_role_by("lambda.amazonaws.com"),
        Policies=[iam.Policy(PolicyName="IoTEndpointLookupPolicy", PolicyDocument=policies.document(
            describe, policies.log_writer(GetAtt(log_group, "Arn"))))],
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
    )


def _function(names: Names, role: iam.Role, log_group: tplogs.LogGroup) -> tplambda.Function:
    return tplambda.Function(
        names.id(naming.IOT_ENDPOINT_FUNCTION),
        Description="Looks up the AWS IoT data endpoint (iot:Data-ATS) for the IoTEndpoint output",
        Runtime=LOOKUP_RUNTIME,
        Architectures=["arm64"],
        Handler="index.handler",
        Role=GetAtt(role, "Arn"),
        Timeout=60,
        MemorySize=128,
        Code=tplambda.Code(ZipFile=LOOKUP_CODE),
        LoggingConfig=tplambda.LoggingConfig(LogGroup=Ref(log_group)),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM), Purpose="IoT-Endpoint-Lookup"),
        Metadata={"checkov": {"skip": [
            {"id": "CKV_AWS_115", "comment": "Runs once per stack operation; a reservation would take from the "
                                             "account's unreserved concurrency, which must keep 100."},
            {"id": "CKV_AWS_116", "comment": "CloudFormation invokes it and waits for its answer; a failure fails "
                                             "the stack operation, there is no event to keep."},
            {"id": "CKV_AWS_117", "comment": "Calls one AWS API over TLS; a VPC would add NAT cost only."},
        ]}},
    )
