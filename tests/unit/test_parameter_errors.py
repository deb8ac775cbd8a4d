"""Library errors name the parameter a Python caller passed; the CLI names the flag its user typed instead."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from iotpipe import query
from iotpipe.cli import main
from iotpipe.cli.app import option_for
from iotpipe.config import PipelineConfig
from iotpipe.cost import Workload, validate_workload
from iotpipe.deploy.plan import DeployRequest, plan_deploy
from iotpipe.devices import register_device
from iotpipe.errors import ConfigError, ParameterError
from iotpipe.simulate import build_plan, load_cert_dir


class _NoClients:
    """A client source that fails the test if the library reaches AWS before checking its arguments."""

    def client(self, service: str) -> object:
        raise AssertionError(f"{service} called before the arguments were checked")


def test_a_python_caller_is_told_about_the_parameter() -> None:
    with pytest.raises(ParameterError) as raised:
        query.readings(_NoClients(), PipelineConfig(), "press-1", limit=0)
    error = raised.value
    assert error.parameter == "limit" and error.value == 0
    assert str(error).startswith("limit=0 is out of range; use 1 to ") and "--limit" not in str(error)
    assert isinstance(error, ConfigError) and error.exit_code == 2


@pytest.mark.parametrize(("call", "parameter"), [
    (lambda: query.parse_since("1y", 0), "since"),
    (lambda: query.fetch_metrics(None, "dev", since_ms=0, until_ms=3_600_000, period_s=90), "period_s"),
    (lambda: validate_workload(Workload(devices=5, sensors=1, rate_hz=0.0)), "rate_hz"),
    (lambda: build_plan(["press-1"], {}, rate_hz=1.0, count=1, duration_s=None, batch=0), "batch"),
    (lambda: load_cert_dir("/nonexistent-iotpipe-certs"), "cert_dir"),
    (lambda: plan_deploy(None, DeployRequest(stack_name="s", template_body="", on_failure="explode")),  # type: ignore[arg-type]
     "on_failure"),
])
def test_each_library_check_names_its_parameter(call: object, parameter: str) -> None:
    with pytest.raises(ParameterError) as raised:
        call()  # type: ignore[operator]
    assert raised.value.parameter == parameter and str(raised.value).startswith(f"{parameter}=")


def test_register_names_out_dir(tmp_path: Path) -> None:
    a_file = tmp_path / "certs"
    a_file.write_text("")
    with pytest.raises(ParameterError, match=r"^out_dir='.*certs' is a file; give a directory$"):
        register_device(None, thing_name="press-1", policy_name="p", environment="dev", out_dir=a_file)


@pytest.mark.parametrize(("args", "message"), [
    (["readings", "press-1", "--env", "dev", "--limit", "0"], "Error: --limit 0 is out of range; use 1 to "),
    (["readings", "press-1", "--env", "dev", "--since", "1y"], "Error: --since 1y is not valid"),
    (["cost", "--devices", "5", "--rate", "0"], "Error: --rate 0.0 is out of range"),
    (["simulate", "--dry-run", "--count", "1", "--anomaly-rate", "2"], "Error: --anomaly-rate 2.0 is out of range"),
    (["simulate", "--dry-run", "--duration", "0"], "Error: --duration 0.0 is out of range"),
    (["simulate", "--dry-run", "--count", "1", "--sensor", "colour"], "Error: --sensor colour has no threshold"),
])
def test_a_cli_user_is_told_about_the_flag(args: list[str], message: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no iotpipe.toml
    result = CliRunner().invoke(main, [*args, "--region", "eu-west-1"] if args[0] == "readings" else args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "=" not in result.stderr.splitlines()[-1]


def test_the_mapping_is_generic_over_click_options() -> None:
    @click.command()
    @click.option("--out-dir", "-o")
    @click.option("--period", type=int)
    @click.argument("device_id")
    def command(out_dir: str, period: int, device_id: str) -> None:
        """A command."""

    assert option_for(command, "out_dir") == "--out-dir"
    assert option_for(command, "period_s") == "--period"
    assert option_for(command, "device_id") is None  # an argument has no flag: the library wording stays
    assert option_for(command, "colour") is None
