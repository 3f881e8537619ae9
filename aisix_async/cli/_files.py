"""Output files that must not land on a campaign journal's own files.

SQLite keeps a ``-wal`` (and ``-shm``) file beside a journal and removes it when the
journal closes; the journal's ``.lock`` is rewritten and removed too. An ``--outcomes``
or ``--export`` file given one of those names was written in full, said so ("N
recipients written"), exit 0, and was gone once the command ended (a user's trial).
Which files those are is the journal's knowledge (:meth:`CampaignJournal.files`); this
only compares them with the path an option names, before anything is sent or written.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import CampaignJournal
from ._exit import CliError

__all__ = ["refuse_journal_file"]


def refuse_journal_file(option: str, path: str, journal: str | os.PathLike[str]) -> None:
    """Raise a :class:`CliError` when ``path`` is ``journal`` or a file kept beside it.

    Resolved paths are compared, so ``./``, another spelling of the folder or a symlink
    does not slip through; a second hard link is caught once both exist.
    """
    own = CampaignJournal.files(journal)
    target = os.path.normcase(os.path.realpath(path))
    for index, name in enumerate(own):
        if not _same(target, path, name):
            continue
        if index == 0:
            raise CliError(f"{option} {path} is the journal itself; give another file")
        real = "" if os.path.abspath(path) == os.fspath(name) else f" (as {name})"
        raise CliError(
            f"{option} {path} is a file the journal {journal} keeps beside it{real}: "
            "SQLite removes its -wal, -shm and -journal files, and the journal its .lock, "
            "when it closes, with whatever was written there; give another file"
        )


def _same(target: str, path: str, name: Path) -> bool:
    if os.path.normcase(os.fspath(name)) == target:
        return True
    try:
        return os.path.samefile(path, name)
    except OSError:  # either is missing: only the resolved names can tell
        return False
