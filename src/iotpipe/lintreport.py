"""``iotpipe lint``'s findings in the formats CI systems read: text, JSON, SARIF 2.1.0 and JUnit XML.

One report holds every tool's findings (cfn-lint with iotpipe's rules E9101-E9104, and checkov). cfn-lint's own
SARIF and JUnit formatters (``cfnlint.formatters``) take only cfn-lint's matches and need optional packages, so
the two formats are written here from :class:`~iotpipe.lint.Finding`, in the shape cfn-lint gives them (a SARIF
rule per rule id with its description and help link, a JUnit test case per failed check).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

from iotpipe.lint import Finding, blocking

FORMATS = ("text", "json", "sarif", "junit")
SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
# Where iotpipe documents the gate and its own rules (the project publishes no site: the page in the repository).
SECURITY_DOC = "docs/security.md"
_SARIF_LEVEL = {"error": "error", "warning": "warning", "informational": "note"}
_TOOL_DOCS = {
    "cfn-lint": "cfn-lint's rule reference",
    "checkov": "checkov's policy index (checkov --list)",
}


@dataclass(frozen=True)
class TemplateReport:
    """The findings of one linted template, and the name it is reported under (its path, as the user gave it)."""

    name: str
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class RuleDoc:
    """What a report says about one rule: its id, the tool that owns it, a title and where it is documented."""

    rule: str
    source: str
    title: str
    help_uri: str

    def help_text(self) -> str:
        """A paragraph of help: the rule, its reference, and how iotpipe's gate treats it."""
        tool = _TOOL_DOCS.get(self.source, self.source)
        where = (f"iotpipe's {SECURITY_DOC}#iotpipes-own-lint-rules" if self.rule.startswith("E91")
                 else f"{tool}: {self.help_uri}" if self.help_uri else tool)
        return (f"{self.rule} ({self.source}): {self.title or self.rule}. Reference: {where}. "
                f"iotpipe lint blocks on errors and warnings; how to satisfy or skip a check with a reason: "
                f"{SECURITY_DOC} (The lint gate).")


def rule_docs(findings: Iterable[Finding]) -> list[RuleDoc]:
    """One :class:`RuleDoc` per rule id among ``findings``, sorted by id."""
    docs: dict[str, RuleDoc] = {}
    for finding in findings:
        docs.setdefault(finding.rule, RuleDoc(finding.rule, finding.source, finding.title, finding.help_uri))
    return [docs[rule] for rule in sorted(docs)]


def format_text(reports: Sequence[TemplateReport]) -> str:
    """``file:line rule message``, a line per finding."""
    return "".join(f"{finding.format(report.name)}\n" for report in reports for finding in report.findings)


def format_json(reports: Sequence[TemplateReport]) -> str:
    """A JSON list of the findings' dicts, each with the ``file`` it is about."""
    return json.dumps([{**finding.as_dict(), "file": report.name} for report in reports
                       for finding in report.findings], indent=2) + "\n"


def sarif_log(reports: Sequence[TemplateReport], version: str) -> dict[str, Any]:
    """A SARIF 2.1.0 log of the templates' findings, one run of the tool ``iotpipe lint`` at ``version``; each
    result is located in its template (the name as given: relative to the repository root for GitHub code
    scanning) at its line, and at its resource's logical id."""
    docs = rule_docs(finding for report in reports for finding in report.findings)
    index = {doc.rule: position for position, doc in enumerate(docs)}
    driver: dict[str, Any] = {
        "name": "iotpipe lint",
        "version": version,
        "informationUri": "https://pypi.org/project/iotpipe/",
        "rules": [_sarif_rule(doc) for doc in docs],
    }
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": driver},
            "results": [_sarif_result(finding, index[finding.rule], report.name) for report in reports
                        for finding in report.findings],
            "columnKind": "unicodeCodePoints",
        }],
    }


def format_sarif(reports: Sequence[TemplateReport], version: str) -> str:
    """:func:`sarif_log` as JSON text."""
    return json.dumps(sarif_log(reports, version), indent=2) + "\n"


