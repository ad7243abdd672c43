"""`vsp-assert explore` in a real browser: headless Chromium driven by selenium through Debian's chromium-driver
(no browser download). The README's stripes diagnosis by clicking, then the saved case under pytest.

The test writes its screenshot to the test's tmp folder; with VSP_DOCS_SCREENSHOTS=1 it also writes
docs/explore.png, the screenshot docs/explore.md shows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # seconds any one wait may take on a busy 2-core machine (never asserted as a duration)


def need(tool: str, package: str) -> str:
    """The path of ``tool``; skipped without it, failed under CI (where .ci/run installs it)."""
    import shutil

    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} not installed: apt-get install {package}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, and .ci/run installs it)", pytrace=False)
        pytest.skip(reason)
    return path


def start_explorer(cases: Path) -> tuple[subprocess.Popen[str], str]:
    """`vsp-assert explore` in a subprocess; returns it and the address it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "vsp_assert.cli", "explore", "--cases-dir", str(cases),
                             "--max-new-tokens", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server prints its address once it listens
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not found:
        proc.kill()
        raise AssertionError(f"no address printed: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, found.group(0)


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = need("chromium", "chromium")
    driver_path = need("chromedriver", "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1250", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_explore_reproduces_the_stripes_diagnosis_by_clicking_and_saves_a_passing_case(browser: Any,
                                                                                          tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    cases = tmp_path / "cases"
    cases.mkdir()
    proc, url = start_explorer(cases)
    try:
        wait = WebDriverWait(browser, TIMEOUT)

        def idle(d: Any) -> bool:
            return d.find_element(By.TAG_NAME, "body").get_attribute("data-busy") == "0"

        # 1. open the page, pick the README's stripes scene, run the case
        browser.get(url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        Select(browser.find_element(By.ID, "scene")).select_by_value("stripes-square")
        wait.until(lambda d: d.find_element(By.ID, "prompt").get_attribute("value"))
        assert browser.find_element(By.ID, "prompt").get_attribute("value") == "What shape is the red object?"
        browser.find_element(By.ID, "run").click()
        wait.until(lambda d: d.find_element(By.ID, "answer").text == '"triangle"')
        assert browser.find_elements(By.CSS_SELECTOR, "#heatmap table.heatmap td.cell")
        assert browser.find_elements(By.CSS_SELECTOR, "#attention img")

        # 2. ablate the stripes cluster and re-run: the answer turns into the true shape
        clusters = browser.find_elements(By.CSS_SELECTOR, "#clusters li")
        stripes = [li for li in clusters if re.search(r"cluster \d+: (stripes#\d+, )*stripes#\d+$", li.text)]
        assert len(stripes) == 1, [li.text for li in clusters]
        stripes[0].find_element(By.CSS_SELECTOR, "button.ablate-cluster").click()
        assert len(browser.find_elements(By.CSS_SELECTOR, "#pending tr")) == 1
        browser.find_element(By.ID, "rerun").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results tr"))
        row = browser.find_element(By.CSS_SELECTOR, "#results tr").text
        assert '"triangle" → "square"' in row and "yes" in row, row

        # a latent's details open from its heatmap column; a non-numeric steer value is refused with a message
        browser.find_element(By.CSS_SELECTOR, "#heatmap th.lat").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#latent-panel details.latent"))
        stripes[0].find_element(By.CSS_SELECTOR, "button.steer-cluster").click()
        amount = browser.find_element(By.CSS_SELECTOR, "#pending input.amount")
        amount.clear()
        amount.send_keys("a lot")
        browser.find_element(By.ID, "rerun").click()
        wait.until(lambda d: "not a number" in d.find_element(By.ID, "message").text)
        assert "error" in browser.find_element(By.ID, "message").get_attribute("class")
        browser.find_element(By.CSS_SELECTOR, "#pending button").click()  # remove it

        # 3. save the case
        browser.find_element(By.ID, "case-file").clear()
        browser.find_element(By.ID, "case-file").send_keys("triage.yaml")
        browser.find_element(By.ID, "case-id").send_keys("stripes-triangle")
        browser.find_element(By.ID, "save").click()
        wait.until(lambda d: d.find_elements(By.ID, "saved-path"))
        wait.until(idle)
        saved = Path(browser.find_element(By.ID, "saved-path").get_attribute("data-file"))
        assert saved == cases / "triage.yaml"
        browser.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "explore.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("VSP_DOCS_SCREENSHOTS") == "1":
            from vsp_assert.files import atomic_write_bytes

            atomic_write_bytes(ROOT / "docs" / "explore.png", shot.read_bytes())
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stops after the request in progress
        _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped" in err
    assert not [p for p in cases.rglob("*") if p.name.endswith(".tmp")]

    # 4. the saved case passes under pytest
    text = saved.read_text(encoding="utf-8")
    assert "id: stripes-triangle" in text and "answer: square" in text
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", saved.name],
                          cwd=cases, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
