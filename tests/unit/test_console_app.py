"""The console's web app over items the real processor wrote into moto: each view's JSON, downsampling, the SQL
archive for ranges past the table's retention, server-sent events, and the guards (token, cookie, Host, CSP,
same-origin JSON, no credentials in any answer)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from starlette.testclient import TestClient
from test_query import BUCKET, DAY2, INDEX, TABLE, create_table, run_processor, single

from iotpipe.config import load_config
from iotpipe.console.app import Settings, asset_version, create_app, is_loopback, static_dir
from iotpipe.console.data import ConsoleData, Names

NOW = DAY2 + 60_000
TOKEN = "t0ken-for-the-tests"
BASE = "http://127.0.0.1:8765"
SECRET = "testing"  # the fake secret access key of tests/conftest.py: no answer may carry it
POINTS = 100  # the most points a line is sent here (the console's is 2,000)


class Clients:
    def client(self, service: str) -> Any:
        return boto3.client(service, region_name="us-east-1")


def console_data(tmp_path: Path, **overrides: Any) -> ConsoleData:
    names = Names(table=TABLE, index=INDEX, bucket=BUCKET, log_group="/aws/lambda/p", queue_url="",
                  function_name="p", environment="dev", workgroup="", database="")
    return ConsoleData(load_config(None, "dev", overrides), Clients(), local=True, cache_dir=tmp_path / "cache",
                       clock=lambda: NOW, names=names, max_points=POINTS)


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    with mock_aws():
        create_table(boto3.client("dynamodb", region_name="us-east-1"))
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        run_processor([single("press-1", "temperature", 20.0 + (i % 7), NOW - 3_000_000 + i * 10_000)
                       for i in range(300)] + [single("press-1", "temperature", 95.0, NOW - 1000),
                                                single("press-2", "pressure", 100.0, NOW - 600_000)],
                      monkeypatch, capsys)
        # a batch of its own: an archive object is filed under the hour its batch arrived
        run_processor([single("press-3", "temperature", 42.0, NOW - 3 * 86_400_000)], monkeypatch, capsys,
                      first=10_000)
        yield


@pytest.fixture
def client(stored: None, tmp_path: Path) -> Iterator[TestClient]:
    del stored
    app = create_app(console_data(tmp_path), Settings(token=TOKEN, poll_s=0.01, stream_s=0.05))
    with TestClient(app, base_url=BASE, follow_redirects=False) as test_client:
        test_client.cookies.set(Settings(token=TOKEN).cookie, TOKEN)
        yield test_client



def athena_console(athena: Any, tmp_path: Path, overrides: dict[str, Any] | None = None,
                   **options: Any) -> ConsoleData:
    """A deployed dev stack's console whose Athena client is ``athena`` (a stubbed one) and every other moto's."""
    class WithAthena(Clients):
        def client(self, service: str) -> Any:
            return athena if service == "athena" else super().client(service)

    names = Names(table=TABLE, index=INDEX, bucket=BUCKET, log_group="", queue_url="", function_name="",
                  environment="dev", workgroup="wg", database="db")
    return ConsoleData(load_config(None, "dev", overrides or {}), WithAthena(), local=False, cache_dir=tmp_path,
                       clock=lambda: NOW, names=names, **options)

def test_the_page_needs_the_token_then_a_cookie_carries_it(tmp_path: Path) -> None:
    app = create_app(console_data(tmp_path), Settings(token=TOKEN))
    with TestClient(app, base_url=BASE, follow_redirects=False) as anonymous:
        assert anonymous.get("/").status_code == 401
        assert anonymous.get("/api/fleet").status_code == 401
        assert anonymous.get("/static/console.js").status_code == 401
        assert anonymous.get("/?token=guess").status_code == 403
        opened = anonymous.get(f"/?token={TOKEN}")
        # the token leaves the URL: the answer moves on to the page by itself (a same-origin refresh, which keeps
        # the SameSite=Strict cookie when the browser was sent here from elsewhere, unlike a redirect)
        assert opened.status_code == 200 and '<meta http-equiv="refresh" content="0;url=/">' in opened.text
        assert "<script" not in opened.text and TOKEN not in opened.text
        cookie = opened.headers["set-cookie"]
        assert f"iotpipe_console_0={TOKEN}" in cookie  # named by its port (0 here)
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = anonymous.get("/")
        assert page.status_code == 200 and "iotpipe console" in page.text


def test_the_token_redirect_stays_on_this_server_and_keeps_the_rest_of_the_query(tmp_path: Path) -> None:
    app = create_app(console_data(tmp_path), Settings(token=TOKEN))
    with TestClient(app, base_url=BASE, follow_redirects=False) as browser:
        # a path of two slashes would be a link to another host ("//evil.example/") in the Location header
        assert 'content="0;url=/evil.example/"' in browser.get(f"{BASE}//evil.example/?token={TOKEN}").text
        assert 'content="0;url=/?a=b%26c%3Dd"' in browser.get(f"/?token={TOKEN}&a=b%26c%3Dd").text


def test_consoles_on_two_ports_of_one_host_keep_their_own_cookie(tmp_path: Path) -> None:
    # a browser keeps cookies by host, not port: two consoles must not overwrite each other's token
    first = create_app(console_data(tmp_path), Settings(token=TOKEN, port=8765))
    second = create_app(console_data(tmp_path), Settings(token="another-token", port=8766))
    with TestClient(first, base_url=BASE, follow_redirects=False) as one, \
            TestClient(second, base_url="http://127.0.0.1:8766", follow_redirects=False) as other:
        other.cookies.jar = one.cookies.jar  # one browser's cookie jar
        assert "set-cookie" in one.get(f"/?token={TOKEN}").headers
        assert "set-cookie" in other.get("/?token=another-token").headers
        assert one.get("/").status_code == 200 and other.get("/").status_code == 200


def test_every_answer_has_a_strict_csp_and_the_page_has_no_inline_script(client: TestClient) -> None:
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and page.headers["x-content-type-options"] == "nosniff"
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page.text))
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]*)"', page.text))  # nothing from elsewhere
    assert client.get("/api/fleet").headers["content-security-policy"] == csp


def test_a_foreign_host_header_is_refused(client: TestClient) -> None:
    # a DNS-rebinding page reaches 127.0.0.1 under its own name: the Host header gives it away
    assert client.get("/api/fleet", headers={"host": "evil.example:8765"}).status_code == 403
    assert client.get("/api/fleet", headers={"host": "localhost:8765"}).status_code == 200
    assert Settings(token=TOKEN, bind_host="0.0.0.0").host_allowed("evil.example")
    assert is_loopback("::1") and is_loopback("127.0.0.2") and not is_loopback("10.0.0.1")


def test_writes_only_as_same_origin_json(client: TestClient) -> None:
    assert client.post("/api/sql", content="query=SELECT 1").status_code == 403
    assert client.post("/api/sql", json={"query": "SELECT 1"}, headers={"sec-fetch-site": "cross-site"}).status_code \
        == 403
    assert client.put("/api/fleet", json={}).status_code in (403, 405)
    assert client.delete("/api/fleet").status_code in (403, 405)


def test_reads_only_from_the_console_s_own_page(client: TestClient) -> None:
    # a page on another port of 127.0.0.1 is same-site: the browser sends it the cookie, marked "same-site"
    for site in ("same-site", "cross-site"):
        assert client.get("/api/device/press-1/series/temperature?range=90d",
                          headers={"sec-fetch-site": site}).status_code == 403
        assert client.get("/api/events", headers={"sec-fetch-site": site}).status_code == 403
    assert client.get("/api/fleet", headers={"sec-fetch-site": "same-origin"}).status_code == 200
    assert client.get("/api/fleet", headers={"sec-fetch-site": "none"}).status_code == 200  # typed in the bar


def test_fleet_view(client: TestClient) -> None:
    fleet = client.get("/api/fleet").json()
    rows = {row["deviceId"]: row for row in fleet["devices"]}
    assert (rows["press-1"]["state"], rows["press-1"]["openAnomalies"]) == ("online", 1)
    assert rows["press-1"]["readingsLastHour"] == 301
    assert (rows["press-2"]["state"], rows["press-2"]["silentFor"]) == ("stale", 600.0)
    assert rows["press-3"]["state"] == "offline"
    assert fleet["counts"] == {"online": 1, "stale": 1, "offline": 1, "unknown": 0}


def test_a_sensor_series_is_downsampled_with_every_anomaly_and_its_bounds(client: TestClient) -> None:
    series = client.get("/api/device/press-1/series/temperature?range=1h").json()
    assert series["points"] == 301 and series["shown"] == len(series["times"]) == POINTS
    assert (series["min"], series["max"], series["unit"]) == (10.0, 80.0, "celsius")
    assert [(a["value"], a["reason"]) for a in series["anomalies"]] == [(95.0, "above max 80")]
    assert series["sources"] == [{"source": "table", "from": NOW - 3_600_000, "to": NOW}]
    assert client.get("/api/device/press-1/series/temperature?range=15m").json()["points"] == 91
    device = client.get("/api/device/press-1?range=24h").json()
    assert [s["name"] for s in device["sensors"]] == ["pressure", "temperature", "vibration"]
    assert len(device["anomalies"]) == 1


def test_bad_arguments_are_400_with_the_fix(client: TestClient) -> None:
    answer = client.get("/api/device/press-1/series/temperature?range=2y")
    assert answer.status_code == 400 and "15m" in answer.json()["error"]
    assert client.get("/api/device/bad%20id?range=1h").status_code == 400
    assert client.get("/api/device/press-1/series/temp'erature?range=1h").status_code == 400


def test_anomalies_feed_filters(client: TestClient) -> None:
    assert [a["deviceId"] for a in client.get("/api/anomalies").json()["anomalies"]] == ["press-1"]
    assert client.get("/api/anomalies?sensor=pressure").json()["anomalies"] == []
    assert client.get("/api/anomalies?rule=model").json()["anomalies"] == []
    assert len(client.get("/api/anomalies?rule=bound&device=press-1").json()["anomalies"]) == 1


def test_events_stream_anomalies_and_the_fleet(client: TestClient) -> None:
    with client.stream("GET", "/api/events") as stream:
        text = "".join(stream.iter_text())
    assert "event: anomaly" in text and '"deviceId":"press-1"' in text and "event: fleet" in text


def test_health_reads_each_part_or_says_why_not(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["cost"]["ok"] and health["cost"]["value"]["monthlyUsd"] > 0
    assert health["cost"]["value"]["devices"] == 3
    assert not health["deadLetters"]["ok"]  # this test's stack has no queue: the part says so, the page stays
    assert set(health) == {"now", "metrics", "iteratorAge", "deadLetters", "quarantined", "errors", "cost"}


def test_no_answer_carries_a_credential(client: TestClient) -> None:
    for path in ("/api/about", "/api/fleet", "/api/health", "/api/anomalies", "/api/sql",
                 "/api/device/press-1/series/temperature?range=1h"):
        assert SECRET not in client.get(path).text, path


def test_ranges_past_the_retention_come_from_the_sql_archive(stored: None, tmp_path: Path) -> None:
    del stored
    pytest.importorskip("duckdb")
    data = console_data(tmp_path, **{"storage.ttl_days": 1})
    series = data.series("press-3", "temperature", "7d")
    assert [s["source"] for s in series["sources"]] == ["archive", "table"]
    assert series["sources"][0]["engine"] == "duckdb"
    # three days old, past the one-day retention: read from the raw archive (the table part has nothing)
    assert series["values"] == [42.0] and series["times"][0] <= (NOW - 3 * 86_400_000) / 1000
    recent = data.series("press-1", "temperature", "7d")
    assert recent["points"] == 301 and recent["sources"][1]["source"] == "table"


def test_a_charts_archived_part_on_athena_is_one_query_reused_while_the_page_reads_again(stored: None,
                                                                                          tmp_path: Path) -> None:
    # the page reads its charts again every few seconds while the device sends: the part past the table's TTL no
    # longer changes, and each Athena query is billed, so one query serves the reads of ARCHIVE_REUSE_S
    del stored
    from botocore.stub import ANY, Stubber

    athena = boto3.client("athena", region_name="us-east-1")
    stub = Stubber(athena)
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"},
                      {"QueryString": ANY, "WorkGroup": "wg", "QueryExecutionContext": {"Database": "db"}})
    stub.add_response("get_query_execution", {"QueryExecution": {
        "QueryExecutionId": "q1", "Status": {"State": "SUCCEEDED"}, "Statistics": {"DataScannedInBytes": 1}}},
        {"QueryExecutionId": "q1"})
    stub.add_response("get_query_results", {"ResultSet": {
        "Rows": [{"Data": [{"VarCharValue": "t"}, {"VarCharValue": "v"}]},
                 {"Data": [{"VarCharValue": str((NOW - 3 * 86_400_000) // 1000)}, {"VarCharValue": "42"}]}],
        "ResultSetMetadata": {"ColumnInfo": [{"Name": "t", "Type": "double"}, {"Name": "v", "Type": "double"}]}}},
        {"QueryExecutionId": "q1"})
    stub.activate()
    data = athena_console(athena, tmp_path, {"storage.ttl_days": 1})
    first = data.series("press-3", "temperature", "7d")
    again = data.series("press-3", "temperature", "7d")  # a second start_query_execution would find no answer
    stub.assert_no_pending_responses()
    assert first["sources"][0] == again["sources"][0] and first["sources"][0]["engine"] == "athena"
    assert first["values"] == again["values"] == [42.0]


def test_static_assets_ship_in_the_package() -> None:
    folder = Path(static_dir())
    assert {p.name for p in folder.iterdir()} >= {"index.html", "console.js", "console.css", "vendor"}
    assert (folder / "vendor" / "uPlot.iife.min.js").stat().st_size > 10_000


def test_static_assets_are_versioned_and_kept_by_the_browser_that_passed_the_token(client: TestClient) -> None:
    page = client.get("/")
    assert page.headers["cache-control"] == "no-store"  # the page itself is asked for each time
    addresses = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    version = asset_version(static_dir())
    assert addresses and all(a.endswith(f"?v={version}") for a in addresses)
    asset = client.get(addresses[-1])
    assert asset.status_code == 200 and asset.headers["cache-control"] == "private, max-age=31536000, immutable"
    again = client.get(addresses[-1], headers={"if-none-match": asset.headers["etag"]})
    assert again.status_code == 304 and again.headers["cache-control"] == asset.headers["cache-control"]
    client.cookies.clear()
    refused = client.get(addresses[-1], headers={"if-none-match": asset.headers["etag"]})
    assert refused.status_code == 401 and refused.headers["cache-control"] == "no-store"


def test_the_fleet_snapshot_is_served_at_once_and_refreshed_behind(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from iotpipe.console import data as data_module
    from iotpipe.query.fleet import DeviceSummary

    calls: list[int] = []
    release = threading.Event()

    def summary(*_args: Any, **_kwargs: Any) -> list[DeviceSummary]:
        calls.append(len(calls))
        if len(calls) > 1:
            release.wait(10)  # the background read is slow: the page must not wait for it
        return [DeviceSummary(f"d{len(calls)}", False, "", NOW, 1, 0, "online")]

    monkeypatch.setattr(data_module.fleet_lib, "fleet_summary", summary)
    data = console_data(tmp_path)
    assert [d["deviceId"] for d in data.fleet()["devices"]] == ["d1"]
    assert data.fleet()["devices"][0]["deviceId"] == "d1" and len(calls) == 1  # fresh: no read
    threading.Event().wait(0.05)  # older than twice its (instant) read
    assert [d["deviceId"] for d in data.fleet(max_age_s=0)["devices"]] == ["d1"]  # old: served, read behind
    release.set()
    for _ in range(100):
        if data.fleet()["devices"][0]["deviceId"] == "d2":
            break
        threading.Event().wait(0.05)
    assert data.fleet()["devices"][0]["deviceId"] == "d2" and len(calls) == 2


def test_sql_on_athena_shows_the_most_it_can_scan_before_and_what_it_scanned_after(stored: None,
                                                                                   tmp_path: Path) -> None:
    del stored
    from botocore.stub import ANY, Stubber

    athena = boto3.client("athena", region_name="us-east-1")
    stub = Stubber(athena)  # moto has no Athena engine: AWS's answers, as botocore's Stubber gives them
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"},
                      {"QueryString": ANY, "WorkGroup": "wg", "QueryExecutionContext": {"Database": "db"}})
    stub.add_response("get_query_execution", {"QueryExecution": {
        "QueryExecutionId": "q1", "Status": {"State": "SUCCEEDED"}, "Statistics": {"DataScannedInBytes": 20_000_000}}},
        {"QueryExecutionId": "q1"})
    stub.add_response("get_query_results", {"ResultSet": {
        "Rows": [{"Data": [{"VarCharValue": "one"}]}, {"Data": [{"VarCharValue": "1"}]}],
        "ResultSetMetadata": {"ColumnInfo": [{"Name": "one", "Type": "integer"}]}}}, {"QueryExecutionId": "q1"})
    stub.activate()

    data = athena_console(athena, tmp_path)
    archived = sum(o["Size"] for o in boto3.client("s3", region_name="us-east-1").list_objects_v2(
        Bucket=BUCKET, Prefix="raw/")["Contents"])
    result = data.run_sql("SELECT 1 AS one", since="24h")
    assert (result["engine"], result["columns"], result["rows"]) == ("athena", ["one"], [[1]])
    # before: the window's archive objects (the one of three days ago is outside the 24 h window)
    assert 0 < result["estimate"]["bytes"] < archived
    assert result["bytesScanned"] == 20_000_000 and result["costUsd"] == pytest.approx(20e6 / 1e12 * 5)


def test_the_charts_of_a_device_page_share_one_read_of_its_partition(stored: None, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from iotpipe.console import data as data_module

    del stored
    reads: list[str] = []
    original = data_module.fleet_lib.query_device_series

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(data_module.fleet_lib, "query_device_series", counted)
    data = console_data(tmp_path)
    with ThreadPoolExecutor(3) as pool:  # the page asks for each sensor at once
        answers = list(pool.map(lambda s: data.series("press-1", s, "1h"), ("temperature", "pressure", "vibration")))
    assert reads == ["press-1"]
    assert [a["points"] for a in answers] == [301, 0, 0] and answers[0]["anomalies"][0]["value"] == 95.0
    assert {(a["since"], a["until"]) for a in answers} == {(NOW - 3_600_000, NOW)}
    data.series("press-2", "pressure", "1h")
    assert reads == ["press-1", "press-2"]
    monkeypatch.setattr(data_module, "SHARED_READ_S", 0.0)
    threading.Event().wait(0.01)
    data.series("press-1", "temperature", "1h")  # older than the shared time: read again
    assert reads == ["press-1", "press-2", "press-1"]


def test_the_sql_box_runs_one_query_at_a_time(stored: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # on Athena each query is billed: a second Run while one is running is refused, not queued
    del stored
    data = console_data(tmp_path)
    entered, release = threading.Event(), threading.Event()

    def slow(text: str, since: str = "24h") -> dict[str, Any]:
        entered.set()
        release.wait(10)
        return {"engine": "duckdb", "query": text, "since": since}

    monkeypatch.setattr(data, "run_sql", slow)
    app = create_app(data, Settings(token=TOKEN))
    answers: list[Any] = []
    with TestClient(app, base_url=BASE) as browser:
        browser.cookies.set(Settings(token=TOKEN).cookie, TOKEN)
        first = threading.Thread(target=lambda: answers.append(browser.post("/api/sql", json={"query": "SELECT 1"})))
        first.start()
        assert entered.wait(10)
        second = browser.post("/api/sql", json={"query": "SELECT 2"})
        release.set()
        first.join(10)
        assert second.status_code == 429 and "running already" in second.json()["error"]
        assert answers[0].status_code == 200 and answers[0].json()["query"] == "SELECT 1"
        assert browser.post("/api/sql", json={"query": "SELECT 3"}).status_code == 200  # free again


def test_an_athena_query_of_the_sql_box_is_stopped_after_its_time(stored: None, tmp_path: Path) -> None:
    del stored
    from botocore.stub import ANY, Stubber

    from iotpipe.sql import SqlError

    athena = boto3.client("athena", region_name="us-east-1")
    stub = Stubber(athena)
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"},
                      {"QueryString": ANY, "WorkGroup": "wg", "QueryExecutionContext": {"Database": "db"}})
    for _ in range(2):
        stub.add_response("get_query_execution", {"QueryExecution": {"QueryExecutionId": "q1",
                                                                     "Status": {"State": "RUNNING"}}},
                          {"QueryExecutionId": "q1"})
    stub.add_response("stop_query_execution", {}, {"QueryExecutionId": "q1"})
    stub.activate()

    data = athena_console(athena, tmp_path, sql_max_polls=2)
    with pytest.raises(SqlError, match="stopped it"):
        data.run_sql("SELECT 1 AS one", since="24h")
    stub.assert_no_pending_responses()  # Athena was told to stop


def test_event_streams_are_limited_and_a_closed_one_frees_its_place(stored: None, tmp_path: Path) -> None:
    # a real server: the test client would wait for a stream's end before answering
    import http.client
    import socket

    import uvicorn

    del stored
    app = create_app(console_data(tmp_path), Settings(token=TOKEN, max_streams=1, poll_s=0.05, stream_s=30))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    runner = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    runner.start()

    def open_stream() -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", f"/api/events?token={TOKEN}")
        return connection, connection.getresponse()

    try:
        deadline = time.monotonic() + 30  # bounded waits: the shared machine may be slow
        while not server.started and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        first, answer = open_stream()
        assert answer.status == 200 and answer.readline() == b"retry: 2000\n"
        refused, second = open_stream()
        assert second.status == 503 and b"open already" in second.read()
        refused.close()
        first.close()
        deadline = time.monotonic() + 30
        while True:  # the server sees the first stream closed at its next poll
            connection, again = open_stream()
            if again.status == 200 or time.monotonic() > deadline:
                break
            connection.close()
            threading.Event().wait(0.05)
        assert again.status == 200
        connection.close()
    finally:
        server.should_exit = True
        runner.join(10)
        sock.close()


def test_an_unexpected_error_answers_without_its_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def client(self, service: str) -> Any:
            raise RuntimeError(f"no {service} client: secret {SECRET}")

    names = Names(table=TABLE, index=INDEX, bucket=BUCKET, log_group="", queue_url="", function_name="",
                  environment="dev", workgroup="", database="")
    data = ConsoleData(load_config(None, "dev", {}), Broken(), local=True, cache_dir=tmp_path, clock=lambda: NOW,
                       names=names)
    with TestClient(create_app(data, Settings(token=TOKEN)), base_url=BASE) as browser:
        browser.cookies.set(Settings(token=TOKEN).cookie, TOKEN)
        answer = browser.get("/api/fleet")
    assert answer.status_code == 500 and "RuntimeError" in answer.json()["error"]
    assert SECRET not in answer.text and "Traceback" not in answer.text
    assert "default-src 'none'" in answer.headers["content-security-policy"]  # a failure is guarded like the rest
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)  # the terminal gets the why


def test_a_model_anomaly_comes_with_its_learned_band_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from test_query import THRESHOLDS

    temperature: dict[str, Any] = dict(THRESHOLDS["temperature"])  # type: ignore[call-overload]
    detecting = {**THRESHOLDS, "temperature": {**temperature, "detector": "onset", "probation": 5}}
    values = [20.0, 20.1, 19.9, 20.0, 20.2, 20.1, 35.0, 20.0]
    with mock_aws():
        create_table(boto3.client("dynamodb", region_name="us-east-1"))
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        run_processor([single("press-1", "temperature", v, NOW - (len(values) - i) * 1000)
                       for i, v in enumerate(values)], monkeypatch, capsys,
                      env={"THRESHOLDS": json.dumps(detecting)})
        data = console_data(tmp_path)
        series = data.series("press-1", "temperature", "15m")
        device = data.device("press-1", "15m")
    [anomaly] = series["anomalies"]
    assert (anomaly["value"], anomaly["rule"]) == (35.0, "model")  # inside the static bounds: the model's
    assert anomaly["expectedLow"] < 20.1 < anomaly["expectedHigh"] and anomaly["score"] >= 0.5
    assert [(a["value"], a["rule"], a["expectedLow"]) for a in device["anomalies"]] == [
        (35.0, "model", anomaly["expectedLow"])]  # the list beside the charts says why


def test_the_sql_box_runs_one_select_on_duckdb_and_refuses_more(client: TestClient) -> None:
    pytest.importorskip("duckdb")
    ran = client.post("/api/sql", json={"query": "SELECT count(*) AS n FROM readings", "since": "24h"})
    assert ran.status_code == 200, ran.text
    # the 24 h window: press-3's reading of three days ago is outside it
    assert (ran.json()["engine"], ran.json()["columns"], ran.json()["rows"]) == ("duckdb", ["n"], [[302]])
    second = client.post("/api/sql", json={"query": "SELECT 1; COPY readings TO '/tmp/x.csv'"})
    assert second.status_code == 400 and "2 statements" in second.json()["error"]
    write = client.post("/api/sql", json={"query": "COPY (SELECT 1) TO '/tmp/x.csv'"})
    assert write.status_code == 400
def test_a_device_page_starts_the_read_its_charts_share(stored: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from iotpipe.console import data as data_module

    del stored
    reads: list[str] = []
    started, release = threading.Event(), threading.Event()
    original = data_module.fleet_lib.query_device_series

    def held(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[2])
        started.set()
        release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(data_module.fleet_lib, "query_device_series", held)
    data = console_data(tmp_path)
    assert data.device("press-1", "1h")["deviceId"] == "press-1"
    assert started.wait(30) and reads == ["press-1"]  # begun by the device's own request
    threading.Timer(0.2, release.set).start()
    assert data.series("press-1", "temperature", "1h")["points"] == 301  # waits for that read, reads nothing more
    assert reads == ["press-1"]
