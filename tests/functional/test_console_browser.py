"""The console in a real browser (Debian's chromium driven by Playwright) on ``iotpipe local`` with simulated
devices, read as a person reads it: the device rows, a stale device marked as such in words, a chart drawn with
its points, an anomaly appearing live without a reload, the views reachable by keyboard alone, and no serious
axe-core violation. One local pipeline and one console serve every test of the module.

Screenshots go to ``$IOTPIPE_CONSOLE_SCREENSHOTS`` (``make console-screenshots`` sets it to docs/img, whose
pictures the docs show) or else a temporary folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iotpipe.local.state import STATE_DIR_VARIABLE
from local_run import CLI, cli, stored_readings

CHROMIUM = os.environ.get("IOTPIPE_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).resolve().parents[1] / "data" / "axe" / "axe.min.js"
pytestmark = [
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (make install)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs chromium (make install)"),
]
playwright_api = pytest.importorskip("playwright.sync_api")

CONFIG = """
[env.local.processor]
batch_size = 100
batching_window_seconds = 1
"""
WAIT_MS = 90_000


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``iotpipe local`` with three simulated devices and one that went quiet ten minutes ago, and ``iotpipe
    console --no-browser --port 0`` on it; yields the console's URL and the local run's details."""
    workdir = tmp_path_factory.mktemp("console")
    (workdir / "iotpipe.toml").write_text(CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setenv(STATE_DIR_VARIABLE, str(workdir / "state"))
        process: subprocess.Popen[str] | None = None
        try:
            started = cli("local", "up", "--detach", "--output", "json", "--console-port", "0")
            assert started.returncode == 0, started.stderr
            info: dict[str, Any] = json.loads(started.stdout)
            assert info["consoleUrl"].startswith("http://127.0.0.1:")  # local up serves one and says where
            simulated = cli("simulate", "--env", "local", "--devices", "3", "--format", "multi", "--rate", "5",
                            "--duration", "4", "--seed", "1", "--output", "json")
            assert simulated.returncode == 0, simulated.stderr
            publish(info, {"deviceId": "press-quiet", "sensorType": "temperature", "value": 21.5,
                           "timestamp": int(time.time() * 1000) - 600_000})
            expected = json.loads(simulated.stdout)["readings"] + 1
            table = json.loads(cli("outputs", "--env", "local", "--output", "json").stdout)["SensorDataTableName"]
            deadline = time.monotonic() + 120
            while stored_readings(info, table) < expected and time.monotonic() < deadline:
                time.sleep(1)
            assert stored_readings(info, table) == expected
            process = subprocess.Popen([*CLI, "console", "--env", "local", "--no-browser", "--port", "0"],
                                       env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            url = first_line(process)
            yield {"url": url, "info": info, "base": url.split("?")[0].rstrip("/")}
        finally:
            if process is not None:
                process.send_signal(signal.SIGINT)
                process.communicate(timeout=30)
            subprocess.run([*CLI, "local", "down"], env={**os.environ}, capture_output=True, timeout=60,
                           check=False)


def first_line(process: subprocess.Popen[str]) -> str:
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline() if process.stdout else ""))
    reader.start()
    reader.join(timeout=60)
    assert found and found[0].startswith("http://127.0.0.1:"), found
    return found[0].strip()


def publish(info: dict[str, Any], payload: dict[str, Any]) -> None:
    """One message to the local broker, as a device sends it."""
    import paho.mqtt.publish as mqtt_publish

    host, _, port = info["mqtt"].removeprefix("mqtt://").partition(":")
    mqtt_publish.single(f"sensor/{payload['deviceId']}/data", json.dumps(payload), qos=1, hostname=host,
                        port=int(port), auth={"username": info["mqttUsername"], "password": info["mqttPassword"]})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, console: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    open_console(opened, console)
    yield opened
    context.close()


def open_console(page: Any, console: dict[str, Any]) -> None:
    """Open the token URL as the user does; its answer moves on to the page without the token by itself."""
    page.goto(console["url"])
    page.wait_for_url(console["base"] + "/")


