"""Each command's ``--help`` lists the exit codes it can return and the variables it reads.

The expectations below were traced in the commands' code (see _args._EPILOGS for where
each comes from); a help that promised a code a command never returns, or a variable
it never reads (``aisix campaign`` listing AISIX_AUTHKEY while it "needs no
credentials"), sent operators looking in the wrong place.
"""

from __future__ import annotations

import re

import pytest
from cli_support import Cli

from aisix_async.cli._output import KEEPS_UNPRINTED

ALL_VARIABLES = {
    "AISIX_ACCOUNT",
    "AISIX_AUTHKEY",
    "AISIX_BASE_URL",
    "AISIX_DATA_URL",
    "AISIX_SHARED_LIMIT",
    "AISIX_HTTP_STACK",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
}
GATEWAY = ALL_VARIABLES - {"XDG_STATE_HOME"}

#: command -> (exit codes, environment variables) its help must list, and no others.
EXPECTED = {
    "send": ({0, 1, 2, 3, 4, 130, 141}, ALL_VARIABLES),
    "balance": ({0, 2, 4, 130, 141}, GATEWAY),
    "channels": ({0, 2, 4, 130, 141}, GATEWAY),
    "signs": ({0, 2, 4, 130, 141}, GATEWAY),
    "reports": ({0, 2, 4, 5, 130, 141}, ALL_VARIABLES),
    "replies": ({0, 2, 4, 130, 141}, ALL_VARIABLES),
    "rotate-key": ({0, 2, 3, 4, 130, 141}, ALL_VARIABLES),
    "campaign": ({0, 2, 130, 141}, set()),
    # The demo names its emulator's endpoints and shares no limit.
    "demo": ({0, 1, 2, 4, 130, 141}, {"AISIX_HTTP_STACK"}),
}

_CODE = re.compile(r"^  (\d+) ", re.MULTILINE)
_VARIABLE = re.compile(r"^  ([A-Z][A-Z_]+)\b", re.MULTILINE)


def _epilog(cli: Cli, *args: str) -> tuple[set[int], set[str], str]:
    result = cli.run(*args, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    codes_at = text.index("\nexit codes:\n")
    codes, _, environment = text[codes_at:].partition("\nenvironment:\n")
    listed = {int(code) for code in _CODE.findall(codes)}
    return listed, set(_VARIABLE.findall(environment)), text


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_a_commands_help_lists_what_applies_to_it(cli: Cli, command: str) -> None:
    codes, variables, text = _epilog(cli, command)
    wanted_codes, wanted_variables = EXPECTED[command]
    assert codes == wanted_codes
    assert variables == wanted_variables
    # Nowhere in the help, not only in its environment section.
    for name in ALL_VARIABLES - wanted_variables:
        assert name not in text, name
    # A file of records a closed stdout could not take is promised where one is kept.
    assert ("records it could not print are kept" in text) == ("XDG_STATE_HOME" in variables)


def test_campaign_help_names_no_credentials_and_send_help_does(cli: Cli) -> None:
    assert "AISIX_AUTHKEY" not in cli.run("campaign", "--help").stdout
    _, variables, _ = _epilog(cli, "send")
    assert {"AISIX_AUTHKEY", "AISIX_SHARED_LIMIT"} <= variables


def test_top_level_help_still_lists_everything(cli: Cli) -> None:
    codes, variables, _ = _epilog(cli)
    assert codes == {0, 1, 2, 3, 4, 5, 130, 141}
    assert variables == ALL_VARIABLES


def test_the_state_folder_is_listed_where_records_are_kept() -> None:
    # XDG_STATE_HOME holds the records a closed stdout could not take: the commands
    # listing it must be those whose records Output keeps.
    listing = {name for name, (_, variables) in EXPECTED.items() if "XDG_STATE_HOME" in variables}
    assert listing == set(KEEPS_UNPRINTED)
