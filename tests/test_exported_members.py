"""The public surface: all of __all__ exists, shows the public path, and nothing else leaks."""

from __future__ import annotations

import types

import aisix_async


def test_all_is_unique_and_complete() -> None:
    names = aisix_async.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(aisix_async, name), name


def test_public_classes_show_the_public_module() -> None:
    for name in aisix_async.__all__:
        obj = getattr(aisix_async, name)
        # (On Python 3.10 a Callable[...] alias, a hook's type, passes for a class too.)
        if isinstance(obj, type) and not isinstance(obj, types.GenericAlias):
            assert obj.__module__ == "aisix_async", name


def test_no_private_module_is_named_publicly() -> None:
    public = {n for n in dir(aisix_async) if not n.startswith("_")}
    assert public - set(aisix_async.__all__) <= {"annotations", "emulator", "cli", "validation"}


def test_version_is_a_string() -> None:
    assert isinstance(aisix_async.__version__, str) and aisix_async.__version__
