"""The MLflow UI in a real browser: headless Chromium, driven by Selenium, against the test's MLflow server
(basic auth, the ``mlflow_server`` fixture) shows a study's experiment, its trial runs and a chart of their
validation error; a browser without credentials sees none of it.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``);
Selenium never downloads a driver here. Screenshots go to ``test-artifacts/mlflow-ui/`` under the repository
root (CI keeps them); on a failure the page's screenshot and HTML go there too.

The study is logged by the study's own tracker (:class:`study.tracking.StudyTracker`: the experiment, the
parent run, one nested run per trial with its params, evaluations, status and artifacts) with made-up
results, instead of trained: a real tiny study takes minutes on two cores, and the browser only needs what
MLflow stores. A real study logging to the server is ``test_mlflow_server.py``'s subject.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, MlflowServer

pytestmark = pytest.mark.deploy

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = REPO / "test-artifacts" / "mlflow-ui"
STUDY = "ui-browser-study"
METRIC = "val_error"
LOAD_S = 90  # the UI is a React app: its first load takes ~10 s on 2 busy cores, more under load
ML_WORKFLOW = "workflowType=machine_learning"  # MLflow 3 opens experiments in its GenAI view otherwise


@dataclass(frozen=True)
class Trial:
    run_id: str
    name: str
    val_errors: dict[int, float]  # step -> value


@dataclass(frozen=True)
class LoggedStudy:
    experiment_id: str
    parent_run_id: str
    trials: list[Trial]


@pytest.fixture(scope="module")
def logged_study(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> LoggedStudy:
    """Two search trials of a resnet20 study, as the study's tracker logs them, on the server as the admin."""
    from study.tracking import STATUS_COMPLETED, StudyTracker, evaluation_values

    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_server.username)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server.password)
        tracker = StudyTracker(mlflow_server.url, STUDY, STUDY)
        trials = []
        for index, (lr, weight_decay, errors) in enumerate([(0.1, 1e-4, (71.5, 58.25)), (0.35, 3e-4, (80.0, 66.5))]):
            name = f"resnet20-A lr={lr:.3g} wd={weight_decay:.2g}"
            params = {"arch": "resnet20", "depth": 20, "shortcut": "A", "residual": True, "lr": lr,
                      "weight_decay": weight_decay, "seed": 0, "group": "resnet20-A", "phase": "search",
                      "iterations": 100, "batch_size": 64}
            run_id = tracker.trial_run(f"trial{index:04d}", name, params, "search")
            result: dict[str, Any] = {}
            for step, val_error in zip((50, 100), errors):
                result = {"iteration": step, "lr": lr, "train_loss": 2.0 - step / 100, "train_error": val_error - 5,
                          "val_loss": 2.1 - step / 100, "val_error": val_error, "test_loss": 2.1 - step / 100,
                          "test_error": val_error + 1}
                tracker.log_metrics(run_id, evaluation_values(result), int(result["iteration"]))
            tracker.finish_trial(run_id, STATUS_COMPLETED, result)
            trials.append(Trial(run_id, name, dict(zip((50, 100), errors))))
        _publish_report(tracker, tmp_path_factory.mktemp("report"))
        tracker.close()
    print(f"study {STUDY} logged in {time.monotonic() - started:.1f} s")
    return LoggedStudy(tracker.experiment_id, tracker.parent_run_id, trials)


ANSWER = "At depth 20 the study's answer is written here in words."
REPORT_FIGURE = "error_vs_depth.png"


def _publish_report(tracker: Any, folder: Path) -> None:
    """The report of the made-up study, published on its run as the study does (study.publish)."""
    from study.report import GroupResult, report_markdown, write_report

    results = [GroupResult(group="resnet20-A", arch="resnet20", depth=20, residual=True, shortcut="A", params=272474,
                           lr=0.1, weight_decay=1e-4, val_error=58.25, trials=2, stopped_early=0)]
    shown = write_report(results, folder, STUDY, answer=[ANSWER])
    description = report_markdown(results, STUDY, answer=[ANSWER], figures=shown,
                                  link=lambda path: tracker.artifact_url(f"report/{path}"))
    tracker.publish_study({"train.iterations": 100}, {"resnet20-A/val_error": 58.25}, description, folder)