def _sarif_rule(doc: RuleDoc) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": doc.rule,
        "shortDescription": {"text": doc.title or doc.rule},
        "fullDescription": {"text": f"{doc.title or doc.rule} ({doc.source})"},
        "help": {"text": doc.help_text()},
        "properties": {"tags": [doc.source]},
    }
    if doc.help_uri.startswith(("https://", "http://")):
        rule["helpUri"] = doc.help_uri
    return rule


def _sarif_result(finding: Finding, rule_index: int, name: str) -> dict[str, Any]:
    location: dict[str, Any] = {
        "physicalLocation": {
            "artifactLocation": {"uri": quote(name.replace("\\", "/"), safe="/:._-~")},
            "region": {"startLine": max(finding.line, 1)},
        },
    }
    if finding.resource:
        location["logicalLocations"] = [{"name": finding.resource, "kind": "resource",
                                         "fullyQualifiedName": f"Resources/{finding.resource}"}]
    result: dict[str, Any] = {
        "ruleId": finding.rule,
        "ruleIndex": rule_index,
        "level": _SARIF_LEVEL.get(finding.severity, "error"),
        "message": {"text": finding.message},
        "locations": [location],
        "properties": {"source": finding.source, "severity": finding.severity, "path": finding.path},
    }
    if is_reasoned_skip(finding):
        # Skipped in the resource's Metadata with a reason: suppressed in source, so code scanning does not open
        # an alert for a decision already reviewed where the template is.
        result["suppressions"] = [{"kind": "inSource", "justification": finding.message}]
    return result


def is_reasoned_skip(finding: Finding) -> bool:
    """Whether ``finding`` is a checkov check skipped in the template with its reason (reported, not blocking)."""
    return finding.source == "checkov" and finding.severity == "informational"


def format_junit(reports: Sequence[TemplateReport]) -> str:
    """A JUnit XML report, a test suite per template: a test case per rule and resource that has findings, failed
    when any of them blocks (errors, warnings), skipped when all are informational; one passing case for a
    template without findings."""
    suites = ElementTree.Element("testsuites", {"name": "iotpipe lint"})
    for report in reports:
        suites.append(_junit_suite(report.findings, report.name))
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _junit_suite(findings: Sequence[Finding], name: str) -> ElementTree.Element:
    cases: dict[tuple[str, str, str], list[Finding]] = {}
    for finding in findings:
        cases.setdefault((finding.source, finding.rule, finding.resource or finding.path or "template"),
                         []).append(finding)
    failing = sum(1 for group in cases.values() if blocking(group))
    suite = ElementTree.Element("testsuite", {
        "name": f"iotpipe lint {name}", "tests": str(max(len(cases), 1)), "failures": str(failing), "errors": "0",
        "skipped": str(len(cases) - failing)})
    for (source, rule, resource), group in cases.items():
        case = ElementTree.SubElement(suite, "testcase", {
            "classname": f"{source}.{rule}", "name": f"{rule} {resource}", "file": name, "line": str(group[0].line)})
        block = blocking(group)
        if block:
            failure = ElementTree.SubElement(case, "failure", {"message": block[0].message, "type": block[0].severity})
            failure.text = "\n".join(f"{name}:{f.line} {f.rule} {f.message}" for f in group)
        else:
            ElementTree.SubElement(case, "skipped", {"message": group[0].message})
    if not cases:
        ElementTree.SubElement(suite, "testcase", {"classname": "iotpipe.lint", "name": f"{name} has no findings",
                                                   "file": name})
    return suite


def format_report(reports: Sequence[TemplateReport], fmt: str, version: str) -> str:
    """The templates' findings in ``fmt`` (one of :data:`FORMATS`), from ``iotpipe lint`` at ``version``."""
    if fmt == "json":
        return format_json(reports)
    if fmt == "sarif":
        return format_sarif(reports, version)
    if fmt == "junit":
        return format_junit(reports)
    return format_text(reports)
