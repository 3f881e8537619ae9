"""Sessions for developers and CI: `nox -s lint typecheck tests`, and `nox -s bench`.

Every session uses the interpreter nox itself runs on, so nothing fails for a missing
Python version on a fresh machine; `nox -s tests -P 3.12` picks another.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on asyncio and trio, with coverage of the package (>= 90%)."""
    session.install("-e", ".[tests]")
    session.run("coverage", "erase")
    session.run(
        "pytest",
        "--cov=aisix_async",
        "--cov-report=term",
        "--cov-fail-under=90",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[typecheck]")
    session.run("mypy", "--strict", "aisix_async")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the emulator on 127.0.0.1; writes benchmarks/RESULTS.md."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run_all.py", *session.posargs)
