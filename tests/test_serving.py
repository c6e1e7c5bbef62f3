"""A promoted model reads its text by name and serves anywhere: through `mlflow.pyfunc` with an `id`
column first, and over HTTP through a real `mlflow models serve` (`harness serve`) on 127.0.0.1
started from a shell whose PATH lacks the virtualenv's bin, in a folder of its own."""

# The fixtures are imported by name, so the tests that take them "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException

from harness.handoff.promote import Promotion
from harness.handoff.serve import pointed_at
from tests.cli_runner import assert_clean_error, run_cli
from tests.test_registry import NAME, Swept, promoted, swept  # noqa: F401 - the fixtures

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _model_dir(swept: Swept, promoted: Promotion, into: Path) -> Path:
    with pointed_at(swept.store):
        return Path(mlflow.artifacts.download_artifacts(promoted.uri, dst_path=str(into)))


def test_the_model_reads_its_text_by_name_and_skips_empty_rows(
    swept: Swept, promoted: Promotion
) -> None:
    expected = swept.backend_predictions(promoted.run_id)
    texts = expected["text"].tolist()[:3]
    with pointed_at(swept.store):
        model = mlflow.pyfunc.load_model(promoted.uri)
    # An id column first: the ids were classified before; the texts are now.
    frame = model.predict(pd.DataFrame({"id": [101, 102, 103], "text": texts, "extra": 1}))
    assert frame["label"].tolist() == expected["predicted"].tolist()[:3]
    assert model.metadata.signature.inputs.input_names() == ["text"]
    assert model.metadata.metadata["labels"] == ["negative", "positive"]

    with pytest.raises(MlflowException) as missing:
        model.predict(pd.DataFrame({"id": [1], "review": ["A delight."]}))
    assert "['text']" in missing.value.message and "review" in missing.value.message

    # Empty and whitespace-only texts: skipped, their row comes back with a null label.
    mixed = model.predict(pd.DataFrame({"text": [texts[0], "", "   ", texts[1]]}))
    assert mixed["label"].tolist()[0] == expected["predicted"].tolist()[0]
    assert mixed["label"].isna().tolist() == [False, True, True, False]
    with pytest.raises(MlflowException, match="nothing to classify"):
        model.predict(pd.DataFrame({"text": ["", " "]}))


def test_the_model_carries_its_code_and_requirements(
    swept: Swept, promoted: Promotion, tmp_path: Path
) -> None:
    local = _model_dir(swept, promoted, tmp_path)
    assert (local / "code" / "harness" / "handoff" / "pyfunc.py").is_file()
    assert not list((local / "code").rglob("__pycache__"))
    requirements = (local / "requirements.txt").read_text().split()
    names = {line.split("==")[0] for line in requirements}
    assert {"mlflow", "pandas", "pydantic", "pyyaml", "optuna", "torch", "transformers"} <= names
    assert "harness" not in names and "optuna-dashboard" not in names
    # Loaded in another interpreter, the model runs its own copy of the harness code.
    probe = (
        "import sys, mlflow.pyfunc\n"
        f"model = mlflow.pyfunc.load_model({str(local)!r})\n"
        "print(sys.modules['harness.handoff.pyfunc'].__file__)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    code = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert code.returncode == 0, code.stderr[-3000:]
    assert code.stdout.strip().startswith(str(local / "code" / "harness"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, body: bytes, content_type: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def served(swept: Swept, promoted: Promotion, tmp_path: Path) -> Iterator[str]:
    """`harness serve` as a user runs it from another folder, with PATH lacking the venv's bin;
    stopped with SIGTERM by the test. Yields the server's base URL."""
    port = _free_port()
    env = {
        **os.environ,
        "PATH": "/usr/bin:/bin",
        "MLFLOW_TRACKING_URI": swept.store,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", NAME, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the model server did not answer within 300 s")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Model server at" in out and "not found" not in out
    with socket.socket() as sock:  # nothing left listening
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_served_over_http_by_column_name_from_any_shell(
    served: str, swept: Swept, promoted: Promotion
) -> None:
    expected = swept.backend_predictions(promoted.run_id)
    texts, labels = expected["text"].tolist()[:2], expected["predicted"].tolist()[:2]
    url = f"{served}/invocations"

    csv = "id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts, 1))
    status, answer = _post(url, csv.encode(), "text/csv")
    assert status == 200, answer
    assert [row["label"] for row in answer["predictions"]] == labels

    split = {"dataframe_split": {"columns": ["id", "text"], "data": [[7, texts[0]], [8, ""]]}}
    status, answer = _post(url, json.dumps(split).encode(), "application/json")
    assert status == 200, answer
    assert [row["label"] for row in answer["predictions"]] == [labels[0], None]

    wrong = {"dataframe_split": {"columns": ["id", "review"], "data": [[7, texts[0]]]}}
    status, answer = _post(url, json.dumps(wrong).encode(), "application/json")
    assert status == 400, answer
    assert "['text']" in answer["message"] and "review" in answer["message"]


def test_predict_command_refuses_what_the_model_refuses(swept: Swept, promoted: Promotion) -> None:
    result = run_cli("predict", NAME, "   ", env={"MLFLOW_TRACKING_URI": swept.store})
    assert_clean_error(result, "nothing to classify")


@pytest.mark.skipif(
    not any(
        (Path(p) / "virtualenv").exists() or (Path(p) / "uv").exists()
        for p in [*os.environ.get("PATH", "").split(os.pathsep), str(Path(sys.executable).parent)]
    ),
    reason="no `uv` or `virtualenv` here: `mlflow models serve --env-manager uv|virtualenv` "
    "cannot build the model's environment (it installs its requirements from PyPI)",
)
def test_a_fresh_environment_builds_from_the_requirements(
    swept: Swept, promoted: Promotion, tmp_path: Path
) -> None:
    on_path = os.environ["PATH"].split(os.pathsep)
    manager = "uv" if any((Path(p) / "uv").exists() for p in on_path) else "virtualenv"
    local = _model_dir(swept, promoted, tmp_path)
    (tmp_path / "in.json").write_text(json.dumps({"text": ["A delight."]}))
    command = [sys.executable, "-m", "mlflow", "models", "predict", "-m", str(local)]
    command += ["-i", str(tmp_path / "in.json"), "-t", "json", "--env-manager", manager]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=3000,
        env={**os.environ, "MLFLOW_ENV_ROOT": str(tmp_path / "envs")},
    )
    if result.returncode != 0 and "network" in (result.stderr + result.stdout).lower():
        pytest.skip(f"{manager} could not build the environment offline: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert yaml.safe_load(result.stdout)
