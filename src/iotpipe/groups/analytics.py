"""Analytics group: SQL over the raw archive with Athena (Glue tables with partition projection, a workgroup
with enforced settings, an encrypted results bucket, and the managed policy a user attaches to run ``iotpipe sql``).
"""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import AccountId, AWSObject, GetAtt, Output, Ref, Sub, Tags
from troposphere import athena as tpathena
from troposphere import glue as tpglue
from troposphere import iam as tpiam
from troposphere import s3 as tps3

from iotpipe import naming, policies
from iotpipe.config import AnalyticsConfig
from iotpipe.groups.storage import StorageGroup
from iotpipe.naming import DEFAULT_NAMES, Names

RESULTS_PREFIX = "results/"
ENGINE_VERSION = "Athena engine version 3"
OPENX_SERDE = "org.openx.data.jsonserde.JsonSerDe"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
PARTITION_COLUMNS = ("year", "month", "day", "hour")
# Archive line fields (docs/contract.md); Glue column names are lowercase and the OpenX SerDe matches JSON keys
# case-insensitively, so sequenceNumber lands in sequencenumber.
RAW_COLUMNS = (("sequencenumber", "string"), ("partitionkey", "string"), ("arrivedat", "bigint"),
               ("data", "string"), ("database64", "string"))
QUARANTINE_COLUMNS = (("sequencenumber", "string"), ("partitionkey", "string"), ("reason", "string"),
                      ("sensortype", "string"), ("rejected", "array<struct<reason:string,sensortype:string>>"),
                      ("data", "string"), ("database64", "string"))


