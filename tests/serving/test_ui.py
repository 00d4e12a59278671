"""The ``/ui`` web page: its JSON reads over HTTP, then the page itself in a real headless Chromium.

The browser is Debian's ``chromium`` driven by its ``chromedriver`` through Selenium. When they are missing the
fixture installs them with apt (as root); if that cannot work here the browser tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from qmlops.metadata import get_store

from ..monitoring.receivers import wait_for
from .conftest import Served

TOKEN = {"authorization": "Bearer s3cret-token"}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


# ---------------------------------------------------------------------------------------------- JSON reads
def test_page_files_and_reads_behind_it(served: Served) -> None:
    client = served.client
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/ui/app.js">' in page.text
    script = client.get("/ui/app.js")
    assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    assert "new WebSocket" in script.text
    assert "<polyline" not in script.text and "createElementNS" not in script.text  # no hand-drawn charts
    charts = client.get("/ui/uplot-1.6.32.min.js")
    assert charts.status_code == 200 and charts.text.startswith(
        "/*! https://github.com/leeoniya/uPlot (v1.6.32)"
    )
    assert "MIT License" in client.get("/ui/uplot-LICENSE.txt").text
    page_text = page.text
    for asset in ("/ui/uplot-1.6.32.min.js", "/ui/uplot-1.6.32.min.css", "/ui/charts.js"):
        assert asset in page_text  # served by the gateway itself: no CDN, works offline
    assert "http" not in page_text.replace("http-equiv", "")
    missing = client.get("/ui/secrets.txt")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "name"

    store = get_store()
    models = client.get("/v1/registry/models").json()["models"]
    alpha = next(m for m in models if m["name"] == "alpha")
    stored = {r.id: r.state for r in store.models.search([], limit=500) if r.name == "alpha"}
    assert {v["id"]: v["state"] for v in alpha["versions"]} == stored
    assert [t["to_state"] for t in alpha["history"]] == [t.to_state for t in store.models.history("alpha")]

    catalogue = client.get("/v1/catalogue").json()
    assert {"lightgbm", "linear", "gru"} <= {t["name"] for t in catalogue["types"]}
    assert "sub" in {d["name"] for d in catalogue["datasets"]}
    unknown = client.get("/v1/catalogue", params={"dataset": "no-such-dataset"})
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "dataset"

    runs = client.get("/v1/runs", params={"kind": "train"}).json()["runs"]
    assert {r["id"] for r in runs} >= {
        store.models.get(v["id"]).tags["run_id"] for v in served.versions.values()
    }
    one = client.get(f"/v1/runs/{runs[0]['id']}").json()
    assert one["run"]["id"] == runs[0]["id"]
    assert [m["step"] for m in one["metrics"]] == [m.step for m in store.runs.metrics(runs[0]["id"])]
    gone = client.get("/v1/runs/run-does-not-exist")
    assert gone.status_code == 404 and gone.json()["error"]["field"] == "run_id"
    untold = store.models.get(served.versions["alpha1"]["id"]).tags["run_id"]
    no_report = client.get(f"/v1/runs/{untold}/report")  # trained with report=False
    assert no_report.status_code == 404 and "no report" in no_report.json()["error"]["reason"]
    bad = client.get("/v1/runs", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "limit"

    rollouts = client.get("/v1/rollouts").json()
    assert {t["model"] for t in rollouts["routes"]} == {t["model"] for t in store.serving.list_tables()}
    assert len(rollouts["rollouts"]) == len(store.serving.list_rollouts(limit=20))
    for r in rollouts["rollouts"]:  # each rollout carries its own events (read for all rollouts at once)
        assert [(e["seq"], e["kind"]) for e in r["events"]] == [
            (e["seq"], e["kind"]) for e in store.serving.events(r["id"])
        ]
    assert client.get("/v1/jobs").json()["jobs"] == store.monitoring.jobs(limit=100)

    for path, params, field in (
        ("/v1/ui/traffic", {"window_s": 0}, "window_s"),
        ("/v1/ui/traffic", {"window_s": 600, "bucket_s": 0.5}, "bucket_s"),
        ("/v1/ui/traffic", {"window_s": 86400, "bucket_s": 1}, "bucket_s"),  # too many buckets
        ("/v1/ui/traffic", {"bucket_s": "soon"}, "bucket_s"),
        ("/v1/ui/drift", {"top": 0}, "top"),
        ("/v1/ui/infrastructure", {"window_s": -1}, "window_s"),
        ("/v1/experiments/ex-nope/assignment", {}, "experiment"),
    ):
        answer = client.get(path, params=params)
        assert 400 <= answer.status_code < 500 and answer.json()["error"]["field"] == field, (
            path,
            answer.text,
        )


def test_run_websocket_streams_steps_until_the_run_ends(served: Served) -> None:
    from websockets.sync.client import connect

    store = get_store()
    run_id = f"run-ws-{uuid.uuid4().hex[:8]}"
    store.runs.start(run_id, "train", model_type="lightgbm", total_steps=30)
    store.runs.log_metric(run_id, 10, train_loss=1.0, valid_loss=1.1, valid_ic=0.01, best_step=10)
    with connect(served.url.replace("http", "ws") + f"/v1/ws/runs/{run_id}", open_timeout=30) as ws:
        first = _json(ws.recv(timeout=30))
        assert first["run"]["status"] == "running" and [m["step"] for m in first["metrics"]] == [10]
        store.runs.log_metric(run_id, 20, train_loss=0.9, valid_loss=1.05, valid_ic=0.02, best_step=20,
                              early_stop={"since_best": 0, "patience": 5})  # fmt: skip
        second = _json(ws.recv(timeout=30))
        assert [m["step"] for m in second["metrics"]] == [20]  # only the new step
        assert second["metrics"][0]["early_stop"] == {"since_best": 0, "patience": 5}
        store.runs.finish(run_id, best_step=20, stop_reason="patience: no improvement for 5")
        last = _json(ws.recv(timeout=30))
        assert last["run"]["status"] == "finished" and last["run"]["stop_reason"].startswith("patience")
    with connect(served.url.replace("http", "ws") + "/v1/ws/runs/run-nope", open_timeout=30) as ws:
        assert _json(ws.recv(timeout=30))["error"]["field"] == "run_id"


def _json(text: Any) -> dict[str, Any]:
    import json

    return dict(json.loads(text))


# ------------------------------------------------------------------------------------------------ browser
def _browser_available() -> str | None:
    """None when chromium and chromedriver are there (installing them with apt if we may), else why not."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return None
    if os.environ.get("QMLOPS_NO_APT") == "1":
        return "chromium/chromedriver missing and QMLOPS_NO_APT=1 forbids installing them"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "chromium/chromedriver missing and apt-get as root is not available to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"installing chromium failed ({' '.join(cmd)}): {done.stderr.strip()[-300:]}"
    return (
        None if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER) else "apt did not install chromium"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _browser_available()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="qmlops-chromium-")
    # no sandbox as root; no background networking: this machine's closed network refuses those connections
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,1600"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for failures
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _until(driver: Any, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` (ignoring errors from half-rendered pages) until it returns something truthy."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # an element replaced between find and read: try again
            last = exc
        time.sleep(0.2)
    driver.save_screenshot(os.path.join(tempfile.gettempdir(), "qmlops-ui-failure.png"))
    console = [e["message"] for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]
    raise AssertionError(f"the page did not get there in {timeout} s (last error: {last!r}); "
                         f"screenshot in {tempfile.gettempdir()}/qmlops-ui-failure.png; console: {console[-5:]}")  # fmt: skip


def _click(driver: Any, css: str) -> None:
    """Click what ``css`` finds, again if the view re-rendered between finding and clicking."""
    _until(driver, lambda: driver.find_element("css selector", css).click() or True)


def _open(driver: Any, served: Served, view: str, expect: str | None = None) -> None:
    """Go to ``/ui#view`` and wait until the page says that view (``expect`` when it goes by another name) loaded."""
    driver.execute_script("const v = document.getElementById('view'); if (v) v.dataset.loaded = '';")
    driver.get(f"{served.url}/ui#{view}")
    name = expect or view.split("/")[0]
    _until(
        driver, lambda: driver.execute_script("return document.getElementById('view').dataset.loaded") == name
    )
    assert not driver.find_elements("id", "view-error"), driver.find_element("id", "view-error").text


def _texts(driver: Any, css: str) -> list[str]:
    return [e.text for e in driver.find_elements("css selector", css)]


def _chart(driver: Any, chart_id: str) -> dict[str, Any] | None:
    """What the page's chart ``chart_id`` holds (series labels, lengths, numeric points, axis labels, marks)."""
    return driver.execute_script(
        "return window.Charts ? window.Charts.describe(arguments[0]) : null", chart_id
    )


def _screenshot(driver: Any, name: str) -> str:
    """A PNG of the whole page as a test artifact (``QMLOPS_TEST_ARTIFACTS``, else a temp directory)."""
    folder = os.environ.get("QMLOPS_TEST_ARTIFACTS") or os.path.join(
        tempfile.gettempdir(), "qmlops-ui-screens"
    )
    os.makedirs(folder, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(max(900, height + 120), 6000))
    path = os.path.join(folder, f"ui-{name}.png")
    driver.save_screenshot(path)
    driver.set_window_size(width, 1600)
    return path


def test_models_catalogue_and_recommender_in_the_browser(served: Served, browser: Any) -> None:
    from qmlops.features import load_features
    from qmlops.tuning import meta_features, recommend

    store = get_store()
    _open(browser, served, "models")
    heads = _until(browser, lambda: _texts(browser, "#view section h2"))
    assert set(store.models.names()) <= set(heads)
    alpha = browser.find_elements("css selector", "#view section")[heads.index("alpha")]
    shown = {r.get_attribute("data-key"): r.find_elements("css selector", "td")[1].text
             for r in alpha.find_elements("css selector", "tbody tr[data-key]")}  # fmt: skip
    assert shown == {r.id: r.state for r in store.models.search([], limit=500) if r.name == "alpha"}
    _screenshot(browser, "models")

    _open(browser, served, "catalogue")
    names = _texts(browser, "table.catalogue tbody tr td:first-child")
    assert "lightgbm" in names and "linear" in names
    from selenium.webdriver.support.ui import Select

    sub = store.datasets.resolve("sub")
    Select(browser.find_element("id", "dataset")).select_by_value(sub.id)
    browser.find_element("id", "recommend").click()
    ranked = _until(browser, lambda: _texts(browser, "table.ranking tbody tr td:nth-child(2)"), timeout=120)
    expected = [r.model_type for r in recommend(meta_features(load_features("sub", "alpha158")))]
    assert ranked == expected
    _screenshot(browser, "catalogue")


def test_live_training_curves_in_the_browser(served: Served, browser: Any) -> None:
    """A run that is still going: each new step appears without a reload; the finished run shows its reason."""
    store = get_store()
    run_id = f"run-ui-{uuid.uuid4().hex[:8]}"
    store.runs.start(run_id, "train", model_type="lightgbm", total_steps=50)
    store.runs.log_metric(run_id, 10, train_loss=1.0, valid_loss=1.2, valid_ic=0.01, best_step=10,
                          early_stop={"since_best": 0, "patience": 3})  # fmt: skip
    _open(browser, served, f"training/{run_id}")
    browser.execute_script("window.__sameDocument = true")
    _until(browser, lambda: browser.find_element("id", "run-step").text == "10 / 50")
    assert browser.find_element("id", "run-status").text == "running"
    assert browser.find_element("id", "run-progress").text == "20% · training: step 10 of 50, best 10"
    for step, loss in ((20, 0.9), (30, 0.85)):
        store.runs.log_metric(run_id, step, train_loss=loss, valid_loss=1.1 + step / 1000, valid_ic=0.02,
                              best_step=20, early_stop={"since_best": (step - 20) // 10, "patience": 3})  # fmt: skip
        _until(browser, lambda s=step: browser.find_element("id", "run-step").text == f"{s} / 50")
    assert "since_best 1" in browser.find_element("id", "run-early-stop").text
    assert browser.find_element("id", "run-patience-left").text == "2"
    store.runs.log_metric(run_id, 40, train_loss=0.8, valid_loss=1.2, valid_ic=0.0, best_step=20,
                          early_stop={"since_best": 3, "patience": 3})  # fmt: skip
    _until(browser, lambda: "finishing: evaluating" in browser.find_element("id", "run-progress").text)
    assert browser.find_element("id", "run-patience-left").text == "0"
    assert browser.find_element("id", "run-best").text == "20"
    loss = _until(
        browser, lambda: (_chart(browser, "chart-loss") or {}).get("x") == 4 and _chart(browser, "chart-loss")
    )  # 4 steps so far, each drawn into the same chart as it arrived
    assert [(s["label"], s["points"]) for s in loss["series"]] == [("train loss", 4), ("valid loss", 4)]
    assert loss["marks"][0]["x"] == 20 and all(loss["axes"])  # best step marked, both axes labelled
    _screenshot(browser, "training-live")
    _open(browser, served, "models")  # the models view lists the running training inline with its progress
    running = browser.find_element("css selector", f"table.running tr[data-key='{run_id}']").text
    assert "80% · finishing" in running and "lightgbm" in running
    _open(browser, served, f"training/{run_id}")
    _until(browser, lambda: browser.find_element("id", "run-step").text == "40 / 50")
    store.runs.finish(run_id, best_step=20, stop_reason="patience: valid_loss did not improve for 3")
    _until(browser, lambda: browser.find_element("id", "run-status").text == "finished")
    assert browser.find_element("id", "run-stop-reason").text.startswith("patience")
    assert browser.execute_script("return window.__sameDocument === true")  # pushed, not reloaded


def test_finished_run_links_its_training_report(served: Served, browser: Any) -> None:
    from qmlops.training import TrainConfig, train

    result = train(TrainConfig("lightgbm", dataset="sub", params={"num_boost_round": 40, "num_leaves": 7},
                               register_as="", report=True))  # fmt: skip
    stored = get_store().runs.metrics(result.run_id)
    _open(browser, served, f"training/{result.run_id}")
    # drawn from the stored steps at once (no stream for a finished run): it is there when the view has loaded
    loss = _chart(browser, "chart-loss")
    assert (
        loss
        and loss["x"] == len(stored)
        and [s["points"] for s in loss["series"]]
        == [sum(m.train_loss is not None for m in stored), sum(m.valid_loss is not None for m in stored)]
    )
    ic = _chart(browser, "chart-ic")
    assert ic["series"][0]["length"] == len(stored)
    assert ic["series"][0]["points"] == sum(m.valid_ic is not None for m in stored)
    assert browser.find_element("id", "run-status").text == "finished"
    assert browser.find_element("id", "run-progress").text.startswith("100%")
    link = browser.find_elements("id", "run-report")[0]
    _screenshot(browser, "training-finished")
    report = httpx.get(link.get_attribute("href"), timeout=30)
    assert report.status_code == 200 and result.run_id in report.text and "<html" in report.text.lower()


def test_rollouts_drift_experiments_in_the_browser(served: Served, browser: Any) -> None:
    from qmlops.experiments import ExperimentService
    from qmlops.features import load_features

    store = get_store()
    _open(browser, served, "rollouts")
    tables = store.serving.list_tables()
    weights = _texts(browser, "table.weights tbody tr td:nth-child(3)")
    assert sorted(float(w) for w in weights) == sorted(
        float(e["weight"]) for t in tables for e in t["entries"]
    )

    # a drift report from real traffic: 250 rows at alpha v1, then the replica's tests run now (drift on, in
    # case an earlier test turned it off; the options are put back afterwards)
    from qmlops.serving import ServeService

    from .test_monitoring import _configure

    saved = ServeService().options().monitoring
    _configure(drift={"min_rows": 50})
    try:
        rows = load_features("sub", "alpha158", start=served.test_day)["feature"].dropna().head(250)
        plain = [{k: float(v) for k, v in r.items()} for _, r in rows.iterrows()]
        for i in range(0, len(plain), 50):  # 50 rows a request keeps the body under the 1 MB limit
            batch = {"model": "alpha", "version": 1, "rows": plain[i : i + 50]}
            assert served.client.post("/v1/predict", json=batch).status_code == 200
        evaluate = lambda: served.client.post("/v1/admin/drift/evaluate", headers=TOKEN).json()["reports"]  # noqa: E731
        assert wait_for(evaluate, 30, 1.0)
    finally:
        _configure(**saved)
    latest = store.monitoring.drift(limit=1, full=True)[0]
    _open(browser, served, "drift")
    features = _texts(browser, "table.features tbody tr td:first-child")
    assert sorted(features) == sorted(f["feature"] for f in latest["report"]["features"])

    exp = ExperimentService().create(f"ui-{uuid.uuid4().hex[:6]}", "alpha",
                                     [{"name": "control", "version": 1}, {"name": "treatment", "version": 2}],
                                     metrics=[{"name": "conversion", "kind": "proportion", "event": "trade"}],
                                     layer=f"ui-{uuid.uuid4().hex[:6]}")  # fmt: skip
    _open(browser, served, "experiments")
    row = _until(
        browser, lambda: browser.find_element("css selector", f"table.experiments tr[data-key='{exp['id']}']")
    )
    row.click()
    _until(browser, lambda: any(exp["name"] in h for h in _texts(browser, "#view section h2")))
    assert "nothing to analyse yet" in browser.find_element("id", "view").text  # a draft has no exposures


def test_alerts_arrive_live_and_are_acknowledged_from_the_page(served: Served, browser: Any) -> None:
    from qmlops.monitoring._resources import start_resource_monitors, stop_resource_monitors

    store = get_store()
    _open(browser, served, "alerts")
    browser.execute_script("window.__sameDocument = true")
    subject = f"ui-check-{uuid.uuid4().hex[:6]}"
    alert, _ = store.monitoring.fire_alert(rule=None, severity="warning", source="ui-test", subject=subject,
                                           message=f"{subject} fired for the page test", details={}, cooldown_s=0.0)  # fmt: skip
    _until(browser, lambda: subject in browser.find_element("css selector", "table.alerts").text)
    assert browser.execute_script("return window.__sameDocument === true")  # it came over the WebSocket
    button = f"table.alerts tr[data-key='{alert['id']}'] button"
    _click(browser, button)  # no token yet: refused, nothing changes
    _until(browser, lambda: "ack failed: 401" in browser.find_element("id", "status").text
           or "ack failed: 403" in browser.find_element("id", "status").text)  # fmt: skip
    assert store.monitoring.get_alert(alert["id"])["acknowledged_by"] is None
    token = browser.find_element("id", "token")
    token.send_keys("s3cret-token")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
    _click(browser, button)
    _until(browser, lambda: store.monitoring.get_alert(alert["id"])["acknowledged_by"] == "ui")
    _until(browser, lambda: "ui" in browser.find_element(
        "css selector", f"table.alerts tr[data-key='{alert['id']}']").text.split())  # fmt: skip
    _screenshot(browser, "alerts")

    handles = start_resource_monitors(interval_s=1.0)
    try:
        nodes = store.monitoring.latest_samples()
        _until(browser, lambda: nodes or store.monitoring.latest_samples())
        _open(browser, served, "resources", expect="infrastructure")  # the old name leads to the new view
        shown = _until(browser, lambda: _texts(browser, "table.nodes tbody tr td:first-child"))
        assert set(shown) == {n[:12] for n in handles}
        assert "no GPU: NVML unavailable" in browser.find_element("css selector", "table.nodes").text
    finally:
        stop_resource_monitors()
    queued = store.monitoring.enqueue_job({"id": f"job-ui-{uuid.uuid4().hex[:6]}", "name": "ui-check",
                                           "entrypoint": "python -c pass", "num_cpus": 64, "num_gpus": 0,
                                           "memory": 0, "priority": 1})  # fmt: skip
    store.monitoring.update_job(queued["id"], state="cancelled", message="cancelled by the page test")
    _open(browser, served, "infrastructure")
    row = browser.find_element("css selector", "table.jobs").text
    assert queued["id"] in row and "cancelled" in row


# ------------------------------------------------------------------------------- every view's charts, real data
RANGE = (900.0, 10.0)  # the Serving view's default traffic window and bucket


@pytest.fixture(scope="module")
def pipeline(served: Served) -> Iterator[dict[str, Any]]:
    """A short run of the whole platform on the served app: a blue-green rollout (with its performance test)
    and an operator's rollback, three rounds of predictions with realised returns as feedback and a drift
    evaluation after each, an A/B experiment with exposures and business events, resource samples, and jobs
    moving through the admission queue."""
    import numpy as np

    from qmlops.deploy import RolloutController
    from qmlops.experiments import ExperimentService
    from qmlops.features import load_features
    from qmlops.monitoring._resources import start_resource_monitors, stop_resource_monitors
    from qmlops.serving import ServeService

    from .test_monitoring import _configure

    store = get_store()
    saved = ServeService().options().monitoring
    _configure(log={"flush_interval_s": 0.5}, drift={"min_rows": 50, "every_rows": 10**9, "every_s": 3600})
    monitors = start_resource_monitors(interval_s=1.0)
    experiment = None
    try:
        controller = RolloutController()
        rollout = controller.start("alpha", 2, "blue_green", {"perf_requests": 40, "perf_concurrency": 4})
        assert controller.run(rollout["id"], timeout=300)["state"] == "succeeded"
        controller.rollback(rollout["id"])
        ServeService().deploy_model("alpha", 1)

        frame = load_features("sub", "alpha158", start=served.test_day).dropna()
        features, labels = frame["feature"], frame["label"].iloc[:, 0]
        for day in range(3):  # rounds a bucket apart: each version gets several points on the time axis
            part = slice(day * 60, day * 60 + 60)
            rows = [{k: float(v) for k, v in r.items()} for _, r in features.iloc[part].iterrows()]
            feedback = []
            for i, (row, label) in enumerate(zip(rows, labels.iloc[part], strict=True)):
                body = {"model": "alpha" if i % 3 else "lin", "features": row}
                answer = served.client.post("/v1/predict", json=body)
                assert answer.status_code == 200, answer.text
                feedback.append({"request_id": answer.json()["request_id"], "value": float(label)})
            assert served.client.post("/v1/feedback", json={"items": feedback}).status_code == 202
            assert served.client.post("/v1/admin/drift/evaluate", headers=TOKEN).json()["reports"]
            time.sleep(RANGE[1] + 0.5)

        service = ExperimentService()
        experiment = service.start(service.create(
            f"ui-ab-{uuid.uuid4().hex[:6]}", "alpha", [{"name": "control", "version": 1}, {"name": "treatment", "version": 2}],
            metrics=[{"name": "conversion", "kind": "proportion", "event": "trade"},
                     {"name": "pnl", "kind": "mean", "event": "pnl"}],
            layer=f"ui-{uuid.uuid4().hex[:6]}", traffic=1.0)["id"])  # fmt: skip
        row = [{k: float(v) for k, v in features.iloc[0].items()}][0]
        rng = np.random.default_rng(7)
        events = []
        for i in range(120):
            body = {"model": "alpha", "user_id": f"ab-{i}", "features": row}
            variant = served.client.post("/v1/predict", json=body).json()["variant"]
            if rng.random() < (0.6 if variant == "treatment" else 0.35):
                events.append(
                    {"experiment": experiment["id"], "user_id": f"ab-{i}", "event": "trade", "value": 1}
                )
            events.append({"experiment": experiment["id"], "user_id": f"ab-{i}", "event": "pnl",
                           "value": float(rng.normal(1.0 if variant == "treatment" else 0.8, 1.0))})  # fmt: skip
        assert served.client.post("/v1/events", json={"events": events}).status_code == 202
        assert wait_for(lambda: len(store.experiments.units(experiment["id"])) == 120, 30, 0.5)

        for n, (priority, outcome) in enumerate(((1, "succeeded"), (5, "failed"), (3, None))):
            job = store.monitoring.enqueue_job({"id": f"job-ui-{uuid.uuid4().hex[:6]}", "name": f"ui-job-{n}",
                                                "entrypoint": "python -c pass", "num_cpus": 1, "num_gpus": 0,
                                                "memory": 0, "priority": priority})  # fmt: skip
            if outcome:
                time.sleep(0.5)
                store.monitoring.update_job(job["id"], state="running", admitted_at="now")
                time.sleep(0.5)
                store.monitoring.update_job(job["id"], state=outcome, ended_at="now")
        assert wait_for(
            lambda: len(store.monitoring.samples(since_s=600, limit=100)) >= 3 * len(monitors), 30, 0.5
        )
    finally:
        stop_resource_monitors()
        _configure(**saved)
    yield {"rollout": rollout, "experiment": experiment, "nodes": sorted(monitors)}
    if experiment is not None:
        ExperimentService().stop(experiment["id"])


def test_serving_view_charts_traffic_accuracy_and_rollout_marks(served: Served, browser: Any,
                                                                pipeline: dict[str, Any]) -> None:  # fmt: skip
    from qmlops.ui import traffic_view

    _open(browser, served, "rollouts")
    stored = traffic_view(get_store(), window_s=RANGE[0], bucket_s=RANGE[1])
    for model in ("alpha", "lin"):
        versions = [v for v in stored["versions"] if v["model"] == model]
        rps = _until(browser, lambda m=model: _chart(browser, f"chart-rps-{m}"))
        assert rps["axes"] == ["time", "requests / s"]
        assert [s["label"] for s in rps["series"]] == [f"v{v['version']}" for v in versions]
        for shown, v in zip(rps["series"], versions, strict=True):  # every bucket of the log, none invented
            assert (
                shown["length"] == len(stored["t"])
                and shown["points"] == sum(x is not None for x in v["rps"]) > 0
            )
        latency = _chart(browser, f"chart-latency-{model}")
        assert [s["points"] for s in latency["series"]] == [
            n
            for v in versions
            for n in (sum(x is not None for x in v["p50_ms"]), sum(x is not None for x in v["p99_ms"]))
        ]
        errors = _chart(browser, f"chart-errors-{model}")
        assert errors["axes"][1] == "% of requests failed" and all(s["points"] > 0 for s in errors["series"])
        accuracy = _chart(browser, f"chart-ic-{model}")
        assert (
            sum(s["points"] for s in accuracy["series"])
            == sum(x is not None for v in versions for x in v["ic"])
            > 0
        )  # IC from the feedback we sent
    marks = _chart(browser, "chart-rps-alpha")["marks"]
    kinds = [m["kind"] for m in stored["markers"] if m["model"] == "alpha"]
    assert len(marks) == len(kinds) and "rolled_back" in kinds and "weights" in kinds
    assert {m["label"] for m in marks} >= {"step", "rollback"}
    assert _chart(browser, "chart-rps-lin")["marks"] == []  # no rollout of lin
    _screenshot(browser, "serving")
    # the 5 s refresh puts new data into the drawn charts (the same chart objects, still on the page)
    browser.execute_script(
        "Charts.all['chart-rps-alpha'].__seen = 1; document.getElementById('status').textContent = '';"
    )
    _until(browser, lambda: browser.find_element("id", "status").text.startswith("updated"), timeout=15)
    assert browser.execute_script(
        "const u = Charts.all['chart-rps-alpha']; return u.__seen === 1 && u.root.isConnected && u.data[0].length > 0"
    )


def test_drift_view_draws_the_heatmap_of_stored_reports(served: Served, browser: Any,
                                                         pipeline: dict[str, Any]) -> None:  # fmt: skip
    from qmlops.ui import heatmap

    store = get_store()
    latest = store.monitoring.drift(limit=1)[0]
    reports = store.monitoring.drift(model_name=latest["model_name"], model_version=latest["model_version"],
                                     limit=50, full=True)  # fmt: skip
    expected = heatmap(reports, 12)
    _open(browser, served, "drift")
    heat = _until(browser, lambda: _chart(browser, "chart-drift-heatmap"))
    assert len(reports) >= 3 and heat["x"] == len(reports)
    assert heat["rows"] == expected["features"] and len(heat["rows"]) == 12
    assert [s["points"] for s in heat["series"]] == [
        sum(v is not None for v in row) for row in expected["psi"]
    ]
    assert heat["threshold"] == 0.2 and heat["axes"] == ["report time", "feature"]
    share = _chart(browser, "chart-drift-share")
    assert share["series"][0]["points"] == len(reports)
    _screenshot(browser, "drift")
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "drift-score")).select_by_value("statistic")
    stat = _until(browser, lambda: (_chart(browser, "chart-drift-heatmap") or {}).get("threshold", 0) is None
                  and _chart(browser, "chart-drift-heatmap"))  # fmt: skip
    assert stat["rows"] == expected["features"]
    assert [s["points"] for s in stat["series"]] == [
        sum(v is not None for v in r) for r in expected["statistic"]
    ]
    browser.execute_script("sessionStorage.removeItem('qmlops-drift-score')")


def test_experiment_view_charts_lift_intervals_and_assignment(served: Served, browser: Any,
                                                               pipeline: dict[str, Any]) -> None:  # fmt: skip
    from collections import Counter

    exp = pipeline["experiment"]
    _open(browser, served, f"experiments/{exp['id']}")
    lift = _until(browser, lambda: _chart(browser, "chart-lift"))
    results = served.client.get(f"/v1/experiments/{exp['id']}/results").json()
    assert lift["categories"] == [f"{m['metric']} · {m['variant']}" for m in results["metrics"]]
    assert [s["points"] for s in lift["series"]] == [len(results["metrics"])] * 3  # lift, CI low, CI high
    assign = _chart(browser, "chart-assignment")
    units = Counter(u["variant"] for u in get_store().experiments.units(exp["id"]))
    finals = browser.execute_script(
        "const u = Charts.all['chart-assignment']; return u.series.slice(1).map((s, i) => [s.label, u.data[i + 1].at(-1)]);"
    )
    assert dict(finals) == dict(units) and sum(units.values()) == 120
    assert assign["axes"] == ["time", "units (cumulative)"]
    _screenshot(browser, "experiment")


def test_infrastructure_view_in_one_place(served: Served, browser: Any, pipeline: dict[str, Any]) -> None:
    store = get_store()
    _open(browser, served, "infrastructure")
    for node in pipeline["nodes"]:
        chart = _until(browser, lambda n=node: _chart(browser, f"chart-node-{n[:12]}"))
        labels = [s["label"] for s in chart["series"]]
        assert labels[:2] == ["CPU", "memory"] and chart["axes"] == ["time", "% used"]
        shown = chart["x"]
        in_db = len(store.monitoring.samples(node_id=node, since_s=3600, limit=10_000))
        assert (
            3 <= shown <= in_db and chart["series"][0]["points"] == shown
        )  # monitors stopped: no newer rows
    jobs = _chart(browser, "chart-jobs")
    assert [s["label"] for s in jobs["series"]] == ["queued", "running"] and jobs["x"] >= 5
    queue = _texts(browser, "table.queue tbody tr td:nth-child(3)")
    assert queue == sorted(queue, key=lambda p: -int(p))  # highest priority first
    assert "Gateway" in browser.find_element("css selector", "table.deployments").text
    assert "ModelServer" in browser.find_element("css selector", "table.deployments").text
    perf = _chart(browser, "chart-perf-p99")
    tested = {c["model_version"] for c in store.serving.checks(limit=500) if c["kind"] == "performance"}
    assert {s["label"] for s in perf["series"]} == tested and all(s["points"] > 0 for s in perf["series"])
    assert browser.find_element("id", "latest-perf").text
    _screenshot(browser, "infrastructure")


def test_store_text_is_shown_as_text_never_markup(served: Served, browser: Any) -> None:
    """A record another writer left in the store (the registry itself refuses such names) with markup and
    script in its name, tags and reason: the page shows the characters and runs nothing."""
    store = get_store()
    evil = '<img src=x onerror="window.__pwned=1">'
    name = f"<script>window.__pwned=2</script>{uuid.uuid4().hex[:4]}"
    record = store.models.insert(
        {"id": f"mv-{uuid.uuid4().hex[:16]}", "name": name, "model_type": "lightgbm", "flavor": "pickle",
         "signature": {"feature_names": []}, "description": evil, "artifact_sha256": "0" * 64,
         "artifact_uri": "file:///nonexistent", "artifact_bytes": 0},
        {"test_ic": 0.01}, {"note": evil, "<b>bold</b>": "<i>x</i>"}, actor=evil)  # fmt: skip
    fired, _ = store.monitoring.fire_alert(rule=None, severity="warning", source="ui-test", subject=evil,
                                           message=f"{evil} in an alert", details={}, cooldown_s=0.0)  # fmt: skip
    _open(browser, served, "models")
    heads = _until(
        browser, lambda: name in _texts(browser, "#view section h2") and _texts(browser, "#view section h2")
    )
    section_ = browser.find_elements("css selector", "#view section")[heads.index(name)]
    text = section_.text
    assert "note=" + evil in text and "<b>bold</b>=<i>x</i>" in text and evil in text  # actor, in the history
    assert not section_.find_elements("css selector", "img, script, b, i")
    _open(browser, served, "alerts")
    row = _until(
        browser, lambda: browser.find_element("css selector", f"table.alerts tr[data-key='{fired['id']}']")
    )
    assert f"{evil} in an alert" in row.text and not row.find_elements("css selector", "img")
    time.sleep(1.0)  # an onerror handler would have run by now
    assert browser.execute_script("return window.__pwned === undefined")
    assert record.name == name


@pytest.mark.parametrize("width", [1280, 480])
def test_every_view_fits_the_window(
    served: Served, browser: Any, pipeline: dict[str, Any], width: int
) -> None:
    """No view is wider than the window (wide tables scroll inside their box); charts take the width they get."""
    browser.set_window_size(width, 1600)
    try:
        for view in ("models", "training", "rollouts", "experiments/" + pipeline["experiment"]["id"], "drift",
                     "alerts", "infrastructure"):  # fmt: skip
            _open(browser, served, view)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (view, width, overflow)
            for chart_id in browser.execute_script("return Object.keys(Charts.all)"):
                drawn = _chart(browser, chart_id)
                assert drawn["width"] <= width, (view, chart_id, drawn["width"])
                if any(s["points"] for s in drawn["series"]):  # numbers to show: the canvas shows something
                    assert drawn["inked"] > 0 and all(drawn["axes"]), (view, chart_id, drawn)
        _open(browser, served, "alerts")
        button = browser.find_elements("css selector", "table.alerts button")
        if button:  # the acknowledge column is reachable: inside the table's own scroll box
            box = button[0].find_element("xpath", "ancestor::div[contains(@class, 'scroll')]")
            assert box.get_attribute("class") == "scroll"
        if width == 480:
            _screenshot(browser, "narrow-alerts")
    finally:
        browser.set_window_size(1400, 1600)
