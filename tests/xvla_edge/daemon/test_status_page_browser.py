"""The status page in a real headless browser (Debian's chromium through Selenium): it loads without console
errors, shows the mode and the bundle id, and its E-STOP button stops the emulated arm. A screenshot is
written to the test's directory (and to ``$XVLA_SCREENSHOT`` when set: the picture in docs/daemon.md)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the [test] extra has it)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from xvla_edge.daemon.config import load_config  # noqa: E402
from xvla_edge.daemon.robot_toml import robot_toml  # noqa: E402
from xvla_edge.daemon.service import Daemon  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                "(apt-get install chromium chromium-driver; .ci/run installs them)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1100,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def test_the_page_shows_the_daemon_and_its_estop_stops_the_arm(tmp_path, bundle, emu, browser):
    port = free_port()
    path = tmp_path / "robot.toml"
    path.write_text(robot_toml(bundle, emu.port, tmp_path / "recordings", cameras={"width": 160, "height": 120},
                               arm={"timeout_ms": 300}, control={"rate_hz": 100, "realtime_priority": 0},
                               health={"port": port}))
    daemon = Daemon(load_config(path))
    daemon.start()
    stop = threading.Event()
    supervisor = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    supervisor.start()
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda b: b.find_element(By.ID, "mode").text == "tracking")
        bundle_id = daemon.policy.manifest.bundle_id
        assert browser.find_element(By.ID, "bundle").text.startswith(bundle_id[:12])
        assert browser.find_element(By.ID, "health").text in ("ok", "degraded")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#cams img") and
                   b.execute_script("return document.querySelector('#cams img').naturalWidth") == 160)
        time.sleep(1.5)  # a refresh with the trajectory and histograms drawn
        browser.save_screenshot(str(tmp_path / "status-page.png"))
        if os.environ.get("XVLA_SCREENSHOT"):
            shutil.copy(tmp_path / "status-page.png", os.environ["XVLA_SCREENSHOT"])
        browser.find_element(By.ID, "estop").click()
        end = time.monotonic() + 2.0
        while emu.call("snapshot")["mode"] != "ESTOPPED":
            assert time.monotonic() < end, "the page's E-STOP did not reach the controller"
        wait.until(lambda b: b.find_element(By.ID, "operator").text == "estopped")
        assert browser.find_element(By.ID, "reply").text == "ok: estop"
        browser.find_element(By.ID, "resume").click()  # refused, and the page says why
        wait.until(lambda b: "clear-estop first" in b.find_element(By.ID, "reply").text)
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [] or all("409" in e["message"] for e in errors), errors  # the refusal's own status
    finally:
        stop.set()
        supervisor.join(10)
        daemon.close()