@dataclass(frozen=True)
class AnalyticsGroup:
    """What the analytics group made (nothing when ``analytics.enabled`` is false)."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]


def build_analytics(cfg: AnalyticsConfig, names: Names = DEFAULT_NAMES, *, storage: StorageGroup) -> AnalyticsGroup:
    """Glue database and archive tables, the Athena workgroup, its results bucket and the query policy."""
    if not cfg.enabled:
        return AnalyticsGroup((), ())
    database = _database(names)
    years = (cfg.first_year, cfg.last_year)
    raw = _archive_table(names.id(naming.RAW_ARCHIVE_TABLE), naming.RAW_ARCHIVE_TABLE_NAME, "raw", RAW_COLUMNS,
                         storage, database, "Raw archive: one line per Kinesis record, as the processor received it",
                         years)
    quarantine = _archive_table(names.id(naming.QUARANTINE_ARCHIVE_TABLE), naming.QUARANTINE_ARCHIVE_TABLE_NAME,
                                "quarantine", QUARANTINE_COLUMNS, storage, database,
                                "Quarantined records: one line per record the processor refused, with the reason",
                                years)
    results = _results_bucket(cfg, names)
    workgroup = _workgroup(cfg, names, results)
    policy = _query_policy(names, storage, database, results, workgroup)
    resources = (database, raw, quarantine, results, _results_bucket_policy(names, results), workgroup, policy)
    outputs = (
        Output(names.output(naming.OUT_ANALYTICS_DATABASE), Description="Glue database of the raw archive tables",
               Value=Ref(database), Export=names.export(naming.OUT_ANALYTICS_DATABASE)),
        Output(names.output(naming.OUT_ANALYTICS_WORKGROUP), Description="Athena workgroup for iotpipe sql",
               Value=Ref(workgroup), Export=names.export(naming.OUT_ANALYTICS_WORKGROUP)),
        Output(names.output(naming.OUT_ANALYTICS_RESULTS), Description="S3 bucket of Athena query results",
               Value=Ref(results)),
        Output(names.output(naming.OUT_ANALYTICS_POLICY),
               Description="Managed policy to attach to a role that runs iotpipe sql",
               Value=Ref(policy), Export=names.export(naming.OUT_ANALYTICS_POLICY)),
    )
    return AnalyticsGroup(resources, outputs)


def _database(names: Names) -> tpglue.Database:
    return tpglue.Database(
        names.id(naming.ANALYTICS_DATABASE),
        CatalogId=AccountId,
        DatabaseInput=tpglue.DatabaseInput(Name=names.analytics_database_name(),
                                           Description="iotpipe raw archive (partition projection, no crawler)"),
    )


def projection_parameters(location_prefix: Sub, years: tuple[int, int] = (2024, 2035)) -> dict[str, object]:
    """Partition projection over ``year=YYYY/month=MM/day=DD/hour=HH/``: no crawler, no partition upkeep.

    ``years`` (``analytics.first_year``, ``analytics.last_year``) bound the projected years: AWS advises against
    ranges that leave most projected partitions empty, which a query without partition predicates would list.

    Below the hour come ``<shardId>/<firstSeq>-<lastSeq>.jsonl.gz``: Athena reads every object under a partition's
    location, sub-folders included, so the shard level needs no column (``"$path"`` names it).
    """
    return {
        "classification": "json",
        "compressionType": "gzip",
        "projection.enabled": "true",
        "projection.year.type": "integer",
        "projection.year.range": f"{years[0]},{years[1]}",
        "projection.month.type": "integer",
        "projection.month.range": "1,12",
        "projection.month.digits": "2",
        "projection.day.type": "integer",
        "projection.day.range": "1,31",
        "projection.day.digits": "2",
        "projection.hour.type": "integer",
        "projection.hour.range": "0,23",
        "projection.hour.digits": "2",
        "storage.location.template": location_prefix,
    }


def _archive_table(logical_id: str, name: str, prefix: str, columns: tuple[tuple[str, str], ...],
                   storage: StorageGroup, database: tpglue.Database, description: str,
                   years: tuple[int, int]) -> tpglue.Table:
    # ${!year} is Fn::Sub's escape: the template keeps the literal ${year} Athena substitutes.
    template = Sub("s3://${Bucket}/" + prefix + "/year=${!year}/month=${!month}/day=${!day}/hour=${!hour}/",
                   Bucket=storage.bucket_name)
    return tpglue.Table(
        logical_id,
        CatalogId=AccountId,
        DatabaseName=Ref(database),
        TableInput=tpglue.TableInput(
            Name=name,
            Description=description,
            TableType="EXTERNAL_TABLE",
            Parameters=projection_parameters(template, years),
            PartitionKeys=[tpglue.Column(Name=column, Type="int") for column in PARTITION_COLUMNS],
            StorageDescriptor=tpglue.StorageDescriptor(
                Columns=[tpglue.Column(Name=column, Type=kind) for column, kind in columns],
                Location=Sub("s3://${Bucket}/" + prefix + "/", Bucket=storage.bucket_name),
                InputFormat=TEXT_INPUT,
                OutputFormat=TEXT_OUTPUT,
                Compressed=True,
                SerdeInfo=tpglue.SerdeInfo(
                    SerializationLibrary=OPENX_SERDE,
                    # A line that is not JSON (never written by the processors) reads as nulls, not a failure.
                    Parameters={"ignore.malformed.json": "true", "case.insensitive": "true"},
                ),
            ),
        ),
    )


def _results_bucket(cfg: AnalyticsConfig, names: Names) -> tps3.Bucket:
    # No BucketName: a generated name is globally unique and nothing outside the stack needs to guess it.
    return tps3.Bucket(
        names.id(naming.ANALYTICS_RESULTS_BUCKET),
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
        BucketEncryption=tps3.BucketEncryption(ServerSideEncryptionConfiguration=[
            tps3.ServerSideEncryptionRule(
                ServerSideEncryptionByDefault=tps3.ServerSideEncryptionByDefault(SSEAlgorithm="AES256"))]),
        VersioningConfiguration=tps3.VersioningConfiguration(Status="Enabled"),
        OwnershipControls=tps3.OwnershipControls(Rules=[
            tps3.OwnershipControlsRule(ObjectOwnership="BucketOwnerEnforced")]),
        LifecycleConfiguration=tps3.LifecycleConfiguration(Rules=[
            tps3.LifecycleRule(
                Id="ExpireQueryResults",
                Status="Enabled",
                ExpirationInDays=cfg.results_expiry_days,
                NoncurrentVersionExpiration=tps3.NoncurrentVersionExpiration(NoncurrentDays=1),
                AbortIncompleteMultipartUpload=tps3.AbortIncompleteMultipartUpload(DaysAfterInitiation=1),
            )]),
        PublicAccessBlockConfiguration=tps3.PublicAccessBlockConfiguration(
            BlockPublicAcls=True, BlockPublicPolicy=True, IgnorePublicAcls=True, RestrictPublicBuckets=True),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM), Purpose="IoT-Query-Results"),
        Metadata={"checkov": {"skip": [{
            "id": "CKV_AWS_18",
            "comment": "Query results are copies of archive data that expire within days; who ran which query is "
                       "in Athena's query history and CloudTrail.",
        }]}},
    )


def _results_bucket_policy(names: Names, results: tps3.Bucket) -> tps3.BucketPolicy:
    return tps3.BucketPolicy(
        names.id(naming.ANALYTICS_RESULTS_BUCKET_POLICY),
        Bucket=Ref(results),
        PolicyDocument=policies.document(policies.deny_insecure_transport(GetAtt(results, "Arn"))),
    )


def _workgroup(cfg: AnalyticsConfig, names: Names, results: tps3.Bucket) -> tpathena.WorkGroup:
    return tpathena.WorkGroup(
        names.id(naming.ANALYTICS_WORKGROUP),
        Name=names.analytics_workgroup_name(),
        Description=Sub("iotpipe sql over the raw archive (${EnvironmentSuffix})"),
        State="ENABLED",
        # Deleting the stack deletes the workgroup even when it has saved queries.
        RecursiveDeleteOption=True,
        WorkGroupConfiguration=tpathena.WorkGroupConfiguration(
            EnforceWorkGroupConfiguration=True,
            PublishCloudWatchMetricsEnabled=True,
            BytesScannedCutoffPerQuery=cfg.bytes_scanned_cutoff_mb * 1024 * 1024,
            EngineVersion=tpathena.EngineVersion(SelectedEngineVersion=ENGINE_VERSION),
            ResultConfiguration=tpathena.ResultConfiguration(
                OutputLocation=Sub("s3://${" + results.title + "}/" + RESULTS_PREFIX),
                EncryptionConfiguration=tpathena.EncryptionConfiguration(EncryptionOption="SSE_S3"),
            ),
        ),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
    )


def _query_policy(names: Names, storage: StorageGroup, database_resource: tpglue.Database, results: tps3.Bucket,
                  workgroup: tpathena.WorkGroup) -> tpiam.ManagedPolicy:
    arn = "arn:${AWS::Partition}:"
    # In Fn::Sub, ${<logical id>} is the resource's Ref: the workgroup's and database's names.
    workgroup_arn = Sub(arn + "athena:${AWS::Region}:${AWS::AccountId}:workgroup/${" + workgroup.title + "}")
    glue = arn + "glue:${AWS::Region}:${AWS::AccountId}:"
    database = "${" + database_resource.title + "}"

    def glue_arn(resource: str) -> Sub:
        return Sub(glue + resource)

    results_arn = GetAtt(results, "Arn")
    return tpiam.ManagedPolicy(
        names.id(naming.ANALYTICS_POLICY),
        Description=Sub("Run iotpipe sql on env ${EnvironmentSuffix}: its workgroup, archive tables and buckets"),
        PolicyDocument=policies.document(
            policies.athena_query_runner(workgroup_arn),
            policies.glue_database_reader(Sub(glue + "catalog"), glue_arn("database/" + database),
                                          glue_arn("database/default")),
            policies.glue_table_reader(
                Sub(glue + "catalog"), glue_arn("database/" + database),
                glue_arn(f"table/{database}/{naming.RAW_ARCHIVE_TABLE_NAME}"),
                glue_arn(f"table/{database}/{naming.QUARANTINE_ARCHIVE_TABLE_NAME}")),
            policies.object_reader(storage.bucket_arn, *naming.ARCHIVE_PREFIXES, sid="ReadArchive"),
            policies.bucket_lister(storage.bucket_arn, *naming.ARCHIVE_PREFIXES, sid="ListArchive"),
            policies.query_results_user(results_arn, RESULTS_PREFIX),
            policies.bucket_lister(results_arn, RESULTS_PREFIX, sid="ListQueryResults"),
            policies.bucket_locator(storage.bucket_arn, results_arn),
            policies.stack_reader(Sub(arn + "cloudformation:${AWS::Region}:${AWS::AccountId}:stack/"
                                      "${AWS::StackName}/*")),
        ),
    )