def _chrome_options(**capabilities: Any) -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    for key, value in capabilities.items():
        options.set_capability(key, value)
    return options


@pytest.fixture(scope="module")
def chrome() -> Iterator[Callable[..., Any]]:
    """Starts headless Chromium (each call a fresh browser, quit at the end of the module); fails, saying
    what to install, when Chromium, its driver or Selenium is missing."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: the MLflow UI test needs Debian's Chromium and its driver "
                    "(apt-get install chromium chromium-driver)", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]'", pytrace=False)
    drivers = []

    def start(**capabilities: Any) -> Any:
        started = time.monotonic()
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=_chrome_options(**capabilities))
        drivers.append(driver)
        driver.set_page_load_timeout(LOAD_S)
        print(f"\n{driver.capabilities.get('browserVersion', 'chromium')} up in {time.monotonic() - started:.1f} s")
        return driver

    yield start
    for driver in drivers:
        driver.quit()


class Page:
    """One browser tab on the UI: explicit waits, and screenshots under ``test-artifacts/mlflow-ui/``; a wait
    that times out saves the page (screenshot and HTML) before failing."""

    def __init__(self, driver: Any, name: str) -> None:
        self.driver = driver
        self.name = name
        SHOTS.mkdir(parents=True, exist_ok=True)

    def wait(self, what: str, condition: Callable[[Any], Any], timeout: float = LOAD_S) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        started = time.monotonic()
        try:
            found = WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(condition)
        except TimeoutException:
            found = None
        if found is None:
            saved = self.save_failure(what)
            pytest.fail(f"{self.name}: no {what} within {timeout:.0f} s at {self.driver.current_url}; "
                        f"the page is saved as {saved} (and .html)", pytrace=False)
        print(f"{self.name}: {what} after {time.monotonic() - started:.1f} s")
        return found

    def visible(self, what: str, by: str, selector: str, timeout: float = LOAD_S) -> Any:
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait(what, ec.visibility_of_element_located((by, selector)), timeout)

    def shot(self, name: str) -> Path:
        path = SHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    def save_failure(self, what: str) -> Path:
        stem = SHOTS / f"failed-{self.name}-{''.join(c if c.isalnum() else '-' for c in what)[:60]}"
        try:
            self.driver.save_screenshot(str(stem.with_suffix(".png")))
            stem.with_suffix(".html").write_text(self.driver.page_source)
        except Exception as error:  # the browser itself may be what failed
            print(f"could not save the page: {error}")
        return stem.with_suffix(".png")


def _text_xpath(text: str) -> str:
    return f"//*[normalize-space(text())='{text}']"


def _documents(driver: Any) -> list[tuple[str, int]]:
    """(url, HTTP status) of each document the browser received, from Chrome's performance log."""
    documents = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived" and message["params"]["type"] == "Document":
            response = message["params"]["response"]
            documents.append((response["url"], int(response["status"])))
    return documents


def test_without_credentials_the_browser_sees_no_experiment(chrome: Callable[..., Any], mlflow_server: MlflowServer,
                                                            logged_study: LoggedStudy) -> None:
    """No credentials, then a wrong password: the server answers the page itself with 401 (headless Chromium
    shows an empty page where a desktop one would ask for a login) and nothing of the study reaches the tab."""
    driver = chrome(**{"goog:loggingPrefs": {"performance": "ALL"}})
    page = Page(driver, "unauthenticated")
    experiment = f"{mlflow_server.url}/#/experiments/{logged_study.experiment_id}/runs"
    wrong = base64.b64encode(f"{mlflow_server.username}:not-{mlflow_server.password}".encode()).decode()
    for case, headers in (("no credentials", {}), ("wrong password", {"Authorization": f"Basic {wrong}"})):
        driver.get("about:blank")  # a new document each time: the UI's routes differ only after the '#'
        driver.get_log("performance")  # drop what came before
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})
        driver.get(experiment)
        documents = page.wait(f"answer to the page ({case})", lambda d: _documents(d) or False, timeout=30)
        time.sleep(2)  # what the UI would need to start rendering, if it were served
        assert documents[0] == (f"{mlflow_server.url}/", 401), (case, documents)
        source = driver.page_source
        assert STUDY not in source and "mlflow" not in driver.title.lower(), (case, source[:2000])
        assert all(trial.run_id not in source for trial in logged_study.trials), case
    page.shot("unauthenticated")


