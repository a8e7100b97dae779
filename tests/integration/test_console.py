# -*- test-case-name: tests.integration.test_console -*-
"""
The operator's console (C{python -m migrator console}) driven in a real
headless Chromium (Debian's C{chromium} and C{chromium-driver}, through
selenium): a service with live connections of two classes (the
documentation's chat, with adapters, and web keep-alive connections, from
L{tests/integration/apps/console.tac}); the page shows the lineage, the
counts per class and the graph's components, with no JavaScript error;
choosing the chat's component changes the plan; a takeover started from
the page completes live and moves exactly what was chosen; a dry run
started from the page completes live with its report, and the service's
record of it then shows on the page.

Screenshots (PNG) go to C{$MIGRATOR_SCREENSHOTS} if set, else to the
test's temporary directory.  Every wait is for a condition, bounded.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import sys
import tempfile
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from migrator.testing import READY, ServiceProcess, childEnvironment, startMigrate

from ._support import HTTPConnection, status
from .test_nevertwo import ChatClient

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
CONSOLE_TAC = os.path.join(APPS, "console.tac")
CHAT_PORT = re.compile(r"ChatFactory starting on (?P<port>\d+)")
WEB_PORT = re.compile(r"Site starting on (?P<port>\d+)")
CONSOLE_LINE = re.compile(
    r"console for (?P<what>.*) \(pid (?P<pid>\d+), generation (?P<generation>\d+)\) at "
    r"(?P<url>http://127\.0\.0\.1:\d+/\?token=\S+)"
)
CHAT = "tac:Chat"
WEB = "twisted.web.http._GenericHTTPChannelProtocol"
STEP = 60.0


def _browser() -> Any:
    """
    A headless Chromium through selenium, or L{SkipTest} saying what is
    missing.
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise SkipTest("selenium is not installed (pip install '.[test]')") from None
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        raise SkipTest(
            "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1440,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def _waitGone(pid: int, timeout: float) -> None:
    """
    Wait (bounded) for a process that is not our child to exit.
    """
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


class ConsoleTests(TestCase):
    """
    The console in a real browser.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-console-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, True)
        self.control = os.path.join(self.work, "ctl")
        self.shots = os.environ.get("MIGRATOR_SCREENSHOTS") or os.path.abspath(self.mktemp())
        os.makedirs(self.shots, exist_ok=True)
        self.browser = _browser()
        self.addCleanup(self.browser.quit)

    def shot(self, name: str, whole: bool = False) -> str:
        """
        Save a screenshot of the window (or of the C{whole} page, at most
        2,000 pixels high) as C{console-NAME.png}.
        """
        path = os.path.join(self.shots, f"console-{name}.png")
        if whole:
            height = min(int(self.js("return document.body.scrollHeight")), 2000)
            self.browser.set_window_size(1440, height)
        try:
            self.browser.save_screenshot(path)
        finally:
            if whole:
                self.browser.set_window_size(1440, 900)
        return path

    def stopLater(self, pid: int) -> None:
        """
        Stop a service process the console started (not our child).
        """

        def stop() -> None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            _waitGone(pid, 15.0)

        self.addCleanup(stop)

    def wait(self, condition: Any, message: str, timeout: float = STEP) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.browser, timeout).until(condition, message)

    def text(self, selector: str) -> str:
        from selenium.webdriver.common.by import By

        return str(self.browser.find_element(By.CSS_SELECTOR, selector).text)

    def js(self, script: str, *args: Any) -> Any:
        return self.browser.execute_script(script, *args)

    def severe(self) -> list[dict[str, Any]]:
        return [e for e in self.browser.get_log("browser") if e["level"] == "SEVERE"]

    def startService(self) -> ServiceProcess:
        """
        The chat and web service under migrate, serving.
        """
        incumbent = startMigrate(
            self.control,
            ["--tac", CONSOLE_TAC],
            migrateOptions=["--drain-timeout", "60"],
            cwd=self.work,
            env={"MIGRATOR_FAULT": ""},
            name="incumbent",
        )
        self.addCleanup(incumbent.stop)
        incumbent.waitFor(READY, STEP)
        return incumbent

    def openConsole(self, incumbent: ServiceProcess, fault: str = "") -> None:
        """
        Start the console (its successors get C{fault} as
        C{MIGRATOR_FAULT}) and open its page.
        """
        console = ServiceProcess(
            [
                sys.executable,
                "-m",
                "migrator",
                "console",
                "--control",
                self.control,
                "--log-dir",
                self.work,
            ],
            env=childEnvironment({"MIGRATOR_FAULT": fault}),
            name="console",
        )
        self.addCleanup(console.stop)
        line = console.waitFor(CONSOLE_LINE, STEP)
        self.assertEqual((int(line["pid"]), line["generation"]), (incumbent.pid, "0"))
        self.browser.get(line["url"])
        self.wait(lambda d: self.text("#live") == "live", "the page never went live")

    def test_abort(self) -> None:
        """
        A takeover started from the page that hangs (fault injection) is
        aborted from the page: the successor is stopped, the incumbent
        rolls back and keeps serving as generation 0, and the page says so.
        """
        from selenium.webdriver.common.by import By

        incumbent = self.startService()
        self.openConsole(incumbent, fault="hang:after-adopt")
        self.wait(lambda d: d.find_element(By.ID, "start").is_enabled(), "no successor command")
        self.browser.find_element(By.ID, "start").click()
        self.wait(
            lambda d: "at step" in self.text("#progress"),
            "the incumbent's step of the takeover never showed",
        )
        pid = int(self.js("return window.migratorConsole.state.run.pid"))
        self.stopLater(pid)
        self.browser.find_element(By.ID, "abort").click()
        self.wait(
            lambda d: d.find_element(By.ID, "run-state").get_attribute("data-state") == "aborted",
            "the abort never showed",
        )
        self.wait(lambda d: "abandoned" in self.text("#attempts"), "the rollback never showed")
        _waitGone(pid, STEP)
        record = status(self.control)
        self.assertEqual((record["pid"], record["generation"]), (incumbent.pid, 0))
        self.assertEqual(record["last_takeover"]["outcome"], "abandoned")
        self.assertIsNone(record["takeover"])
        self.shot("aborted")
        self.assertEqual(self.severe(), [])

    def test_dryRun(self) -> None:
        """
        A dry run started from the page (the same successor command with
        C{--dry-run}) completes live with exit 0 and its report per class;
        the page then shows the service's C{last_dry_run}, by that pid; the
        service still serves as generation 0, with nothing moved.
        """
        from selenium.webdriver.common.by import By

        incumbent = self.startService()
        chatPort = int(incumbent.waitFor(CHAT_PORT, STEP)["port"])
        alice = ChatClient(self, chatPort, "alice").join()
        bob = ChatClient(self, chatPort, "bob").join()
        self.openConsole(incumbent)
        self.wait(lambda d: "none yet" in self.text("#dry-run"), "no dry run said none yet")
        self.wait(lambda d: d.find_element(By.ID, "dry").is_enabled(), "no successor command")
        self.browser.find_element(By.ID, "dry").click()
        self.wait(
            lambda d: d.find_element(By.ID, "run-state").get_attribute("data-state") == "passed",
            "the dry run did not pass",
        )
        pid = int(self.js("return window.migratorConsole.state.run.pid"))
        self.assertEqual(
            self.js("return window.migratorConsole.state.run.argv").count("--dry-run"), 1
        )
        runState = self.text("#run-state")
        self.assertIn(f"dry run by pid {pid}: passed (exit 0)", runState)
        report = self.text("#run-report")
        self.assertIn(f"dry run against pid {incumbent.pid}", report)
        self.assertIn(f"{CHAT}: would move 2", report)
        self.assertIn("dry run: every connection would move (2 restored here) (exit 0)", report)
        self.wait(
            lambda d: d.find_element(By.ID, "dry-run").get_attribute("data-by") == str(pid),
            "the service's record of the dry run never showed",
        )
        shown = self.text("#dry-run")
        self.assertIn("last dry run: ok at ", shown)
        self.assertIn(f"by pid {pid}: 2 connection(s) snapshotted", shown)
        self.assertIn("Chat: restored 2, failed 0, staying 0", shown)
        record = status(self.control)
        self.assertEqual((record["pid"], record["generation"]), (incumbent.pid, 0))
        self.assertIsNone(record["last_takeover"])
        self.assertEqual(record["last_dry_run"]["by"], pid)
        self.shot("dry-run")
        alice.say("still here?", [bob])
        self.assertEqual(self.severe(), [])

    def test_console(self) -> None:
        """
        Open the console on a service with two chat users and two web
        keep-alive connections: lineage, counts and components appear;
        clicking a node shows its class, adapter and shape; choosing the
        chat's component (with --unmovable drain) makes the web connections
        drain, not selected; a takeover started from the page completes
        live, moves the chat (which goes on working) and leaves the web
        connections to drain; no JavaScript error all along.
        """
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        incumbent = self.startService()
        chatPort = int(incumbent.waitFor(CHAT_PORT, STEP)["port"])
        webPort = int(incumbent.waitFor(WEB_PORT, STEP)["port"])
        alice = ChatClient(self, chatPort, "alice").join()
        bob = ChatClient(self, chatPort, "bob").join()
        webs = []
        for _ in range(2):
            web = HTTPConnection(self, webPort)
            web.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            self.assertEqual(web.readResponse()[0], 200)
            webs.append(web)

        self.openConsole(incumbent)
        self.wait(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#components tbody tr")) == 3,
            "the three components never appeared",
        )
        self.wait(lambda d: "4 open" in self.text("#plan-summary"), "no plan of 4 connections")
        rows = self.browser.find_elements(By.CSS_SELECTOR, "#lineage tbody tr")
        self.assertEqual([r.get_attribute("data-generation") for r in rows], ["0"])
        self.assertIn(str(incumbent.pid), rows[0].text)
        self.assertIn("serving", rows[0].text)
        counts = {
            r.get_attribute("data-class"): r.text
            for r in self.browser.find_elements(By.CSS_SELECTOR, "#plan tbody tr[data-class]")
        }
        self.assertEqual(set(counts), {CHAT, WEB})
        self.assertTrue(counts[CHAT].startswith("tac:Chat 2 2"), counts[CHAT])
        self.assertIn("4 connection(s)", self.text("#graph-summary"))
        drawn = self.js(
            "var cy = window.migratorConsole.cy();"
            "return [cy.nodes('[kind = \"connection\"]').length,"
            " cy.nodes('[kind = \"component\"]').length, cy.nodes('[kind = \"anchor\"]').length];"
        )
        self.assertEqual(drawn, [4, 3, 2])
        self.shot("overview")

        # A click on a chat protocol's node (on the canvas) shows it.
        x, y = self.js(
            "var cy = window.migratorConsole.cy();"
            "var n = cy.nodes('[kind = \"object\"]').filter(function (n) {"
            "  return n.data('node')['class'] === 'tac:Chat'; })[0];"
            "var p = n.renderedPosition(); return [p.x, p.y];"
        )
        graph = self.browser.find_element(By.ID, "graph")
        size = graph.size
        ActionChains(self.browser).move_to_element_with_offset(
            graph, int(x - size["width"] / 2), int(y - size["height"] / 2)
        ).click().perform()
        self.wait(lambda d: "tac:Chat" in self.text("#details"), "clicking a node showed nothing")
        details = self.text("#details")
        self.assertIn("tac:Chat (version 1)", details)
        self.assertIn(".users", details)
        self.assertNotIn("alice", details)

        # Choose the chat's component, with --unmovable drain.
        Select(self.browser.find_element(By.ID, "policy")).select_by_value("drain")
        [chatRow] = [
            r
            for r in self.browser.find_elements(
                By.CSS_SELECTOR, "#components tbody tr[data-component]"
            )
            if "Chat" in r.text
        ]
        chatRow.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
        self.wait(
            lambda d: "Selected 2 connection(s)" in self.text("#selection-summary"),
            "the plan of the selection never came",
        )
        summary = self.text("#selection-summary")
        self.assertIn("2 move, 2 drain, 0 close, 0 refused", summary)
        self.assertIn("not selected to move", self.text("#selection-plan"))
        self.assertIn("--unmovable drain, 2 connection(s) selected", self.text("#start"))
        self.shot("selection", whole=True)

        # Run the takeover from the page and watch it complete.
        self.browser.find_element(By.ID, "start").click()
        self.wait(
            lambda d: d.find_element(By.ID, "run-state").get_attribute("data-state") == "committed",
            "the takeover did not complete",
        )
        # The log is streamed on its own: its line may come a moment later.
        self.wait(
            lambda d: "migrate: serving" in self.text("#run-log"),
            "the successor's log never said it serves",
        )
        record = status(self.control)
        self.stopLater(record["pid"])
        self.assertEqual(record["generation"], 1)
        self.assertEqual(
            {k: v["moved"] for k, v in record["took_over"]["classes"].items()}, {CHAT: 2, WEB: 0}
        )
        self.wait(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lineage tbody tr")) == 2,
            "the new generation never appeared in the lineage",
        )
        self.wait(lambda d: "generation 1" in self.text("#service"), "the header never changed")
        lineage = self.text("#lineage")
        self.assertIn(f"handed off to pid {record['pid']}", lineage)
        self.wait(
            lambda d: (
                "Nothing selected" in self.text("#selection-summary")
                or "cleared" in self.text("#selection-summary")
            ),
            "the selection of the old process was kept",
        )
        self.shot("after-takeover")
        alice.say("still here?", [bob])

        self.assertEqual(self.severe(), [])
