"""``aisix send``: the command (``command``), its inputs (``inputs``: files, CSV columns,
checks), what it tallies per recipient (``tally``), and what it shows and writes at the end
(``report``). Ctrl-C handling and the live panel are shared with other commands
(``cli._interrupts``, ``cli._progress``), which is why this package imports nothing itself.
"""
