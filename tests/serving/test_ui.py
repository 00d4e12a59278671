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
    raise AssertionError(f"the page did not get there in {timeout} s (last error: {last!r}); "
                         f"screenshot in {tempfile.gettempdir()}/qmlops-ui-failure.png")  # fmt: skip


def _click(driver: Any, css: str) -> None:
    """Click what ``css`` finds, again if the view re-rendered between finding and clicking."""
    _until(driver, lambda: driver.find_element("css selector", css).click() or True)


def _open(driver: Any, served: Served, view: str) -> None:
    driver.execute_script("const v = document.getElementById('view'); if (v) v.dataset.loaded = '';")
    driver.get(f"{served.url}/ui#{view}")
    _until(driver, lambda: driver.execute_script("return document.getElementById('view').dataset.loaded")
           == view.split("/")[0])  # fmt: skip
    assert not driver.find_elements("id", "view-error"), driver.find_element("id", "view-error").text


def _texts(driver: Any, css: str) -> list[str]:
    return [e.text for e in driver.find_elements("css selector", css)]


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
    for step, loss in ((20, 0.9), (30, 0.85)):
        store.runs.log_metric(run_id, step, train_loss=loss, valid_loss=1.1 + step / 1000, valid_ic=0.02,
                              best_step=20, early_stop={"since_best": (step - 20) // 10, "patience": 3})  # fmt: skip
        _until(browser, lambda s=step: browser.find_element("id", "run-step").text == f"{s} / 50")
    assert "since_best 1" in browser.find_element("id", "run-early-stop").text
    assert browser.find_element("id", "run-best").text == "20"
    lines = browser.find_elements("css selector", "#chart-loss polyline")
    assert len(lines) == 2 and len(lines[0].get_attribute("points").split()) == 3  # 3 steps so far
    store.runs.finish(run_id, best_step=20, stop_reason="patience: valid_loss did not improve for 3")
    _until(browser, lambda: browser.find_element("id", "run-status").text == "finished")
    assert browser.find_element("id", "run-stop-reason").text.startswith("patience")
    assert browser.execute_script("return window.__sameDocument === true")  # pushed, not reloaded


def test_finished_run_links_its_training_report(served: Served, browser: Any) -> None:
    from qmlops.training import TrainConfig, train

    result = train(TrainConfig("lightgbm", dataset="sub", params={"num_boost_round": 40, "num_leaves": 7},
                               register_as="", report=True))  # fmt: skip
    _open(browser, served, f"training/{result.run_id}")
    link = _until(browser, lambda: browser.find_elements("id", "run-report"))[0]
    points = browser.find_element("css selector", "#chart-loss polyline").get_attribute("points").split()
    assert len(points) == len(get_store().runs.metrics(result.run_id))
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

    handles = start_resource_monitors(interval_s=1.0)
    try:
        nodes = store.monitoring.latest_samples()
        _until(browser, lambda: nodes or store.monitoring.latest_samples())
        _open(browser, served, "resources")
        shown = _until(browser, lambda: _texts(browser, "table.nodes tbody tr td:first-child"))
        assert set(shown) == {n[:12] for n in handles}
        assert "no GPU: NVML unavailable" in browser.find_element("css selector", "table.nodes").text
    finally:
        stop_resource_monitors()
    queued = store.monitoring.enqueue_job({"id": f"job-ui-{uuid.uuid4().hex[:6]}", "name": "ui-check",
                                           "entrypoint": "python -c pass", "num_cpus": 64, "num_gpus": 0,
                                           "memory": 0, "priority": 1})  # fmt: skip
    store.monitoring.update_job(queued["id"], state="cancelled", message="cancelled by the page test")
    _open(browser, served, "jobs")
    row = browser.find_element("css selector", "table.jobs").text
    assert queued["id"] in row and "cancelled" in row
