# -*- test-case-name: tests.test_packaging -*-
"""
Packaging: the wheel carries the twistd plugin and nothing that would shadow
Twisted's own C{twisted} package, and an installed wheel makes
C{twistd --help} list C{migrate}.

SLOW-ISH (about 10 s): these tests build a wheel of the checkout with pip
and install it into a throwaway virtualenv.  They never need a package
index when setuptools >= 70.1 is installed (it is in the C{test} extra); if
it is not and the index cannot be reached, they skip and say why.  Set
C{MIGRATOR_SKIP_PACKAGING=1} to skip them on purpose.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

#: The checkout these tests belong to.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = "twisted/plugins/migrator_plugin.py"

#: pip output that means "no index to fetch build requirements from".
_OFFLINE_SIGNS = (
    "Could not find a version that satisfies the requirement",
    "No matching distribution found",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
)

_built: dict[str, str] = {}


def _canBuildOffline() -> bool:
    """
    Can pip build our wheel with what is installed (C{--no-build-isolation})?
    setuptools >= 70.1 builds wheels without the separate C{wheel} package.
    """
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts) >= (70, 1)


def _run(argv: list[str], cwd: str | None = None, timeout: float = 120) -> str:
    """
    Run C{argv} without the caller's C{PYTHONPATH} (so that the checkout is
    not importable by accident) and return its combined output.

    @raise subprocess.CalledProcessError: if it fails; C{output} holds the
        output.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout)
    return done.stdout


def _scratch() -> str:
    path = tempfile.mkdtemp(prefix="migrator-packaging-")
    atexit.register(shutil.rmtree, path, True)
    return path


def buildWheel() -> str:
    """
    Build the wheel of the checkout once per test run.

    @return: the path of the wheel.
    @raise SkipTest: if pip is missing, or the build needs a package index
        that cannot be reached.
    """
    if "wheel" in _built:
        return _built["wheel"]
    if os.environ.get("MIGRATOR_SKIP_PACKAGING"):
        raise SkipTest("MIGRATOR_SKIP_PACKAGING is set")
    try:
        import pip  # noqa: F401
    except ImportError:
        raise SkipTest("pip is not installed in this environment") from None
    out = _scratch()
    # Copy the sources so that the build's own leftovers (build/,
    # *.egg-info) never land in the checkout, and stale ones there never
    # land in the wheel.
    source = os.path.join(out, "src")
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".tox",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            "_trial_temp*",
            ".*_cache",
            "dropin.cache",
            "*.ctl",
        ),
    )
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out]
    if _canBuildOffline():
        argv.append("--no-build-isolation")
    argv.append(source)
    try:
        _run(argv, timeout=180)
    except subprocess.CalledProcessError as e:
        if "--no-build-isolation" not in argv and any(s in e.output for s in _OFFLINE_SIGNS):
            raise SkipTest(
                "building the wheel needs setuptools >= 70.1, which is not "
                "installed, and the package index cannot be reached:\n" + e.output[-1500:]
            ) from None
        raise AssertionError(f"pip wheel failed:\n{e.output[-4000:]}") from None
    wheels = [name for name in os.listdir(out) if name.endswith(".whl")]
    if len(wheels) != 1:
        raise AssertionError(f"expected one wheel in {out}, found {wheels}")
    _built["wheel"] = os.path.join(out, wheels[0])
    return _built["wheel"]


def _shadowSitePackages(target: str) -> None:
    """
    Fill C{target} with symbolic links to everything this interpreter's
    site-packages hold (Twisted and the other dependencies) except migrator
    itself, so that an interpreter given C{target} finds the dependencies
    but only the migrator under test.

    C{twisted} is rebuilt as a directory of links leaving out
    C{twisted/plugins/migrator_plugin.py}, which a non-editable install of
    migrator puts there.
    """
    spec = importlib.util.find_spec("twisted")
    assert spec is not None and spec.origin is not None
    sources = [os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))]
    for directory in site.getsitepackages() + [sysconfig.get_paths()["purelib"]]:
        directory = os.path.abspath(directory)
        if os.path.isdir(directory) and directory not in sources:
            sources.append(directory)
    for directory in sources:
        for name in os.listdir(directory):
            lowered = name.lower()
            if lowered.startswith(("migrator", "__editable__", "__pycache__")):
                continue
            if lowered.endswith(".pth"):
                with open(os.path.join(directory, name), errors="replace") as f:
                    if ROOT in f.read() or "migrator" in lowered:
                        continue
            link = os.path.join(target, name)
            if os.path.lexists(link):
                continue
            if name == "twisted":
                _linkTree(os.path.join(directory, name), link)
            else:
                os.symlink(os.path.join(directory, name), link)


