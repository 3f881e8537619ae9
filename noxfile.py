"""Sessions for developers and CI: `nox -s lint typecheck tests`, and `nox -s bench`.

Every session uses the interpreter nox itself runs on, so nothing fails for a missing
Python version on a fresh machine; `nox -s tests -P 3.12` picks another.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False


# httpx2 needs Python 3.11+; its extra installs nothing on 3.10.
_HTTPX2_PYTHON = (3, 11)


@nox.session
@nox.parametrize("stack", ["httpx", "httpx2"])
def tests(session: nox.Session, stack: str) -> None:
    """The test suite on asyncio and trio, once per HTTP stack.

    httpx: a plain install (httpx only), with coverage (>= 90%). httpx2: first the tests
    of the choice between stacks with both installed (as the httpx2 extra leaves them),
    then httpx, httpcore and respx are uninstalled and the whole suite runs where only
    httpx2 exists, without coverage: the gate is the httpx run's, and measuring every
    `aisix` subprocess again cost a quarter of this run's time.
    """
    # Only this session's choice of stack counts, not one set in the caller's shell.
    session.env["AISIX_HTTP_STACK"] = ""
    # Bytecode is written, whatever the caller's shell says (CI images often set
    # PYTHONDONTWRITEBYTECODE=1): some 500 subprocesses (`aisix`, scripts) import the package, and
    # each would compile it from source again; pytest's workers would rewrite every test
    # module's asserts again too. An empty value is "not set" to Python.
    session.env["PYTHONDONTWRITEBYTECODE"] = ""
    coverage = ["--cov=aisix_async", "--cov-report=term", "--cov-fail-under=90"]
    # Three worker processes (pytest-xdist), on 2 CPUs too: the suite mostly waits (on
    # servers, rate limits, subprocesses), using half of two CPUs with two workers. The
    # whole suite took 410 s with two, 311 s with three, 303 s with four (which used the
    # CPUs to 84%, and left less room for the tests that time things). `nox -s tests --
    # -n 0` runs it in one.
    workers = ["-n", "3"]
    if stack == "httpx":
        session.install("-e", ".[tests]")
        session.run("coverage", "erase")
        session.run("pytest", *workers, *coverage, *session.posargs)
        return
    if _python_version(session) < _HTTPX2_PYTHON:
        session.skip("httpx2 needs Python 3.11 or newer")
    session.install("-e", ".[tests,httpx2]")
    session.run("pytest", "tests/test_http_stack.py")
    session.run("python", "-m", "pip", "uninstall", "--yes", "httpx", "httpcore", "respx")
    session.run("pytest", *workers, *session.posargs)


def _python_version(session: nox.Session) -> tuple[int, int]:
    out = session.run("python", "-c", "import sys; print(*sys.version_info[:2])", silent=True)
    major, minor = str(out).split()
    return int(major), int(minor)


@nox.session(reuse_venv=False)
def httpx2_only(session: nox.Session) -> None:
    """A fresh venv with aisix-async[cli,httpx2] and no httpx at all: `aisix demo` and the
    README's first example (against the emulator) must run there. Slow (a fresh install);
    not in the default sessions: `nox -s tests` already runs the suite without httpx.
    """
    if _python_version(session) < _HTTPX2_PYTHON:
        session.skip("httpx2 needs Python 3.11 or newer")
    session.env["AISIX_HTTP_STACK"] = ""
    session.install(".[cli,httpx2]")
    session.run("python", "-m", "pip", "uninstall", "--yes", "httpx", "httpcore")
    session.run("python", "tests/httpx2_only_check.py")


@nox.session(python="3.10")
def oldest(session: nox.Session) -> None:
    """The oldest Python that pyproject.toml allows, where one is installed (skipped
    otherwise): the package imports (it did not on 3.10 once, and nothing ran there), a
    few quick test files pass, and the offline demo passes its self-check."""
    session.install("-e", ".[tests,cli]")
    session.run("pytest", "-q", "-p", "no:randomly", "tests/test_exported_members.py",
                "tests/test_validate.py", "tests/test_models.py")  # fmt: skip
    session.run("aisix", "demo", "--size", "2000")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint rules and formatting), and import-linter (the layers, pyproject.toml)."""
    session.install("ruff>=0.6", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, and on tests/typed_usage.py: user code that the
    public annotations must let through when it is right and refuse when it is wrong."""
    session.install("-e", ".[typecheck]")
    session.run("mypy", "--strict", "aisix_async", "tests/typed_usage.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the emulator on 127.0.0.1; writes benchmarks/RESULTS.md."""
    # httpx2 too, for bench_stacks.py (which names its stack per run); the other
    # benchmarks stay on httpx, the default of a plain install.
    session.install("-e", ".[bench,httpx2]")
    session.env["AISIX_HTTP_STACK"] = "httpx"
    session.run("python", "benchmarks/run_all.py", *session.posargs)
