"""The daily loop's costs and quality.

Part ``features``: incremental Alpha158 for one new day at 250, 1,000 and 2,500 days of history (500
instruments), next to a full recompute of the same history measured in the same run (goal: flat within 1.5x,
and at least 20x faster than the full recompute at 2,500 days); the day's rows are checked against the full
recompute's.

Part ``replay``: ``qmlops loop replay`` over N instruments x D days on this machine, seconds per simulated
day split by stage, for days without a retrain and for retrain days (goal: under 3 s for a day without a
retrain); with ``--source planted`` (when the planted source is installed) also the production line's online
IC against the oracle's.

    python bench/loop.py [--part features|replay|all] [--instruments 500] [--days 250] [--source synthetic]
                         [--change-day N] [--policy bench/loop_change_policy.yaml]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd


def _market(n_instruments: int, n_days: int, seed: int = 0) -> pd.DataFrame:
    from qmlops.data import generate_synthetic

    frame = generate_synthetic(n_instruments, n_days, seed=seed)
    frame["date"] = frame["date"].astype("datetime64[ns]")
    return frame


def bench_features(n_instruments: int, histories: list[int], repeats: int = 5) -> None:
    from qmlops.features import compute_alpha158, compute_tail_features, tail_window

    market = _market(n_instruments, max(histories) + 1)
    calendar = pd.DatetimeIndex(sorted(market["date"].unique()))
    first = market.groupby("instrument")["date"].min()
    print(
        f"incremental Alpha158, {n_instruments} instruments: one new day vs a full recompute of the history"
    )
    print(f"{'history':>8}{'incremental s':>15}{'full s':>10}{'speed-up':>10}{'max |diff|':>12}")
    rows = []
    for h in histories:
        day = calendar[h]
        history = market[market["date"] <= day]
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            window, origin = tail_window(calendar, day)
            tail = history[history["date"] >= window[0]]
            inc = compute_tail_features(tail, pd.DatetimeIndex([day]), first_dates=first, calendar=window,
                                        origin=origin)  # fmt: skip
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        full = compute_alpha158(history)
        full_s = time.perf_counter() - t0
        ref = full.xs(day, level="datetime", drop_level=False)
        diff = float(np.nanmax(np.abs(ref.to_numpy() - inc.to_numpy())))
        inc_s = float(np.median(times))
        rows.append(inc_s)
        print(f"{h:>8}{inc_s:>15.3f}{full_s:>10.2f}{full_s / inc_s:>9.0f}x{diff:>12.2e}")
    print(f"incremental cost, longest / shortest history: {max(rows) / min(rows):.2f}x (goal <= 1.5x)")


def _planted_options(n_instruments: int, n_days: int, change_day: int | None) -> dict[str, object]:
    """A planted market whose reversal + volume-shock signal turns into momentum at ``change_day``."""
    options: dict[str, object] = {"n_instruments": n_instruments, "n_days": n_days, "seed": 0}
    if change_day is not None:
        options["regimes"] = [{"start_day": change_day,
                               "signal": {"weights": {"momentum_20": 1.0, "volume_shock_5": 0.5}, "strength": 0.1}}]  # fmt: skip
    return options


def recovery(
    production: pd.Series, oracle: pd.Series, change: pd.Timestamp, window: int, share: float
) -> int | None:
    """Market days after ``change`` until the production line's ``window``-day mean IC is back to ``share`` of
    the oracle's over the same days (None: never within the replay)."""
    both = pd.concat([production, oracle], axis=1, keys=["p", "o"]).dropna().sort_index()
    rolling = both.rolling(window).mean()
    after = rolling[rolling.index > change].iloc[window - 1 :]  # windows wholly after the change
    ok = after[(after["p"] >= share * after["o"]) & (after["o"] > 0)]
    if ok.empty:
        return None
    return int((both.index[both.index > change] <= ok.index[0]).sum())


