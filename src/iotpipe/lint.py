"""Lint a template with cfn-lint's Python API (and checkov's CloudFormation checks when installed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# cfn-lint's metadata-context advice; iotpipe's templates carry no cfn-lint metadata to advise on.
IGNORED_RULES = ("I4010",)
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

    def as_dict(self) -> dict[str, Any]:
        """The finding as a JSON-ready dict."""
        return asdict(self)

    def format(self, filename: str) -> str:
        """``file:line rule message``, one line."""
        return f"{filename}:{self.line} {self.rule} {self.message}"


def lint_template(text: str, regions: tuple[str, ...] = ("us-east-1",)) -> list[Finding]:
    """cfn-lint findings of every severity (informational included) for the template ``text``."""
    # Imported here: cfn-lint takes about half a second to import, and `iotpipe render` must not pay for it.
    from cfnlint.api import ManualArgs, lint

    config = ManualArgs(regions=list(regions), include_checks=["I"], ignore_checks=list(IGNORED_RULES))
    matches = lint(text, config=config)
    findings = [_from_match(match) for match in matches]
    return sorted(findings, key=lambda f: (f.line, f.rule, f.message))


def blocking(findings: list[Finding]) -> list[Finding]:
    """The findings that fail the lint gate: errors and warnings (informational ones are reported only)."""
    return [finding for finding in findings if finding.severity in ("error", "warning")]


def _from_match(match: Any) -> Finding:
    rule_id = str(match.rule.id)
    path = "/".join(str(part) for part in getattr(match, "path", []) or [])
    return Finding(source="cfn-lint", rule=rule_id, severity=_SEVERITY.get(rule_id[:1], "error"),
                   message=str(match.message), path=path, line=int(match.linenumber))
