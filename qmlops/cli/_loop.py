"""``qmlops loop ...``: replay stored days, run on new data, status, stop, shadow a version, report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from qmlops.cli._common import JSON_OPTION, console, handle_errors, print_json, print_record

app = typer.Typer(no_args_is_help=True)


@app.command("replay")
@handle_errors
def replay_command(
    dataset: str = typer.Option(
        ..., "--dataset", help="stored dataset (name or version id) whose days to replay"
    ),
    start: str = typer.Option(
        ..., "--from", help="first day to replay (the days before it are the loop's history)"
    ),
    end: str | None = typer.Option(None, "--to", help="last day (default: the dataset's last)"),
    policy: Path | None = typer.Option(
        None, "--policy", help="policy YAML (schedule, windows, triggers, gates)"
    ),
    name: str = typer.Option(
        "replay", "--name", help="the loop's name (a second run of the same name resumes)"
    ),
    report: Path | None = typer.Option(None, "--report", help="write the HTML report here at the end"),
    quiet: bool = typer.Option(False, "--quiet", help="no line per day"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Drive the loop over stored days as fast as the machine allows; resumes at the first unfinished stage."""
    from qmlops.loop import LoopController, load_policy

    pol = load_policy(policy)  # a bad policy is refused before anything runs
    ctl = LoopController.open_replay(name, dataset, start, end, policy=pol)
    started = time.perf_counter()

    def on_day(day: str, summary: dict[str, Any]) -> None:
        if quiet or as_json:
            return
        events = []
        if (summary.get("retrain") or {}).get("retrain"):
            events.append(f"retrain ({summary['retrain']['reason']})")
        for model_id, v in (summary.get("verdict") or {}).items():
            if v["verdict"] != "wait":
                events.append(f"{v['verdict']} {model_id}")
        ics = (summary.get("mature") or {}).get("metrics", {})
        ic_text = " ".join(f"{k[:10]}={v:+.3f}" for k, v in ics.items() if v is not None)
        console.print(f"{day} {ic_text} {'; '.join(events)}".rstrip(), highlight=False)

    loop = ctl.run(on_day=on_day)
    result = {**ctl.status(), "seconds": round(time.perf_counter() - started, 2)}
    if report is not None:
        from qmlops.loop._report import render_loop_report

        report.write_text(render_loop_report(ctl.store, ctl.id), encoding="utf-8")
        result["report"] = str(report)
    if as_json:
        print_json(result)
        return
    console.print(f"loop [bold cyan]{loop['id']}[/] {loop['state']} at {loop['last_day']}; production "
                  f"{loop['production']}; {result['seconds']} s")  # fmt: skip


@app.command("start")
@handle_errors
def start_command(
    dataset: str = typer.Option(..., "--dataset", help="the dataset new days are appended to (its history)"),
    policy: Path | None = typer.Option(None, "--policy", help="policy YAML"),
    watch: str | None = typer.Option(
        None, "--watch", help="directory or pyarrow.fs URI where day files arrive"
    ),
    name: str = typer.Option("live", "--name", help="the loop's name"),
    poll: float = typer.Option(5.0, "--poll", help="seconds between scans"),
    once: bool = typer.Option(False, "--once", help="process what is there now and exit"),
    detach: bool = typer.Option(False, "--detach", help="run in a named, detached Ray actor on the cluster"),
) -> None:
    """Wait for new data: day files in --watch, or days appended with `qmlops data ingest --append`."""
    from qmlops.loop import load_policy
    from qmlops.loop._live import loop_actor, open_live, run_live, scan_once

    pol = load_policy(policy)
    if detach:
        from qmlops.ray_utils import init_ray

        init_ray()
        loop_actor(name, dataset, pol, watch, poll)
        console.print(f"loop {name} running in actor -loop-{name}; `qmlops loop stop {name}` ends it")
        return
    ctl = open_live(name, dataset, policy=pol)
    if once:
        days = scan_once(ctl, watch)
        console.print(f"loop {name}: processed {len(days)} day(s) {' '.join(days)}")
        return
    run_live(ctl, watch, poll_s=poll)


@app.command("status")
@handle_errors
def status_command(name: str = typer.Argument("replay"), as_json: bool = JSON_OPTION) -> None:
    """The loop's state, production version, shadow candidates, recent decisions and online IC."""
    from qmlops.loop import LoopController
    from qmlops.loop._report import loop_summary, loop_timeline

    ctl = LoopController.open(name)
    status = {**ctl.status(), "summary": loop_summary(ctl.store, ctl.id)}
    if as_json:
        print_json({**status, "timeline": loop_timeline(ctl.store, ctl.id)})
        return
    print_record({k: status[k] for k in ("id", "state", "mode", "source", "last_day", "production", "shadows",
                                         "alerts", "summary")}, as_json=False)  # fmt: skip
    for d in status["decisions"]:
        console.print(
            f"  {d['day']} {d['kind']:8} {d['model_version'] or '':20} {d['reason']}", highlight=False
        )


@app.command("stop")
@handle_errors
def stop_command(name: str = typer.Argument("replay")) -> None:
    """Ask a running loop to stop after the day it is on."""
    from qmlops.metadata import get_store

    loop = get_store().loops.update(name, state="stopping")
    console.print(f"loop {loop['id']} stopping after its current day")


@app.command("shadow")
@handle_errors
def shadow_command(
    name: str = typer.Argument(..., help="the loop"),
    model: str = typer.Argument(..., help="model name or version id"),
    version: str = typer.Option("latest", "--version"),
) -> None:
    """Put a registered version into the loop's shadow: it scores beside production until its verdict."""
    from qmlops.loop import LoopController

    model_id = LoopController.open(name).add_shadow(model, version)
    console.print(f"{model_id} scores in shadow in loop {name}")


@app.command("report")
@handle_errors
def report_command(
    name: str = typer.Argument("replay"),
    out: Path = typer.Option(Path("loop-report.html"), "--out", help="HTML file to write"),
) -> None:
    """The HTML report: IC timeline plot (production, oracle, shadows; retrains and promotions) and decisions."""
    from qmlops.loop._report import render_loop_report
    from qmlops.metadata import get_store

    out.write_text(render_loop_report(get_store(), name), encoding="utf-8")
    console.print(f"wrote {out}")