def test_the_ui_shows_the_study_its_trials_and_a_metric_chart(chrome: Callable[..., Any], mlflow_server: MlflowServer,
                                                               logged_study: LoggedStudy) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver = chrome()
    # Basic auth without a dialog: the tab sends the header with every request it makes (page and API calls).
    token = base64.b64encode(f"{mlflow_server.username}:{mlflow_server.password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    page = Page(driver, "ui")
    started = time.monotonic()

    # The experiments list, then the study's experiment by its name, as a user would.
    driver.get(f"{mlflow_server.url}/#/experiments")
    link = (By.XPATH, f"//a[contains(@href, '/experiments/{logged_study.experiment_id}')][normalize-space()='{STUDY}']")
    page.wait(f"link to experiment {STUDY}", ec.element_to_be_clickable(link))
    print(f"experiments list after {time.monotonic() - started:.1f} s")
    _model_training_view(page)
    page.wait(f"link to experiment {STUDY}", ec.element_to_be_clickable(link)).click()
    page.wait("the experiment's page", lambda d: f"/experiments/{logged_study.experiment_id}" in d.current_url)
    if "/runs" not in driver.current_url.split("#", 1)[-1]:  # a view other than the runs table: go to it
        driver.get(f"{mlflow_server.url}/#/experiments/{logged_study.experiment_id}/runs?{ML_WORKFLOW}")
    page.visible("experiment name", By.XPATH, _text_xpath(STUDY))
    _close_assistant(page)

    # The runs table: the study's run, expanded to show its nested trial runs.
    parent_row = f"div[role='row'][row-id='{logged_study.parent_run_id}']"
    page.visible("the study's run", By.CSS_SELECTOR, f"{parent_row} a[href$='/runs/{logged_study.parent_run_id}']")
    first = logged_study.trials[0]
    if not driver.find_elements(By.CSS_SELECTOR, f"a[href$='/runs/{first.run_id}']"):
        expand = page.wait("expand button of the study's run", ec.element_to_be_clickable(
            (By.CSS_SELECTOR, f"{parent_row} [col-id*='Run Name'] button")))
        expand.click()
    for trial in logged_study.trials:
        link = page.visible(f"trial run {trial.name}", By.CSS_SELECTOR, f"a[href$='/runs/{trial.run_id}']")
        assert link.text.strip() == trial.name
    assert page.driver.find_element(By.XPATH, _text_xpath(STUDY)).is_displayed()
    _widen_run_names(page)
    page.shot("experiment")
    print(f"experiment page with its trials after {time.monotonic() - started:.1f} s")

    # One trial's run: its model-metrics tab plots val_error at the steps the study logged.
    driver.find_element(By.CSS_SELECTOR, f"a[href$='/runs/{first.run_id}']").click()
    page.visible("run page title", By.XPATH, _text_xpath(first.name))
    page.wait("model metrics tab", ec.element_to_be_clickable(
        (By.XPATH, "//*[@role='tab'][normalize-space()='Model metrics']"))).click()
    search = page.visible("chart search box", By.CSS_SELECTOR, "input[placeholder*='Search metric charts']")
    search.send_keys(METRIC)
    card = f"//*[@data-testid='experiment-view-compare-runs-card'][.//h4[@title='{METRIC}']]"
    page.visible(f"{METRIC} chart card", By.XPATH, card)
    page.visible(f"{METRIC} plotted line", By.XPATH, f"{card}//*[local-name()='svg' and contains(@class, 'main-svg')]"
                                                    "//*[local-name()='path' and contains(@class, 'js-line')]")
    plotted = driver.execute_script(
        "const plot = arguments[0].querySelector('.js-plotly-plot');"
        "return plot && plot.data ? plot.data.map(t => ({x: Array.from(t.x || []), y: Array.from(t.y || [])})) : null;",
        driver.find_element(By.XPATH, card))
    assert plotted, "the chart has no plotly data"
    points = {(float(x), float(y)) for trace in plotted for x, y in zip(trace["x"], trace["y"])}
    assert {(float(step), value) for step, value in first.val_errors.items()} <= points, plotted
    # Other charts may come after the filtered one; bring the val_error chart into view for the screenshot.
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", driver.find_element(By.XPATH, card))
    time.sleep(0.5)
    page.shot(f"{METRIC}-chart")
    print(f"the whole walk took {time.monotonic() - started:.1f} s")


def _close_assistant(page: Page) -> None:
    """MLflow 3's assistant panel takes a quarter of the window: close it if it is there (best effort)."""
    from selenium.webdriver.common.by import By

    for button in page.driver.find_elements(By.CSS_SELECTOR, "[data-component-id='mlflow.assistant.chat_panel.close']"):
        if button.is_displayed():
            button.click()
            return


def _model_training_view(page: Page) -> None:
    """MLflow 3 shows experiments in its GenAI view unless told otherwise: pick "Model training" in the
    sidebar as a user would (the browser keeps the choice for the pages that follow); nothing to do where
    there is no such switch."""
    from selenium.webdriver.common.by import By

    for switch in page.driver.find_elements(By.XPATH, "//*[@role='button'][normalize-space()='Model training']"):
        if switch.is_displayed():
            switch.click()
            return


def _widen_run_names(page: Page) -> None:
    """Drag the Run Name column wider so the screenshot shows the trials' names whole (best effort)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    try:
        handle = page.driver.find_element(By.CSS_SELECTOR, ".ag-header-cell[col-id*='Run Name'] .ag-header-cell-resize")
        ActionChains(page.driver).click_and_hold(handle).move_by_offset(160, 0).release().perform()
        time.sleep(0.5)
    except WebDriverException as error:
        print(f"could not widen the Run Name column: {error.msg}")


def test_the_study_runs_page_shows_the_report_and_lists_its_figures(chrome: Callable[..., Any],
                                                                    mlflow_server: MlflowServer,
                                                                    logged_study: LoggedStudy) -> None:
    """The study's run page: its description is the report (the answer in words, the figure drawn from the run's
    own artifacts), and the artifacts tab lists the report's figures."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver = chrome()
    token = base64.b64encode(f"{mlflow_server.username}:{mlflow_server.password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    page = Page(driver, "study-run")
    run_url = f"{mlflow_server.url}/#/experiments/{logged_study.experiment_id}/runs/{logged_study.parent_run_id}"
    driver.get(run_url)
    page.visible("the study run's title", By.XPATH, _text_xpath(STUDY))
    _close_assistant(page)
    page.visible("the report's answer in the description", By.XPATH, f"//li[normalize-space()=\"{ANSWER}\"]")
    page.visible("the run's source: the entry point and its commit", By.XPATH, _text_xpath("run.py"))
    page.wait("the description's 'Show more'", ec.element_to_be_clickable((By.XPATH, _text_xpath("Show more")))
              ).click()  # the UI folds a long description
    image = page.visible("the report's figure in the description", By.CSS_SELECTOR,
                         f"img[src*='get-artifact'][src*='{REPORT_FIGURE}']")
    page.wait("the figure drawn (fetched from the run's artifacts)",
              lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) or False)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
    time.sleep(0.5)
    page.shot("study-run-description")

    page.wait("artifacts tab", ec.element_to_be_clickable((By.XPATH, "//*[@role='tab'][normalize-space()='Artifacts']"))
              ).click()
    page.wait("the report folder", ec.element_to_be_clickable((By.XPATH, _text_xpath("report")))).click()
    for name in ("report.md", REPORT_FIGURE):
        page.visible(f"artifact {name}", By.XPATH, _text_xpath(name))
    page.shot("study-run-artifacts")