def ready(page: Any, view: str) -> None:
    """Wait for ``view`` to be drawn; on a timeout, fail with what the page shows."""
    try:
        page.wait_for_selector(f"main[data-ready={view}]")
    except playwright_api.TimeoutError:
        pytest.fail(f"the {view} view was not drawn; the page shows: {page.inner_text('body')[:1500]}")


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("IOTPIPE_CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_fleet_rows_with_the_quiet_device_marked_stale_in_words(page: Any, tmp_path: Path) -> None:
    assert "token=" not in page.url  # the token left the address bar; the cookie carries it
    page.wait_for_selector("main[data-ready=fleet]")
    rows = page.locator("#fleet-body tr")
    devices = sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.device)"))
    # the stack's own thing is registered and never sent anything: unknown, not offline
    assert devices == ["manufacturing-device-local", "press-quiet", "sim-001", "sim-002", "sim-003"]
    assert page.inner_text("tr[data-device=manufacturing-device-local] td.state") == "? unknown"
    assert page.inner_text("tr[data-device=press-quiet] td.state") == "◐ stale"
    assert page.inner_text("tr[data-device=sim-001] td.state") == "● online"
    assert "10 min" in page.inner_text("tr[data-device=press-quiet]")
    page.fill("#fleet-filter", "sim-00")
    assert rows.count() == 3
    page.fill("#fleet-filter", "")
    page.click("th[data-key=readingsLastHour] button")
    assert page.get_attribute("th[data-key=readingsLastHour]", "aria-sort") == "ascending"
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.device)")[:2] == [
        "manufacturing-device-local", "press-quiet"]  # the fewest readings first
    page.screenshot(path=str(shots(tmp_path) / "console-fleet.png"))


def test_the_start_file_the_browser_is_opened_with_shows_the_fleet(browser: Any, console: dict[str, Any]) -> None:
    # `iotpipe console` starts the browser on a private file that moves on to the token URL: a navigation from a
    # file is cross-site, and the token's SameSite=Strict cookie must still reach the page
    from iotpipe.cli.console import redirect_file

    start = redirect_file(console["url"])
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(start.as_uri())
        ready(page, "fleet")
        assert page.url == console["base"] + "/"  # the token left the address bar
        assert "token=" not in page.evaluate("document.referrer") + page.url
    finally:
        context.close()
        start.unlink()


def test_a_large_fleet_is_windowed_with_every_row_reachable(browser: Any, console: dict[str, Any]) -> None:
    # the console's own fleet has five devices: the page is given 1,000 (the live stream held back, so the
    # console's real fleet does not replace them)
    devices = [{"deviceId": f"dev-{i:04d}", "state": "online", "lastSeen": 1_700_000_000_000 + i, "silentFor": 5,
                "readingsLastHour": i, "openAnomalies": 0, "registered": True, "certificate": "ACTIVE"}
               for i in range(1000)]
    fleet = {"devices": devices, "counts": {"online": 1000}}
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.route(re.compile(r".*/api/fleet$"), lambda route: route.fulfill(json=fleet))
        page.route(re.compile(r".*/api/events$"), lambda route: route.abort())
        open_console(page, console)
        ready(page, "fleet")
        rows = page.locator("#fleet-body tr[data-device]")
        assert 0 < rows.count() < 200  # only the rows in view and a margin
        assert page.get_attribute("#fleet", "aria-rowcount") == "1001"
        assert page.inner_text("#fleet-count").startswith("1000 of 1000 devices shown")
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_selector("tr[data-device=dev-0999]")  # the last row, by scrolling
        assert page.get_attribute("tr[data-device=dev-0999]", "aria-rowindex") == "1001"
        assert rows.count() < 200 and page.locator("tr[data-device=dev-0000]").count() == 0
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_selector("tr[data-device=dev-0000]")
        page.focus("tr[data-device=dev-0040] a")  # in the margin below the view: Tab moves on row by row
        for _ in range(3):
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.closest('tr').dataset.device") == "dev-0043"
        page.fill("#fleet-filter", "dev-07")
        assert rows.count() == 100 and page.locator("#fleet-body tr.spacer").count() == 0
        page.fill("#fleet-filter", "")
        page.click("th[data-key=readingsLastHour] button")
        page.click("th[data-key=readingsLastHour] button")  # the most readings first
        assert rows.first.get_attribute("data-device") == "dev-0999"
    finally:
        context.close()


def test_a_device_chart_is_drawn_with_its_points_and_bounds(page: Any, tmp_path: Path) -> None:
    page.goto(page.url.split("#")[0] + "#/device/sim-001/15m")
    ready(page, "device")
    chart = page.locator("figure[data-sensor=temperature] .chart")
    assert chart.get_attribute("data-drawn") == "true"
    assert int(chart.get_attribute("data-points") or 0) == 20  # 5 Hz for 4 s
    assert page.locator("figure[data-sensor=temperature] canvas").count() == 1
    caption = page.inner_text("figure[data-sensor=temperature] figcaption")
    assert "20 readings" in caption and "static bounds 10 … 80" in caption and "DynamoDB table" in caption
    assert page.locator("figure[data-sensor]").count() == 3
    page.screenshot(path=str(shots(tmp_path) / "console-device.png"), full_page=True)


