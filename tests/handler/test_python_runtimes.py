"""The processor on every Python runtime the config allows (python3.12, 3.13, 3.14), not only on the Python that
runs the tests: CPython as Pyodide (compiled to WebAssembly, from the npm registry; make install puts it in
handler/node/node_modules) runs tests/handler/contract_probe.py under node, and its answers must equal this
interpreter's and the vectors'. The vectors' AWS side (moto) runs natively in test_handler_vectors.py; this
checks what depends on the Python version: JSON, numbers, timestamps, base64, items and quarantine rows."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import test_node_twin as twin
from contract_probe import probe
from processor_support import HANDLER_PATH, REPO, VECTORS_DIR, record_data

NODE_MODULES = REPO / "handler" / "node" / "node_modules"
RUNTIMES = {"python3.12": "pyodide-py312", "python3.13": "pyodide-py313", "python3.14": "pyodide-py314"}
PROBE = Path(__file__).with_name("contract_probe.py")
DETECTOR_DIR = VECTORS_DIR / "detector"  # docs/contract.md section 12: the scores, bit for bit on every runtime

DRIVER = r"""
const fs = require('fs');
const [pyodideDir, indexPath, probePath, jobPath] = process.argv.slice(1);
const { loadPyodide } = require(pyodideDir);
(async () => {
  const pyodide = await loadPyodide({ indexURL: pyodideDir + '/' });
  pyodide.FS.writeFile('/tmp/index.py', fs.readFileSync(indexPath, 'utf8'));
  pyodide.FS.writeFile('/tmp/contract_probe.py', fs.readFileSync(probePath, 'utf8'));
  pyodide.FS.writeFile('/tmp/job.json', fs.readFileSync(jobPath, 'utf8'));
  const out = pyodide.runPython(`
import json, sys
sys.path.insert(0, '/tmp')
from contract_probe import probe
json.dumps(probe('/tmp/index.py', json.load(open('/tmp/job.json'))))
`);
  process.stdout.write(out);
})().catch((err) => { process.stderr.write(String(err && err.stack || err)); process.exit(1); });
"""


def _job() -> dict[str, Any]:
    vectors = [json.loads(path.read_text()) for path in sorted(VECTORS_DIR.glob("*.json"))]
    return {"received": twin.RECEIVED, "retention": twin.RETENTION_MS, "timestamps": twin.TIMESTAMPS,
            "epochs": twin.EPOCH_TEXTS, "values": twin.VALUES, "doubles": twin.DOUBLES, "json": twin.JSON_TEXTS,
            "records": twin.EVENT_RECORDS + [{"kinesis": {"data": d}} for d in twin.BASE64], "now": twin.NOW_MS,
            "vectors": [(v, [[record_data(r) for r in batch["records"]] for batch in [*v.get("before", []), v]])
                        for v in vectors],
            "detector": {path.stem: json.loads(path.read_text()) for path in sorted(DETECTOR_DIR.glob("*.json"))}}


JOB = _job()
NATIVE = probe(str(HANDLER_PATH), json.loads(json.dumps(JOB)))


def test_the_native_probe_matches_the_vectors() -> None:
    for path in sorted(VECTORS_DIR.glob("*.json")):
        vector = json.loads(path.read_text())
        assert NATIVE["vectors"][vector["name"]] == {"items": vector["expect"]["items"],
                                                     "quarantine": vector["expect"]["quarantine"]}, path.stem


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_every_allowed_python_runtime_gives_the_same_answers(runtime: str, tmp_path: Path) -> None:
    pyodide = NODE_MODULES / RUNTIMES[runtime]
    if shutil.which("node") is None or not (pyodide / "pyodide.asm.wasm").is_file():
        pytest.skip(f"{runtime}: needs node and {RUNTIMES[runtime]} in handler/node/node_modules (make install)")
    job = tmp_path / "job.json"
    job.write_text(json.dumps(JOB))
    done = subprocess.run(["node", "-e", DRIVER, str(pyodide), str(HANDLER_PATH), str(PROBE), str(job)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout)

    assert answers.pop("python").startswith(runtime.removeprefix("python") + ".")
    native = {k: v for k, v in NATIVE.items() if k != "python"}
    for key in native:
        assert answers[key] == native[key], key
