"""``ray job submit -- python -m jobs.loop --dataset D --from DATE [--to DATE] [--policy P] [--name N]``.

Connects to the Ray cluster (metadata through the single-writer actor) and replays the loop over stored days;
a second submission with the same name resumes at the first unfinished stage. Prints the loop's status as JSON.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs._shell import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.loop", description=__doc__)
    parser.add_argument("--dataset", required=True, help="stored dataset whose days to replay")
    parser.add_argument("--from", dest="start", required=True, help="first day to replay")
    parser.add_argument("--to", dest="end", help="last day (default: the dataset's last)")
    parser.add_argument("--policy", help="policy YAML")
    parser.add_argument("--name", default="replay", help="the loop's name")
    parser.add_argument(
        "--local", action="store_true", help="do not connect to Ray (metadata file opened here)"
    )
    args = parser.parse_args(argv)

    def call() -> Any:
        from qmlops.loop import LoopController, load_policy

        policy = load_policy(args.policy)  # refused before connecting anywhere
        if not args.local:
            from qmlops.ray_utils import init_ray

            init_ray()
        ctl = LoopController.open_replay(args.name, args.dataset, args.start, args.end, policy=policy)
        ctl.run()
        return ctl.status()

    return run_job(call)


if __name__ == "__main__":
    sys.exit(main())