def test_an_anomaly_appears_live_without_a_reload(page: Any, console: dict[str, Any], tmp_path: Path) -> None:
    page.goto(page.url.split("#")[0] + "#/anomalies")
    page.wait_for_selector("main[data-ready=anomalies]")
    page.wait_for_selector("#live >> text=/^live: /")  # the event stream is open (the CSP forbids eval)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    publish(console["info"], {"deviceId": "press-hot", "sensorType": "temperature", "value": 120.0})
    row = page.wait_for_selector("#anomaly-body tr[data-device=press-hot]")
    assert "above max 80" in row.inner_text() and "120" in row.inner_text()
    assert navigations == []  # no reload
    page.screenshot(path=str(shots(tmp_path) / "console-anomalies.png"))
    rows = page.locator("#anomaly-body tr")
    page.fill("#f-device", "no-such-press")  # filtered by device, sensor and rule as the person picks them
    assert rows.count() == 0
    page.fill("#f-device", "press-h")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.device)") == ["press-hot"]
    page.select_option("#f-sensor", "pressure")
    assert rows.count() == 0 and page.inner_text("#anomaly-count").startswith("0 anomalies")
    page.select_option("#f-sensor", "temperature")
    page.select_option("#f-rule", "model")
    assert rows.count() == 0
    page.select_option("#f-rule", "bound")
    assert rows.count() == 1


def test_a_refused_live_stream_says_so_and_is_tried_again(browser: Any, console: dict[str, Any]) -> None:
    # the console answers 503 past its open streams; the browser's EventSource then gives up for good, so the
    # page must say the updates stopped and ask again itself, not claim to be reconnecting
    context = browser.new_context()
    try:
        opened = context.new_page()
        opened.set_default_timeout(WAIT_MS)
        asked: list[str] = []

        def refuse(route: Any) -> None:
            asked.append(route.request.url)
            route.fulfill(status=503, content_type="application/json", body='{"error": "16 open already"}')

        opened.route("**/api/events", refuse)
        opened.clock.install()
        open_console(opened, console)
        opened.wait_for_selector("#live >> text=/stopped .*trying again in 15 s/")
        assert len(asked) == 1
        opened.clock.run_for(16_000)
        for _ in range(50):
            if len(asked) >= 2:
                break
            opened.wait_for_timeout(100)
        assert len(asked) == 2  # asked again after 15 s, and only then
    finally:
        context.close()


def test_keyboard_alone_reaches_every_view(page: Any) -> None:
    page.wait_for_selector("main[data-ready=fleet]")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    names = []
    for _ in range(4):
        page.keyboard.press("Tab")
        names.append(page.evaluate("document.activeElement.textContent"))
    assert names == ["Fleet", "Anomalies", "Pipeline health", "SQL"]
    page.keyboard.press("Enter")  # on SQL
    page.wait_for_selector("main[data-ready=sql]")
    assert page.get_attribute("nav a[data-view=sql]", "aria-current") == "page"
    assert page.evaluate("document.activeElement.id") == "main"  # focus moves to the new view


def test_no_serious_accessibility_violation(browser: Any, console: dict[str, Any], tmp_path: Path) -> None:
    # axe is injected as a script: only this context lets it past the console's CSP
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        open_console(page, console)
        found: dict[str, list[str]] = {}
        for view in ("fleet", "device/sim-002/1h", "anomalies", "health", "sql"):
            page.goto(console["base"] + "/#/" + view)
            page.wait_for_selector(f"main[data-ready={view.split('/')[0]}]")
            page.add_script_tag(path=str(AXE))
            result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
            found[view] = [f"{v['id']}: {v['help']}" for v in result["violations"]
                           if v["impact"] in ("serious", "critical")]
            if view == "health":
                page.screenshot(path=str(shots(tmp_path) / "console-health.png"), full_page=True)
        assert found == {view: [] for view in found}
    finally:
        context.close()


def test_the_page_fetches_nothing_from_elsewhere(page: Any, console: dict[str, Any]) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.reload()
    page.wait_for_selector("main[data-ready=fleet]")
    assert requested and all(re.match(re.escape(console["base"]), url) for url in requested), requested
