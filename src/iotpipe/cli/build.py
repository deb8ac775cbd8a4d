"""``iotpipe render`` and ``iotpipe lint``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from iotpipe.aws import ClientFactory
from iotpipe.cli.common import blueprint_option, config_options, load_pipeline_config
from iotpipe.cli.output import echo_json, output_option
from iotpipe.config import NODE_RUNTIMES, PYTHON_RUNTIMES
from iotpipe.errors import TemplateError
from iotpipe.lint import DEFAULT_REGION, Finding, blocking, checkov_available, lint_template
from iotpipe.render import render_template, write_atomically


@click.command()
@config_options
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the template to this file (default: stdout); a symlink is followed, a device or FIFO "
                   "written through.")
@click.option("--runtime", type=click.Choice(PYTHON_RUNTIMES + NODE_RUNTIMES),
              help="Processor runtime (overrides processor.runtime).")
@blueprint_option
def render(env: str, config_path: str | None, out: Path | None, runtime: str | None, blueprint: Any) -> None:
    """Render the pipeline's CloudFormation template as YAML.

    \b
    Examples:
      iotpipe render --env dev -o templates/TapStack.yml
      iotpipe render --env prod --config plant.toml > prod.yml
      iotpipe render --runtime nodejs24.x
      iotpipe render --blueprint examples/override_property.py:customise -o custom.yml
    """
    cfg = load_pipeline_config(config_path, env, **{"processor.runtime": runtime})
    text = render_template(cfg, blueprint)
    if out is None:
        sys.stdout.write(text)
        return
    write_atomically(out, text)
    click.echo(f"Wrote {out} ({len(text.encode('utf-8'))} bytes)", err=True)


@click.command()
@click.argument("template_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@config_options
@output_option
@click.option("--checkov/--no-checkov", "with_checkov", default=True, show_default=True,
              help="Also run checkov's CloudFormation checks (when checkov is installed).")
@click.option("--region", "regions", multiple=True, metavar="REGION",
              help="Region whose resource types and values to check; repeatable (default: the env's region, else "
                   "the AWS profile's, else us-east-1).")
@blueprint_option
def lint(template_file: Path | None, env: str, config_path: str | None, output: str, with_checkov: bool,
         regions: tuple[str, ...], blueprint: Any) -> None:
    """Lint a template (default: the one --env renders) with cfn-lint and checkov; exit 1 on any error or warning.

    cfn-lint runs with iotpipe's own rules (E9101-E9104: IAM Resource "*" with a reason, partition-aware ARNs,
    alarms notify a topic, encryption at rest). cfn-lint errors and warnings, and checkov failed checks, block;
    informational findings (checkov checks skipped in a resource's Metadata, with their reason) are only
    reported. `iotpipe deploy` applies the same gate for its target region.

    \b
    Examples:
      iotpipe lint
      iotpipe lint templates/TapStack.yml
      iotpipe lint --env prod --output json
      iotpipe lint --no-checkov
      iotpipe lint --region eu-central-1 --region us-gov-west-1
      iotpipe lint --blueprint examples/firehose_copy.py:customise
    """
    if template_file is not None and blueprint is not None:
        raise click.UsageError("--blueprint customises the template iotpipe renders; give TEMPLATE_FILE or "
                               "--blueprint, not both")
    if template_file is None:
        cfg = load_pipeline_config(config_path, env)
        name = f"<render --env {env}>" + (f" + {blueprint.spec}" if blueprint else "")
        text, env_region = render_template(cfg, blueprint), cfg.region
    else:
        name, text, env_region = str(template_file), _read_template(template_file), ""
    if with_checkov and not checkov_available():
        click.echo("checkov is not installed (pip install -e '.[dev]'): only cfn-lint ran", err=True)
    findings = lint_template(text, regions or (_default_region(env_region),), checkov=with_checkov)
    _report(findings, name, output)
    if blocking(findings):
        sys.exit(1)


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


def _report(findings: list[Finding], name: str, output: str) -> None:
    if output == "json":
        echo_json([finding.as_dict() for finding in findings])
        return
    for finding in findings:
        click.echo(finding.format(name))
    failing = len(blocking(findings))
    sources = ", ".join(f"{source} {sum(f.source == source for f in findings)}"
                        for source in sorted({f.source for f in findings}))
    detail = f" ({sources})" if sources else ""
    click.echo(f"{name}: {failing} blocking finding(s), {len(findings) - failing} informational{detail}", err=True)