def _linkTree(twistedDir: str, target: str) -> None:
    os.mkdir(target)
    for name in os.listdir(twistedDir):
        if name == "__pycache__":
            continue
        if name == "plugins":
            plugins = os.path.join(target, "plugins")
            os.mkdir(plugins)
            for plugin in os.listdir(os.path.join(twistedDir, "plugins")):
                if plugin in ("migrator_plugin.py", "dropin.cache", "__pycache__"):
                    continue
                os.symlink(
                    os.path.join(twistedDir, "plugins", plugin),
                    os.path.join(plugins, plugin),
                )
            continue
        os.symlink(os.path.join(twistedDir, name), os.path.join(target, name))


class PackagingTests(SynchronousTestCase):
    """
    The built wheel and the source tree keep C{twisted/plugins} a namespace
    shared with Twisted, and ship the C{migrate} plugin.  (Slow-ish: builds
    a wheel; see the module docstring.)
    """

    def test_sourceTreeHasNoTwistedInit(self) -> None:
        """
        No C{__init__.py} exists anywhere under the checkout's C{twisted/}:
        one would shadow Twisted's own package (or its plugins package) for
        everyone who installs migrator.
        """
        found = []
        for directory, _, files in os.walk(os.path.join(ROOT, "twisted")):
            found.extend(
                os.path.relpath(os.path.join(directory, name), ROOT)
                for name in files
                if name == "__init__.py"
            )
        self.assertEqual(found, [])
        self.assertTrue(os.path.isfile(os.path.join(ROOT, PLUGIN)))

    def test_wheelContents(self) -> None:
        """
        The wheel contains the plugin module and the C{migrator} package
        (with the console's static files), and neither C{twisted/__init__.py} nor C{twisted/plugins/__init__.py}
        (nor a plugin cache, nor the tests).
        """
        with zipfile.ZipFile(buildWheel()) as wheel:
            names = set(wheel.namelist())
        self.assertIn(PLUGIN, names)
        self.assertIn("migrator/__init__.py", names)
        self.assertIn("migrator/tap.py", names)
        self.assertIn("migrator/py.typed", names)
        # The console's page and the vendored graph library with its license.
        for name in ("index.html", "console.js", "console.css", "cytoscape.min.js"):
            self.assertIn(f"migrator/console/static/{name}", names)
        self.assertIn("migrator/console/static/cytoscape.LICENSE", names)
        self.assertIn("migrator/console/static/README.md", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertEqual(
            [n for n in names if n.startswith("twisted/")],
            [PLUGIN],
        )
        self.assertEqual([n for n in names if n.startswith("tests/")], [])

    def test_installedWheelListsMigrate(self) -> None:
        """
        Installed into a fresh virtualenv (whose only migrator is the
        wheel's; Twisted and the other dependencies are borrowed from this
        environment), C{twistd --help} lists C{migrate}, loaded from the
        virtualenv.
        """
        wheel = buildWheel()
        work = _scratch()
        venv = os.path.join(work, "venv")
        try:
            _run([sys.executable, "-m", "venv", "--without-pip", venv])
        except subprocess.CalledProcessError as e:
            raise SkipTest(f"cannot create a virtualenv here:\n{e.output[-1500:]}") from None
        python = os.path.join(venv, "bin", "python")
        venvSite = _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).strip()
        deps = os.path.join(work, "deps")
        os.mkdir(deps)
        _shadowSitePackages(deps)
        # addsitedir (not a bare path line) so that the .pth files among the
        # dependencies are processed too.
        with open(os.path.join(venvSite, "zz_borrowed_dependencies.pth"), "w") as f:
            f.write(f"import site; site.addsitedir({deps!r})\n")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--no-index",
                "--target",
                venvSite,
                wheel,
            ],
        )
        where = _run(
            [
                python,
                "-c",
                "import migrator, twisted.plugins.migrator_plugin as p; "
                "print(migrator.__file__); print(p.__file__)",
            ],
            cwd=work,
        ).split()
        for path in where:
            self.assertTrue(
                os.path.realpath(path).startswith(os.path.realpath(venvSite)),
                f"{path} is not from the virtualenv ({venvSite})",
            )
        helpText = _run(
            [python, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
            cwd=work,
        )
        commands = [line.split()[0] for line in helpText.splitlines() if line.startswith("    ")]
        self.assertIn("migrate", commands, helpText)
        self.assertIn("web", commands, helpText)
