"""``iotpipe lint --format sarif|junit|json``: reports CI systems read, from the same findings as the text."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
import pytest
from click.testing import CliRunner

import iotpipe
from iotpipe.cli import main
from iotpipe.lint import Finding
from iotpipe.lintreport import TemplateReport, format_junit, format_sarif, rule_docs

# The OASIS schema of SARIF 2.1.0 (errata 01), vendored unchanged: tests/data/sarif-schema-2.1.0.NOTICE.md.
SARIF_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "sarif-schema-2.1.0.json"

E9104 = Finding("cfn-lint", "E9104", "error", "Logs: AWS::S3::Bucket without encryption at rest", "Resources/Logs", 3,
                resource="Logs", title="Data stores are encrypted at rest",
                help_uri="docs/security.md#iotpipes-own-lint-rules")
W3005 = Finding("cfn-lint", "W3005", "warning", "Obsolete DependsOn on resource (Logs)", "Resources/Vpc/DependsOn", 9,
                resource="Vpc", title="Check obsolete DependsOn configuration for Resources",
                help_uri="https://github.com/aws-cloudformation/cfn-lint/blob/main/docs/rules.md")
SKIP = Finding("checkov", "CKV_AWS_18", "informational", "skipped: Ensure the S3 bucket has access logging enabled "
               "(it is the log bucket)", "Resources/Logs", 3, resource="Logs",
               title="Ensure the S3 bucket has access logging enabled")
FINDINGS = (E9104, SKIP, W3005)


def one(findings: tuple[Finding, ...], name: str = "stacks/app.yml") -> list[TemplateReport]:
    return [TemplateReport(name, findings)]


# A template that is not iotpipe's: an unencrypted bucket (iotpipe's E9104 applies: a bucket appears) next to a
# VPC (no iotpipe rule covers it), in JSON.
FOREIGN_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {
        "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
        "Logs": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "team-logs"}},
    },
}


def validate_sarif(document: dict) -> None:
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))).validate(document)


def test_the_vendored_schema_rejects_what_sarif_forbids() -> None:
    """The schema used below is strict where it matters: a result without a message is not SARIF."""
    log = json.loads(format_sarif(one(FINDINGS), "0.4.0"))
    validate_sarif(log)
    del log["runs"][0]["results"][0]["message"]
    with pytest.raises(jsonschema.ValidationError):
        validate_sarif(log)


def test_sarif_has_a_rule_per_rule_id_and_a_located_result_per_finding() -> None:
    log = json.loads(format_sarif(one(FINDINGS), "0.4.0"))
    validate_sarif(log)
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("iotpipe lint", "0.4.0")
    assert [rule["id"] for rule in driver["rules"]] == ["CKV_AWS_18", "E9104", "W3005"]
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert rules["E9104"]["shortDescription"]["text"] == "Data stores are encrypted at rest"
    assert "docs/security.md#iotpipes-own-lint-rules" in rules["E9104"]["help"]["text"]
    assert "helpUri" not in rules["E9104"]  # a path in the repository is no absolute URI
    assert rules["W3005"]["helpUri"] == W3005.help_uri
    assert all("docs/security.md" in rule["help"]["text"] for rule in driver["rules"])
    results = run["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [("E9104", "error"), ("CKV_AWS_18", "note"),
                                                             ("W3005", "warning")]
    assert all(driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"] for r in results)
    first = results[0]["locations"][0]
    assert first["physicalLocation"] == {"artifactLocation": {"uri": "stacks/app.yml"}, "region": {"startLine": 3}}
    assert first["logicalLocations"] == [{"name": "Logs", "kind": "resource", "fullyQualifiedName": "Resources/Logs"}]
    assert results[0]["message"]["text"] == E9104.message
    # the checkov check skipped with a reason in the template is suppressed in source, the others are open
    assert results[1]["suppressions"] == [{"kind": "inSource", "justification": SKIP.message}]
    assert "suppressions" not in results[0] and "suppressions" not in results[2]


def test_sarif_of_no_findings_is_a_valid_empty_run() -> None:
    log = json.loads(format_sarif(one(()), "0.4.0"))
    validate_sarif(log)
    assert log["runs"][0]["results"] == [] and log["runs"][0]["tool"]["driver"]["rules"] == []


def test_junit_has_a_case_per_rule_and_resource_failed_when_it_blocks() -> None:
    findings = (*FINDINGS, Finding("cfn-lint", "E9104", "error", "Other: no encryption", "Resources/Other", 12,
                                   resource="Other"))
    root = ElementTree.fromstring(format_junit(one(findings)))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "3", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"E9104 Logs", "E9104 Other", "W3005 Vpc", "CKV_AWS_18 Logs"}
    failure = cases["E9104 Logs"].find("failure")
    assert failure is not None and failure.get("type") == "error"
    assert failure.text == f"stacks/app.yml:3 E9104 {E9104.message}"
    assert cases["W3005 Vpc"].find("failure") is not None  # warnings block the gate, so they fail the test
    assert cases["CKV_AWS_18 Logs"].find("skipped") is not None
    assert cases["E9104 Other"].get("classname") == "cfn-lint.E9104" and cases["E9104 Other"].get("line") == "12"


def test_junit_of_no_findings_is_one_passing_case() -> None:
    suite = ElementTree.fromstring(format_junit(one((), "t.yml"))).find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    cases = list(suite.iter("testcase"))
    assert len(cases) == 1 and not list(cases[0])


def test_several_templates_share_one_sarif_run_and_get_a_junit_suite_each() -> None:
    reports = [TemplateReport("a.yml", (E9104,)), TemplateReport("b/c.json", (E9104, W3005))]
    log = json.loads(format_sarif(reports, "0.4.0"))
    validate_sarif(log)
    assert [rule["id"] for rule in log["runs"][0]["tool"]["driver"]["rules"]] == ["E9104", "W3005"]
    assert [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]] == [
        "a.yml", "b/c.json", "b/c.json"]
    suites = ElementTree.fromstring(format_junit(reports)).findall("testsuite")
    assert [(s.get("name"), s.get("tests")) for s in suites] == [("iotpipe lint a.yml", "1"),
                                                                 ("iotpipe lint b/c.json", "2")]


def test_rule_docs_keep_the_first_title_of_each_rule() -> None:
    assert [(d.rule, d.source, d.title) for d in rule_docs([E9104, E9104, SKIP])] == [
        ("CKV_AWS_18", "checkov", SKIP.title), ("E9104", "cfn-lint", E9104.title)]


@pytest.fixture(scope="module")
def foreign_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stacks") / "network.json"
    path.write_text(json.dumps(FOREIGN_TEMPLATE, indent=2), encoding="utf-8")
    return path


def test_lint_writes_valid_sarif_for_any_template_and_still_exits_1(foreign_template: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "lint.sarif"
    result = CliRunner().invoke(main, ["lint", str(foreign_template), "--region", "us-east-1", "--format", "sarif",
                                       "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert f"{foreign_template}:" in result.stdout
    assert " E9104 Logs: AWS::S3::Bucket without encryption" in result.stdout
    log = json.loads(out.read_text(encoding="utf-8"))
    validate_sarif(log)
    results = log["runs"][0]["results"]
    assert log["runs"][0]["tool"]["driver"]["version"] == iotpipe.__version__
    by_rule = {r["ruleId"]: r for r in results}
    # iotpipe's own rule applies where its resource appears; checkov's checks run on the foreign template too
    assert by_rule["E9104"]["locations"][0]["logicalLocations"][0]["name"] == "Logs"
    assert any(rule.startswith("CKV_AWS_") for rule in by_rule)
    # no iotpipe rule speaks about the VPC
    assert not [r for r in results if r["ruleId"].startswith("E91")
                and r["locations"][0]["logicalLocations"][0]["name"] == "Vpc"]
    line = json.dumps(FOREIGN_TEMPLATE, indent=2).splitlines().index('    "Logs": {') + 1
    assert by_rule["E9104"]["locations"][0]["physicalLocation"]["region"]["startLine"] == line


def test_lint_junit_on_stdout_parses(foreign_template: Path) -> None:
    result = CliRunner().invoke(main, ["lint", str(foreign_template), "--region", "us-east-1", "--no-checkov",
                                       "--format", "junit"])
    assert result.exit_code == 1, result.output
    suite = ElementTree.fromstring(result.stdout).find("testsuite")
    assert suite is not None
    assert {case.get("name") for case in suite.iter("testcase")} == {"E9104 Logs"}


def test_lint_format_json_equals_output_json(foreign_template: Path) -> None:
    args = ["lint", str(foreign_template), "--region", "us-east-1", "--no-checkov"]
    by_format = CliRunner().invoke(main, [*args, "--format", "json"])
    by_output = CliRunner().invoke(main, [*args, "--output", "json"])
    assert by_format.exit_code == by_output.exit_code == 1
    assert json.loads(by_format.stdout) == json.loads(by_output.stdout)
    assert [(f["resource"], f["file"]) for f in json.loads(by_format.stdout)] == [("Logs", str(foreign_template))]


def test_lint_takes_several_templates_and_exits_1_when_any_blocks(foreign_template: Path, tmp_path: Path) -> None:
    clean = tmp_path / "vpc.yml"
    clean.write_text("Resources:\n  Vpc:\n    Type: AWS::EC2::VPC\n    Properties:\n      CidrBlock: 10.0.0.0/16\n",
                     encoding="utf-8")
    args = ["lint", "--region", "us-east-1", "--no-checkov"]
    assert CliRunner().invoke(main, [*args, str(clean)]).exit_code == 0
    result = CliRunner().invoke(main, [*args, str(clean), str(foreign_template)])
    assert result.exit_code == 1, result.output
    assert f"{clean}: 0 blocking finding(s), 0 informational" in result.stderr
    assert f"{foreign_template}: 1 blocking finding(s), 0 informational (cfn-lint 1)" in result.stderr


def test_a_clean_template_exits_0_with_every_format(tmp_path: Path) -> None:
    path = tmp_path / "vpc.yml"
    path.write_text("Resources:\n  Vpc:\n    Type: AWS::EC2::VPC\n    Properties:\n      CidrBlock: 10.0.0.0/16\n",
                    encoding="utf-8")
    for fmt in ("text", "json", "sarif", "junit"):
        out = tmp_path / f"report.{fmt}"
        result = CliRunner().invoke(main, ["lint", str(path), "--region", "us-east-1", "--no-checkov",
                                           "--format", fmt, "-o", str(out)])
        assert result.exit_code == 0, (fmt, result.output)
        assert out.exists(), fmt
    validate_sarif(json.loads((tmp_path / "report.sarif").read_text(encoding="utf-8")))