def bench_replay(n_instruments: int, n_days: int, source: str, retrain_every: int,
                 change_day: int | None = None, train_days: int = 120, policy_file: str | None = None) -> None:  # fmt: skip
    from qmlops.data import FrameSource, ingest
    from qmlops.loop import LoopController
    from qmlops.metadata import get_store

    warmup = 130
    if source == "synthetic":
        frame = _market(n_instruments, warmup + n_days)
        record = ingest(FrameSource(frame, label="bench"), name="bench").record
    else:
        change = None if change_day is None else warmup + change_day
        record = ingest(
            source, name="bench", **_planted_options(n_instruments, warmup + n_days, change)
        ).record
    days = sorted(pd.DatetimeIndex(pd.read_parquet(record.uri, columns=["date"])["date"].unique()))
    policy = {"min_history_days": warmup, "train_days": train_days, "retrain_every": retrain_every}
    if policy_file:  # its settings over the command line's
        import yaml

        with open(policy_file) as fh:
            policy.update(yaml.safe_load(fh) or {})
        print(f"policy: {policy}")
    ctl = LoopController.open_replay(
        "bench", record.id, str(days[warmup].date()), str(days[-1].date()), policy=policy
    )
    t0 = time.perf_counter()
    ctl.run()
    wall = time.perf_counter() - t0
    store = get_store()
    steps = pd.DataFrame(store.loops.steps("bench"))
    retrain_days = {d["day"] for d in store.loops.decisions("bench", "retrain")}
    per_day = steps.pivot_table(index="day", columns="stage", values="seconds", aggfunc="sum")
    quiet = per_day[~per_day.index.isin(retrain_days)]
    print(f"replay of {n_instruments} instruments x {len(per_day)} days ({source}), retrain every {retrain_every} "
          f"days: {wall:.0f} s wall, {wall / len(per_day):.2f} s per day")  # fmt: skip
    print(f"{'stage':<10}{'mean s (no retrain)':>20}{'p95 s':>8}{'mean s (retrain days)':>23}")
    for stage in ("ingest", "features", "score", "mature", "watch", "retrain", "verdict"):
        a = quiet[stage]
        b = per_day.loc[per_day.index.isin(retrain_days), stage]
        print(
            f"{stage:<10}{a.mean():>20.3f}{a.quantile(0.95):>8.3f}{(b.mean() if len(b) else float('nan')):>23.2f}"
        )
    total_quiet = quiet.sum(axis=1)
    print(f"{'day':<10}{total_quiet.mean():>20.3f}{total_quiet.quantile(0.95):>8.3f}"
          f"{per_day.loc[per_day.index.isin(retrain_days)].sum(axis=1).mean():>23.2f}  (goal: < 3 s without a retrain)")  # fmt: skip
    from qmlops.loop._report import loop_summary

    print("summary:", loop_summary(store, "bench"))
    metrics = pd.DataFrame(store.loops.metrics("bench"))
    if "oracle" not in set(metrics["model_version"]):
        return
    metrics["day"] = pd.to_datetime(metrics["day"])
    prod = metrics[metrics["role"] == "production"].set_index("day")["ic"].astype(float)
    oracle = metrics[metrics["model_version"] == "oracle"].set_index("day")["ic"].astype(float)
    both = pd.concat([prod, oracle], axis=1, keys=["production", "oracle"]).dropna()
    change = days[warmup + change_day] if change_day is not None else None
    print(f"{'stretch':<34}{'days':>6}{'production IC':>15}{'oracle IC':>11}{'share':>8}")
    spans = [("whole replay", both)]
    if change is not None:
        spans += [("before the change", both[both.index < change]),
                  ("after the change, first 30 days", both[(both.index >= change)].head(30)),
                  ("after the change, from day 31", both[both.index >= change].iloc[30:])]  # fmt: skip
    for label, part in spans:
        if len(part):
            share = part["production"].mean() / part["oracle"].mean()
            print(
                f"{label:<34}{len(part):>6}{part['production'].mean():>15.4f}{part['oracle'].mean():>11.4f}{share:>8.0%}"
            )
    if change is not None:
        for share in (0.6, 0.8):
            print(f"days from the change until the 20-day production IC is {share:.0%} of the oracle's: "
                  f"{recovery(prod, oracle, change, 20, share)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["features", "replay", "all"], default="all")
    parser.add_argument("--instruments", type=int, default=500)
    parser.add_argument("--days", type=int, default=250)
    parser.add_argument("--source", default="synthetic", help="synthetic, or planted when installed")
    parser.add_argument("--retrain-every", type=int, default=20)
    parser.add_argument(
        "--change-day", type=int, default=None, help="planted: replay day of the regime change"
    )
    parser.add_argument("--train-days", type=int, default=120, help="the policy's rolling training window")
    parser.add_argument("--policy", default=None, help="a loop policy YAML over the options above")
    args = parser.parse_args()
    os.environ.setdefault("QMLOPS_HOME", tempfile.mkdtemp(prefix="qmlops-bench-loop-"))
    os.environ["QMLOPS_METADATA_MODE"] = "local"
    if args.part in ("features", "all"):
        bench_features(args.instruments, [250, 1000, 2500])
    if args.part in ("replay", "all"):
        bench_replay(
            args.instruments,
            args.days,
            args.source,
            args.retrain_every,
            args.change_day,
            args.train_days,
            args.policy,
        )


if __name__ == "__main__":
    main()
