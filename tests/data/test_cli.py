"""``qmlops data ...`` and ``jobs.ingest``: happy paths, JSON output, and one-line errors with exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from qmlops.cli import app

from .conftest import GOOD_ROWS, write_csv

runner = CliRunner()


def test_ingest_versions_show_lineage_export(tmp_home: Path, tmp_path: Path, good_csv: Path) -> None:
    out = runner.invoke(app, ["data", "ingest", str(good_csv), "--name", "toy"])
    assert out.exit_code == 0, out.output
    assert "new version" in out.output and "6 rows" in out.output
    again = runner.invoke(app, ["data", "ingest", str(good_csv), "--name", "toy"])
    assert "already stored" in again.output

    listing = json.loads(runner.invoke(app, ["data", "versions", "--json"]).output)
    assert isinstance(listing, list) and [v["name"] for v in listing] == ["toy"]
    vid = listing[0]["id"]
    shown = json.loads(runner.invoke(app, ["data", "show", vid[:8], "--json"]).output)
    assert shown["id"] == vid and shown["n_rows"] == len(GOOD_ROWS)

    v2 = write_csv(tmp_path / "v2.csv", [*GOOD_ROWS, ("20100107", "AAA", 10.8, 11.0, 10.7, 10.9, 800)])
    assert runner.invoke(app, ["data", "ingest", str(v2), "--name", "toy"]).exit_code == 0
    impact = json.loads(runner.invoke(app, ["data", "lineage", vid, "--impact", "--json"]).output)
    assert [(r["kind"], r["depth"]) for r in impact] == [("dataset", 1)]

    target = tmp_path / "qlib"
    out = runner.invoke(app, ["data", "export-qlib", "toy", str(target)])
    assert out.exit_code == 0, out.output
    assert (target / "features" / "aaa" / "close.day.bin").exists()


def test_errors_are_one_line_with_exit_codes(tmp_home: Path, tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", [*GOOD_ROWS[:2], ("20100106", "AAA", 10.4, 10.0, 10.3, 10.8, 900)])
    out = runner.invoke(app, ["data", "ingest", str(bad)])
    assert out.exit_code == 2
    assert "row 3 (AAA 2010-01-06): high_lt_low" in out.output and "Traceback" not in out.output
    assert runner.invoke(app, ["data", "show", "ds-nothing"]).exit_code == 3
    assert runner.invoke(app, ["data", "ingest", "nasdaq"]).exit_code == 3
    out = runner.invoke(app, ["data", "ingest", str(bad), "--map", "close"])
    assert out.exit_code == 2 and "--map" in out.output


def test_real_console_script_subprocess(tmp_home: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "qmlops"
    bad = write_csv(tmp_path / "bad.csv", [*GOOD_ROWS[:1], ("20100105", "AAA", 10.2, 10.6, 10.0, 10.4, -3)])
    proc = subprocess.run(
        [str(exe), "data", "ingest", str(bad)], capture_output=True, text=True, env=os.environ.copy()
    )
    assert proc.returncode == 2
    assert "negative_volume" in proc.stderr and "row 2" in proc.stderr and "Traceback" not in proc.stderr
    ok = subprocess.run([str(exe), "data", "ingest", "bokeh5", "--json"], capture_output=True, text=True,
                        env=os.environ.copy())  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["n_instruments"] == 5


def test_ingest_job_through_the_metadata_actor(ray_home: Path, tmp_path: Path, capsys) -> None:
    from jobs.ingest import main
    from qmlops.metadata import get_store

    csv = write_csv(tmp_path / "job.csv", GOOD_ROWS)
    assert main([str(csv), "--name", "jobdata"]) == 0
    printed = json.loads(capsys.readouterr().out)
    store = get_store()
    assert store.is_remote and store.datasets.get(printed["id"]).name == "jobdata"
    assert main([str(tmp_path / "missing.csv")]) == 3
