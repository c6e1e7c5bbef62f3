"""A promoted model reads its text by name and serves anywhere: through `mlflow.pyfunc` with an `id`
column first, and over HTTP through a real `mlflow models serve` (`harness serve`) on 127.0.0.1
started from a shell whose PATH lacks the virtualenv's bin, in a folder of its own."""

# The fixtures are imported by name, so the tests that take them "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from harness.data.text import normalise_text
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
        process_group=0,  # so a server that outlives it can be stopped with it
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
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # it did not stop: its whole group goes
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
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

    # A text as a caller sends it, un-normalised: scored as the text it was trained on.
    both = {"dataframe_split": {"columns": ["text"], "data": [[texts[0]], [_unprepared(texts[0])]]}}
    status, answer = _post(url, json.dumps(both).encode(), "application/json")
    assert status == 200, answer
    first, second = answer["predictions"]
    assert first["label"] == second["label"] == labels[0]
    assert second["confidence"] == pytest.approx(first["confidence"])

    wrong = {"dataframe_split": {"columns": ["id", "review"], "data": [[7, texts[0]]]}}
    status, answer = _post(url, json.dumps(wrong).encode(), "application/json")
    assert status == 400, answer
    assert "['text']" in answer["message"] and "review" in answer["message"]


def _unprepared(text: str) -> str:
    """`text` as a caller might send it before `harness prepare`'s normalisation: decomposed
    accents (NFD), a doubled space, a Windows-1252 ellipsis read as Latin-1 (U+0085, which the
    model's tokenizer drops, gluing two words) between the first two words, trailing newlines."""
    glued = text.replace(" ", "\x85", 1).replace(" ", "  ", 1)
    return unicodedata.normalize("NFD", f"  {glued}\n\n")


def test_every_client_classifies_the_text_it_was_trained_on(
    swept: Swept, promoted: Promotion, tmp_path: Path
) -> None:
    # Found by QA (train/serve skew): the model was trained and scored on normalised texts, but
    # the pyfunc model and `harness predict` passed the caller's raw text on, so the same text
    # un-normalised got another encoding (here "firstsecond" for "first second"), another score.
    expected = swept.backend_predictions(promoted.run_id)
    rows = expected[expected["text"].str.count(" ") >= 2].head(3)
    texts, variants = rows["text"].tolist(), [_unprepared(t) for t in rows["text"]]
    assert [normalise_text(v) for v in variants] == texts != variants
    recorded = rows["confidence"].tolist()
    with pointed_at(swept.store):
        model = mlflow.pyfunc.load_model(promoted.uri)
    frame = model.predict(pd.DataFrame({"text": texts + variants}))
    assert frame["label"].tolist() == rows["predicted"].tolist() * 2
    assert frame["confidence"].tolist() == pytest.approx(recorded * 2, abs=1e-4)
    assert frame["confidence"].tolist()[3:] == pytest.approx(frame["confidence"].tolist()[:3])

    file = tmp_path / "variants.jsonl"
    file.write_text("".join(json.dumps({"text": v}) + "\n" for v in variants), encoding="utf-8")
    env = {"MLFLOW_TRACKING_URI": swept.store}
    result = run_cli("predict", NAME, texts[0], variants[0], "--file", str(file), "--json", env=env)
    assert result.exit_code == 0, result.output
    # JSON Lines split on "\n" only: an echoed U+0085 is no line break.
    answers = [json.loads(line) for line in result.stdout.split("\n") if line]
    assert [a["text"] for a in answers] == [texts[0], *variants[:1], *variants]  # echoed as given
    assert [a["label"] for a in answers] == [rows["predicted"].iloc[0]] * 2 + rows[
        "predicted"
    ].tolist()
    confidences = [a["confidence"] for a in answers]
    assert confidences == pytest.approx([recorded[0]] * 2 + recorded, abs=1e-4)


def test_predict_command_refuses_what_the_model_refuses(swept: Swept, promoted: Promotion) -> None:
    result = run_cli("predict", NAME, "   ", env={"MLFLOW_TRACKING_URI": swept.store})
    assert_clean_error(result, "nothing to classify")


def _env_manager() -> str | None:
    """MLflow's `virtualenv` manager needs pyenv (it makes the env with `python -m venv`), `uv`
    needs uv; None where neither is here."""
    if shutil.which("pyenv"):
        return "virtualenv"
    return "uv" if shutil.which("uv") else None


# Signs that an environment could not be built because a package index was out of reach.
_OFFLINE = (
    *("No matching distribution", "Could not find a version", "NewConnectionError"),
    *("Network is unreachable", "Temporary failure in name resolution", "Could not resolve host"),
)


@pytest.mark.skipif(
    _env_manager() is None,
    reason="neither pyenv (for --env-manager virtualenv) nor uv is installed: MLflow cannot "
    "build the model's own environment here",
)
def test_a_fresh_environment_builds_from_the_requirements(
    swept: Swept, promoted: Promotion, tmp_path: Path
) -> None:
    """`mlflow models serve --env-manager virtualenv`: a new environment with nothing but the
    model's requirements.txt (installed from the package index) serves it by the `text` column."""
    manager = _env_manager()
    local = _model_dir(swept, promoted, tmp_path / "model")
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(local)]
    command += ["--env-manager", str(manager), "--host", "127.0.0.1", "--port", str(port)]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["MLFLOW_ENV_ROOT"] = str(tmp_path / "envs")  # the environment is built under tmp_path
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
    )
    try:
        deadline = time.monotonic() + 2400  # builds the environment first: minutes
        while not _answers(f"http://127.0.0.1:{port}/ping"):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                output = log.read()
                if any(sign in output for sign in _OFFLINE):
                    pytest.skip(f"{manager} could not build the environment: {output[-500:]}")
                pytest.fail(f"the server never answered: {output[-3000:]}")
            time.sleep(2)
        body = {"dataframe_split": {"columns": ["id", "text"], "data": [[1, "A delight, 7."]]}}
        url = f"http://127.0.0.1:{port}/invocations"
        status, answer = _post(url, json.dumps(body).encode(), "application/json")
        assert status == 200, answer
        assert answer["predictions"][0]["label"] in {"negative", "positive"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False
