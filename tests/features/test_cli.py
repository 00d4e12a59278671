"""``qmlops features build|list|show`` and ``jobs.features``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from qmlops.cli import app

from .test_store import _subset_csv

runner = CliRunner()


def test_build_list_show(tmp_home: Path, tmp_path: Path) -> None:
    ingest_args = ["data", "ingest", str(_subset_csv(tmp_path)), "--name", "sub", "--no-features"]
    assert runner.invoke(app, ingest_args).exit_code == 0
    out = runner.invoke(app, ["features", "build", "sub", "--set", "indicators", "--engine", "local"])
    assert out.exit_code == 0, out.output
    assert "computed in" in out.output and "21 features" in out.output
    again = runner.invoke(
        app, ["features", "build", "sub", "--set", "indicators", "--engine", "local", "--json"]
    )
    assert json.loads(again.output)["cache_hit"] is True
    listing = json.loads(runner.invoke(app, ["features", "list", "--json"]).output)
    assert len(listing) == 1 and listing[0]["status"] == "complete"
    shown = json.loads(runner.invoke(app, ["features", "show", listing[0]["id"], "--stats", "--json"]).output)
    assert shown["feature_set"] == "indicators" and len(shown["stats"]) == 21


def test_errors(tmp_home: Path) -> None:
    out = runner.invoke(app, ["features", "build", "nothing-here"])
    assert out.exit_code == 3 and "no dataset version or name 'nothing-here'" in out.output
    out = runner.invoke(app, ["features", "build", "x", "--set", "alpha999", "--engine", "local"])
    assert out.exit_code == 3
    assert runner.invoke(app, ["features", "show", "fm-missing"]).exit_code == 3


def test_job_entry_point_through_ray(ray_home: Path, tmp_path: Path, capsys) -> None:
    from jobs.features import main
    from qmlops.data import ingest

    ingest(str(_subset_csv(tmp_path, n=6)), name="sub")
    assert main(["sub", "--set", "indicators"]) == 0
    printed = capsys.readouterr().out
    assert "batches" in printed
    result = json.loads(printed[printed.index("{") :])
    assert result["status"] == "complete" and result["engine"] == "ray"


def test_cli_ingest_materialises_default_sets_unless_told_not_to(tmp_home: Path, tmp_path: Path) -> None:
    from qmlops.data import subscribers

    csv = _subset_csv(tmp_path, n=5)
    out = runner.invoke(app, ["data", "ingest", str(csv), "--name", "sub"])
    assert out.exit_code == 0 and "subscriber features.auto_materialize: ok" in out.output
    listing = json.loads(runner.invoke(app, ["features", "list", "--json"]).output)
    assert [m["status"] for m in listing] == ["complete"]
    assert subscribers() == []  # the CLI's subscription ends with the command
    frame = csv.read_text().splitlines()
    (tmp_path / "v2.csv").write_text("\n".join(frame[:-1]) + "\n")  # a new version: one row fewer
    out = runner.invoke(app, ["data", "ingest", str(tmp_path / "v2.csv"), "--name", "sub", "--no-features"])
    assert out.exit_code == 0 and "auto_materialize" not in out.output
    assert len(json.loads(runner.invoke(app, ["features", "list", "--json"]).output)) == 1
