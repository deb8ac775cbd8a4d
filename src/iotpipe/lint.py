"""Lint a template with cfn-lint's Python API, iotpipe's own rules (:mod:`iotpipe.lintrules`) loaded through
cfn-lint's ``append_rules``, and checkov's CloudFormation checks when installed."""

from __future__ import annotations

import functools
import importlib.util
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# cfn-lint's metadata-context advice; iotpipe's templates carry no cfn-lint metadata to advise on.
IGNORED_RULES = ("I4010",)
# iotpipe's invariants as cfn-lint rules, appended by module path (cfn-lint's --append-rules accepts one).
RULES_MODULE = "iotpipe.lintrules"
DEFAULT_REGION = "us-east-1"
# checkov comes with iotpipe's `lint` extra (and `dev`); a hint that works for a wheel install as for a clone.
CHECKOV_HINT = "pip install 'iotpipe[lint]'"
_SEVERITY = {"E": "error", "W": "warning", "I": "informational"}


@dataclass(frozen=True)
class Finding:
    """One lint finding, whichever tool reported it."""

    source: str
    rule: str
    severity: str
    message: str
    path: str
    line: int
    # The logical id of the resource the finding is about ("" for a template-level one), the rule's one-line
    # title and where its documentation is (a URL, or a path in iotpipe's repository for its own rules).
    resource: str = ""
    title: str = ""
    help_uri: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The finding as a JSON-ready dict."""
        return asdict(self)

    def format(self, filename: str) -> str:
        """``file:line rule message``, one line."""
        return f"{filename}:{self.line} {self.rule} {self.message}"


def lint_template(text: str, regions: tuple[str, ...] = (DEFAULT_REGION,), *, checkov: bool = False) -> list[Finding]:
    """cfn-lint findings (iotpipe's rules included) of every severity for the template ``text`` in ``regions``.

    With ``checkov=True`` and checkov installed, checkov's CloudFormation findings are added: a failed
    check is an error, a check skipped in a resource's Metadata is informational (its reason shown).
    """
    return list(_lint(text, tuple(regions), checkov and checkov_available()))


# The same template, regions and tools give the same findings; deploy, diff and `iotpipe local` lint the
# template they render again, and the tools take seconds.
@functools.lru_cache(maxsize=8)
def _lint(text: str, regions: tuple[str, ...], checkov: bool) -> tuple[Finding, ...]:
    # Imported here: cfn-lint takes about half a second to import, and `iotpipe render` must not pay for it.
    from cfnlint.api import ManualArgs, lint

    config = ManualArgs(regions=list(regions), include_checks=["I"], ignore_checks=list(IGNORED_RULES),
                        append_rules=[RULES_MODULE])
    findings = [_from_match(match) for match in lint(text, config=config)]
    if checkov:
        findings.extend(checkov_findings(text))
    return tuple(sorted(findings, key=lambda f: (f.line, f.source, f.rule, f.message)))


def blocking(findings: list[Finding]) -> list[Finding]:
    """The findings that fail the lint gate: errors and warnings (informational ones are reported only)."""
    return [finding for finding in findings if finding.severity in ("error", "warning")]


def gate_message(failing: list[Finding], regions: tuple[str, ...], what: str, limit: int = 20) -> str:
    """Why ``what`` is refused: the blocking findings (at most ``limit``), one a line, and how to see them all."""
    listed = "\n".join(f"  {f.rule} line {f.line}: {f.message}" for f in failing[:limit])
    more = f"\n  ... and {len(failing) - limit} more" if len(failing) > limit else ""
    return (f"the template has {len(failing)} blocking lint finding(s) (errors and warnings, as `iotpipe lint` "
            f"counts them) in {', '.join(regions)}; {what}:\n{listed}{more}")


def checkov_available() -> bool:
    """Whether checkov can be imported (the ``lint`` extra installs it; CI has it)."""
    return importlib.util.find_spec("checkov") is not None


@dataclass(frozen=True)
class CheckovReport:
    """Checkov's CloudFormation verdict on one template, as findings, plus its passed-check count."""

    failed: tuple[Finding, ...]
    skipped: tuple[Finding, ...]
    passed: int


def checkov_findings(text: str) -> list[Finding]:
    """Checkov's failed checks (errors) and Metadata-skipped checks (informational) for ``text``."""
    report = run_checkov(text)
    return [*report.failed, *report.skipped]


def run_checkov(text: str) -> CheckovReport:
    """Run checkov's CloudFormation checks on the template ``text``, offline.

    checkov's CLI fetches guidelines from the Prisma Cloud API; its runner API used here makes no network
    call, and ``skip_download`` is set so no integration feature tries one either.
    """
    from checkov.cloudformation.runner import Runner
    from checkov.common.bridgecrew.platform_integration import bc_integration
    from checkov.runner_filter import RunnerFilter

    bc_integration.skip_download = True
    with tempfile.TemporaryDirectory(prefix="iotpipe-checkov-") as directory:
        path = Path(directory) / "template.yaml"
        path.write_text(text, encoding="utf-8")
        # A fresh runner each time: a Runner caches the definitions of the first template it saw.
        result = Runner().run(root_folder=None, files=[str(path)],
                              runner_filter=RunnerFilter(framework=["cloudformation"], show_progress_bar=False))
    reports = result if isinstance(result, list) else [result]
    failed: list[Finding] = []
    skipped: list[Finding] = []
    passed = 0
    for report in reports:
        passed += len(report.passed_checks)
        failed.extend(_from_check(record, "error", str(record.check_name)) for record in report.failed_checks)
        skipped.extend(_from_check(record, "informational", _skip_message(record))
                       for record in report.skipped_checks)
        failed.extend(Finding("checkov", "parse", "error", "checkov could not parse the template", "", 1,
                              title="checkov parses the template")
                      for _ in report.parsing_errors)
    return CheckovReport(tuple(failed), tuple(skipped), passed)


def _skip_message(record: Any) -> str:
    reason = (record.check_result or {}).get("suppress_comment") or "no reason given"
    return f"skipped: {record.check_name} ({reason})"


def _from_check(record: Any, severity: str, message: str) -> Finding:
    # record.resource is "<Type>.<LogicalId>", e.g. "AWS::S3::Bucket.RawDataBucket".
    logical_id = str(record.resource).rsplit(".", 1)[-1]
    first_line = int(record.file_line_range[0]) if record.file_line_range else 1
    return Finding(source="checkov", rule=str(record.check_id), severity=severity, message=message,
                   path=f"Resources/{logical_id}", line=first_line, resource=logical_id,
                   title=str(record.check_name), help_uri=str(getattr(record, "guideline", None) or ""))


def _from_match(match: Any) -> Finding:
    rule_id = str(match.rule.id)
    parts = list(getattr(match, "path", []) or [])
    resource = str(parts[1]) if len(parts) > 1 and parts[0] == "Resources" else ""
    return Finding(source="cfn-lint", rule=rule_id, severity=_SEVERITY.get(rule_id[:1], "error"),
                   message=str(match.message), path="/".join(str(part) for part in parts), line=int(match.linenumber),
                   resource=resource, title=str(match.rule.shortdesc or ""),
                   help_uri=str(match.rule.source_url or ""))
