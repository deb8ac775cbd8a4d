"""``iotpipe console`` as a user starts it: ``--no-browser --port 0`` prints the URL (with its token) as the first
line on stdout, listens on loopback only, and answers 401 without the token; Ctrl-C stops it."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

from iotpipe.local.state import STATE_DIR_VARIABLE
from local_run import CLI


def test_no_browser_prints_the_url_first_and_the_page_needs_its_token(moto_endpoint: str, tmp_path: Path) -> None:
    env = {**os.environ, STATE_DIR_VARIABLE: str(tmp_path / "state")}
    process = subprocess.Popen([*CLI, "console", "--env", "dev", "--endpoint-url", moto_endpoint, "--no-browser",
                                "--port", "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(process.stdout.readline() if process.stdout else ""))
        reader.start()
        reader.join(timeout=60)
        assert first and first[0], "no URL on stdout"
        url = first[0].strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{40,}", url), url
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        connection.request("GET", "/")
        refused = connection.getresponse()
        assert refused.status == 401 and b"token" in refused.read()
        connection.request("GET", f"/?{parts.query}")
        answer = connection.getresponse()
        assert answer.status == 200 and "HttpOnly" in (answer.getheader("set-cookie") or "")
        answer.read()
        connection.close()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert "iotpipe console stopped" in err, err
