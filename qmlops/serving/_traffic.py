"""Background clients posting single-row predictions at the gateway: load for rollouts, drills, demos, tests.

Each thread posts ``{"model", "user_id", "features"}`` with a random user out of ``users`` and a random row of
``rows``; answers are counted per HTTP status (``-1`` for a transport error) and per model version.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

__all__ = ["Traffic"]


class Traffic:
    def __init__(self, url: str, model: str, rows: list[dict[str, float]], *, threads: int = 3,
                 users: int = 1_000_000, keep_answers: bool = False) -> None:  # fmt: skip
        self.url, self.model, self.rows, self.users = url, model, rows, users
        self.keep_answers = keep_answers
        self.status: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.answers: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    @property
    def sent(self) -> int:
        return sum(self.status.values())

    def _run(self, seed: int) -> None:
        import httpx

        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=60.0) as client:
            while not self._stop.is_set():
                body = {"model": self.model, "user_id": f"u{rng.randrange(self.users)}",
                        "features": self.rows[rng.randrange(len(self.rows))]}  # fmt: skip
                try:
                    r = client.post("/v1/predict", json=body)
                except httpx.HTTPError:
                    self.status[-1] += 1
                    continue
                self.status[r.status_code] += 1
                if r.status_code == 200:
                    answer = r.json()
                    self.versions[answer["model_version"]] += 1
                    if self.keep_answers:
                        self.answers.append(answer)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
