"""``iotpipe render`` and ``iotpipe lint``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from iotpipe import __version__
from iotpipe.aws import ClientFactory
from iotpipe.cli.common import blueprint_option, config_options, load_pipeline_config
from iotpipe.cli.output import output_option
from iotpipe.config import NODE_RUNTIMES, PYTHON_RUNTIMES
from iotpipe.errors import TemplateError
from iotpipe.lint import CHECKOV_HINT, DEFAULT_REGION, blocking, checkov_available, lint_template
from iotpipe.lintreport import FORMATS, TemplateReport, format_report
from iotpipe.render import render_template, stale_template, write_atomically


@click.command()
@config_options
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the template to this file (default: stdout); a symlink is followed, a device or FIFO "
                   "written through.")
@click.option("--runtime", type=click.Choice(PYTHON_RUNTIMES + NODE_RUNTIMES),
              help="Processor runtime (overrides processor.runtime).")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 when the file given with -o differs from what would be rendered (a "
                   "committed template that is stale for its config).")
@blueprint_option
def render(env: str, config_path: str | None, out: Path | None, runtime: str | None, check: bool,
           blueprint: Any) -> None:
    """Render the pipeline's CloudFormation template as YAML.

    \b
    Examples:
      iotpipe render --env dev -o templates/TapStack.yml
      iotpipe render --env prod --config plant.toml > prod.yml
      iotpipe render --runtime nodejs24.x
      iotpipe render --blueprint examples/override_property.py:customise -o custom.yml
      iotpipe render --env dev -o templates/TapStack.yml --check
    """
    if check and out is None:
        raise click.UsageError("--check compares a rendered template with a file: give it with -o FILE")
    cfg = load_pipeline_config(config_path, env, **{"processor.runtime": runtime})
    text = render_template(cfg, blueprint)
    if check and out is not None:
        stale = stale_template(out, text)
        if stale:
            click.echo(f"{stale}\nre-render it: {_render_command(env, config_path, runtime, blueprint, out)}",
                       err=True)
            sys.exit(1)
        click.echo(f"{out} is current for --env {env}", err=True)
        return
    if out is None:
        sys.stdout.write(text)
        return
    write_atomically(out, text)
    click.echo(f"Wrote {out} ({len(text.encode('utf-8'))} bytes)", err=True)


@click.command()
@click.argument("template_files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@config_options
@output_option
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Report format: text (file:line rule message), json, sarif (2.1.0, for code scanning) or junit "
                   "(XML test report). Default: text, or json with --output json.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to this file (the findings are still listed on stdout as text).")
@click.option("--checkov/--no-checkov", "with_checkov", default=True, show_default=True,
              help="Also run checkov's CloudFormation checks (when checkov is installed).")
@click.option("--region", "regions", multiple=True, metavar="REGION",
              help="Region whose resource types and values to check; repeatable (default: the env's region, else "
                   "the AWS profile's, else us-east-1).")
@blueprint_option
def lint(template_files: tuple[Path, ...], env: str, config_path: str | None, output: str, fmt: str | None,
         out: Path | None, with_checkov: bool, regions: tuple[str, ...], blueprint: Any) -> None:
    """Lint templates (default: the one --env renders) with cfn-lint and checkov; exit 1 on any error or warning.

    Any CloudFormation template can be linted (YAML or JSON), several at once: iotpipe's rules apply wherever
    their resources appear. cfn-lint runs with iotpipe's own rules (E9101-E9104: IAM Resource "*" with a reason,
    partition-aware ARNs, alarms notify a topic, encryption at rest). cfn-lint errors and warnings, and checkov
    failed checks, block; informational findings (checkov checks skipped in a resource's Metadata, with their
    reason) are only reported. `iotpipe deploy` applies the same gate for its target region.

    \b
    Examples:
      iotpipe lint
      iotpipe lint templates/TapStack.yml
      iotpipe lint --env prod --format json
      iotpipe lint templates/TapStack.yml --format sarif -o iotpipe-lint.sarif
      iotpipe lint stacks/*.yml --format junit -o lint-report.xml
      iotpipe lint --no-checkov
      iotpipe lint --region eu-central-1 --region us-gov-west-1
      iotpipe lint --blueprint examples/firehose_copy.py:customise
    """
    if template_files and blueprint is not None:
        raise click.UsageError("--blueprint customises the template iotpipe renders; give TEMPLATE_FILE or "
                               "--blueprint, not both")
    if with_checkov and not checkov_available():
        click.echo(f"checkov is not installed ({CHECKOV_HINT}): only cfn-lint ran", err=True)
    if template_files:
        sources = [(str(path), _read_template(path), "") for path in template_files]
    else:
        cfg = load_pipeline_config(config_path, env)
        name = f"<render --env {env}>" + (f" + {blueprint.spec}" if blueprint else "")
        sources = [(name, render_template(cfg, blueprint), cfg.region)]
    reports = [TemplateReport(name, tuple(lint_template(text, regions or (_default_region(env_region),),
                                                        checkov=with_checkov)))
               for name, text, env_region in sources]
    _report(reports, fmt or ("json" if output == "json" else "text"), out)
    if any(blocking(list(report.findings)) for report in reports):
        sys.exit(1)


def _render_command(env: str, config_path: str | None, runtime: str | None, blueprint: Any, out: Path) -> str:
    parts = ["iotpipe render", f"--env {env}"]
    parts += [f"--config {config_path}"] if config_path else []
    parts += [f"--runtime {runtime}"] if runtime else []
    parts += [f"--blueprint {blueprint.spec}"] if blueprint else []
    return " ".join([*parts, f"-o {out}"])


def _default_region(env_region: str) -> str:
    """The env's region, else the AWS profile's (from the environment and config files, no call), else us-east-1."""
    return env_region or ClientFactory().session().region_name or DEFAULT_REGION


def _read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"template {path} does not exist; render one with: iotpipe render -o {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from None


def _report(reports: list[TemplateReport], fmt: str, out: Path | None) -> None:
    if out is not None:
        write_atomically(out, format_report(reports, fmt, __version__))
        count = sum(len(report.findings) for report in reports)
        click.echo(f"Wrote {out} ({fmt}, {count} finding(s))", err=True)
        fmt = "text"
    sys.stdout.write(format_report(reports, fmt, __version__))
    if fmt != "text":
        return
    for report in reports:
        findings = list(report.findings)
        failing = len(blocking(findings))
        sources = ", ".join(f"{source} {sum(f.source == source for f in findings)}"
                            for source in sorted({f.source for f in findings}))
        detail = f" ({sources})" if sources else ""
        click.echo(f"{report.name}: {failing} blocking finding(s), {len(findings) - failing} informational{detail}",
                   err=True)
