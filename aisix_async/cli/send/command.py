"""``aisix send``: a whole campaign from a file, with its outcome accounted for.

The order of work is the safety argument:

1. Every argument and every input line is checked before the first request (a bad number
   on line 9,000,001 is reported with its line number, not discovered mid-campaign);
   ``--skip-invalid`` sends the rest and reports those as failed.
2. The cost is estimated over the valid lines and compared with the balance (the bulk
   engine cannot check a lazily read input itself); ``--dry-run`` stops here.
3. The input is read again, lazily, into the bulk engine (or into a campaign journal with
   ``--journal``); progress goes to stderr; outcomes are counted and written as they land.

Ctrl-C stops cleanly: the first one stops dispatch at once (no new request, no retry)
and reading the input, and lets the requests already written finish, so every recipient
sent has its outcome and nothing is left in doubt;
a second one abandons those requests (their recipients are then unknown). Either way
the summary says what was sent, and with ``--journal`` running again finishes the job.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.from_thread
import anyio.to_thread
import attrs

from ... import (
    AisixClient,
    AisixError,
    CampaignError,
    CampaignStream,
    CampaignSummary,
    Estimate,
    FoundOnResume,
    OutcomeStatus,
    SendOutcome,
    SendStoppedError,
    SendStream,
    ValidationError,
    open_campaign_journal,
)
from ...validation import check_at, check_content, check_numbering
from .._app import Context, leaf_error
from .._exit import CliError, ExitCode
from .._files import refuse_journal_file
from .._interrupts import Feed, watch_interrupts
from .._output import counted
from .._progress import Snapshot, progress
from .._signals import interrupted
from .inputs import (
    Source,
    batch_source,
    check_source,
    csv_numbers_source,
    heeding,
    numbers_source,
    param_source,
    parse_at,
    problem,
)
from .report import finish, show_estimate, show_problems, snapshot
from .tally import Tally, found_rows_text, open_outcomes, outcome_record, outcome_rows_text

if TYPE_CHECKING:
    from ... import Campaign

    Stream = SendStream | CampaignStream

__all__ = ["send"]


def _source(args: Any) -> Source:
    """The recipients, from the one input the arguments name."""
    if args.content == "" and not (args.template or args.batch):
        # Given, but empty: say so, not that it is missing.
        raise CliError("--content: must not be empty")
    kinds = [args.content is not None, bool(args.template), bool(args.batch)]
    if sum(kinds) != 1:
        raise CliError("give exactly one of --content TEXT, --template TEXT or --batch FILE")
    if args.batch:
        if args.numbers or args.csv:
            raise CliError("--batch FILE holds the numbers itself: no FILE or --csv with it")
        return batch_source(args.batch)
    if args.csv:
        if args.numbers:
            raise CliError("give the numbers either as FILE or as --csv FILE --column NAME")
        if not args.column:
            raise CliError("--csv needs --column NAME (the column holding the numbers)")
        if args.template:
            if not args.param_columns:
                raise CliError(
                    "--template needs --param-columns A,B,... (the CSV columns of {p1}, {p2}, ...)"
                )
            names = [name.strip() for name in args.param_columns.split(",") if name.strip()]
            return param_source(args.csv, args.column, names, args.template)
        if args.param_columns:
            # Ignoring it would send the plain --content to people expecting their values.
            raise CliError("--param-columns gives the values of a --template: not with --content")
        return csv_numbers_source(args.csv, args.column)
    if args.template:
        raise CliError(
            "--template takes its values from a CSV: add --csv FILE --column NAME "
            "--param-columns A,B,..."
        )
    if args.column or args.param_columns:
        raise CliError("--column and --param-columns go with --csv FILE")
    return numbers_source(args.numbers)


def _check_file_to_write(option: str, path: str) -> Path:
    """Refuse a file the run will write that is a directory or in a missing folder, before
    the gateway is asked for anything."""
    target = Path(path)
    if target.is_dir():
        raise CliError(f"{option} {path}: is a directory; give a file name in it")
    if not target.parent.is_dir():
        raise CliError(f"{option} {path}: the folder {target.parent} does not exist")
    return target


def _check_journal(args: Any) -> None:
    """Refuse a --journal path that cannot be a file (it is opened after the estimate)."""
    if args.journal:
        _check_file_to_write("--journal", args.journal)


async def _check_csid(client: AisixClient, csid: int | None) -> None:
    """Refuse a --csid that is not one of the account's signatures: the gateway would not
    refuse it, but send under the default signature instead (a typo sends a campaign
    signed as someone else's brand, or as nobody's)."""
    if not csid:
        return
    signs = await client.get_signs()
    if any(sign.csid == csid for sign in signs):
        return
    known = ", ".join(str(sign.csid) for sign in signs) or "none"
    default = next((sign.sign for sign in signs if sign.csid == 0), None)
    instead = f" ({default})" if default else ""
    raise CliError(
        f"--csid {csid} is not one of this account's signatures ({known}): the gateway "
        f"would send under the default signature{instead} instead; `aisix signs` lists them"
    )


def _password_on_command_line(url: str | None) -> bool:
    """Whether a --shared-limit URL carries a password (``redis://:pw@host``, or
    ``?password=``): the client takes it, but argv is no place for one."""
    if not url:
        return False
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return False  # the client refuses it, without quoting it
    if not parts.netloc and "@" in url:
        # A mistyped scheme ("redis:/:pw@host"): the parse reads it all as a path, but
        # what comes before the '@' is most likely credentials all the same.
        return True
    return bool(password) or any(
        name.lower() == "password" and value for name, value in parse_qsl(parts.query)
    )


def _is_fd(path: str, fd: int, *, kinds: tuple[Callable[[int], bool], ...] = ()) -> bool:
    """Whether ``path`` is this process's file descriptor ``fd`` (``/dev/stdout``, or its
    file by name); with ``kinds``, only when ``fd`` is a file of one of those kinds."""
    try:
        named, ours = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    if kinds and not any(kind(ours.st_mode) for kind in kinds):
        return False
    return (named.st_dev, named.st_ino) == (ours.st_dev, ours.st_ino)


def _is_stdout(path: str) -> bool:
    """Whether ``path`` is this process's stdout."""
    return _is_fd(path, 1)


def _is_stdin(path: str) -> bool:
    """Whether ``path`` is this process's stdin, when that is a file or a pipe (a terminal
    or /dev/null is no input an outcome row could be appended to)."""
    return _is_fd(path, 0, kinds=(stat.S_ISREG, stat.S_ISFIFO))


def _check_outcomes(args: Any) -> None:
    """Refuse an --outcomes path the run cannot write or would damage, before any send."""
    path = args.outcomes
    if not path:
        return
    target = _check_file_to_write("--outcomes", path)
    # Rows appended to an input, the journal or the key file would corrupt it.
    others = {
        "the numbers FILE": args.numbers,
        "--csv": args.csv,
        "--batch": args.batch,
        "--journal": args.journal,
        "--authkey-file": args.authkey_file,
    }
    for option, other in others.items():
        if not other or other == "-":
            continue
        both_exist = target.exists() and os.path.exists(other)
        if (both_exist and os.path.samefile(path, other)) or (
            os.path.realpath(path) == os.path.realpath(other)
        ):
            raise CliError(
                f"--outcomes {path} is the same file as {option}: outcome rows would be "
                "appended to it; give another file"
            )
    if args.numbers in (None, "-") and not (args.csv or args.batch) and _is_stdin(path):
        # `--outcomes in.txt < in.txt`, `- --outcomes /dev/stdin`: the numbers came by
        # stdin, so no name could be compared, and the rows were appended to the file.
        raise CliError(
            f"--outcomes {path} is the same file as stdin, where the numbers come from: "
            "outcome rows would be appended to it; give another file"
        )
    if args.journal:
        # Beside the journal: SQLite removes its -wal as the journal closes, and every
        # outcome line written there with it (exit 0, and no file: a user's trial).
        refuse_journal_file("--outcomes", path, args.journal)


def _valid(source: Source) -> Iterator[Any]:
    """The items that pass the checks (for the estimate)."""
    for _, value in source.open():
        if problem(source, value) is None:
            yield value


def _still_wanted() -> None:
    """In a worker thread reading the input: raise if the command no longer wants it.

    A cancelled task (anyio's check_cancelled); and a Ctrl-C, which is raised in the
    main thread as KeyboardInterrupt and leaves the event loop without cancelling the
    task that waits for the thread, so check_cancelled never saw it: the thread read a
    million lines on to their end, and the process waited for it before exiting.
    """
    anyio.from_thread.check_cancelled()
    if interrupted():
        raise KeyboardInterrupt


async def _estimate(
    client: AisixClient, source: Source, content: str | None, args: Any
) -> Estimate:
    # Messages and rows are streamed into the estimate, not listed: a million rows held
    # 355 MB for it (a user's trial), where the send itself reads them lazily.
    text, recipients, messages, rows = source.template, None, None, None
    if source.mode == "once":
        text = content
        recipients = await anyio.to_thread.run_sync(
            lambda: sum(1 for _ in heeding(_valid(source), _still_wanted))
        )
    elif source.mode == "batch":
        text, messages = None, _valid(source)
    else:
        rows = _valid(source)
    return await client.estimate(
        text,
        recipients=recipients,
        messages=messages,
        rows=rows,
        cgid=args.cgid,
        csid=args.csid,
    )


def _open_stream(
    client: AisixClient,
    source: Source,
    items: Any,
    at: datetime | None,
    args: Any,
    campaign: Campaign | None,
) -> Stream:
    owner: Any = campaign if campaign is not None else client
    # The CLI compared the estimate with the balance itself: the engine cannot, for an
    # input it reads lazily.
    options: dict[str, Any] = {"cgid": args.cgid, "csid": args.csid, "at": at}
    options["check_balance"] = False
    if source.mode == "once":
        if args.chunk_size:
            options["chunk_size"] = args.chunk_size
        stream: Stream = owner.send_many(items, args.content, **options)
    elif source.mode == "batch":
        stream = owner.send_batch_many(items, **options)
    else:
        stream = owner.send_param_many(source.template, items, **options)
    return stream


async def send(ctx: Context) -> int:
    """The ``aisix send`` command."""
    args = ctx.args
    try:
        check_numbering(args.numbering)
    except AisixError as exc:
        raise CliError(f"--numbers {args.numbering}: {exc.message}") from None
    source = attrs.evolve(_source(args), numbering=args.numbering)
    if _password_on_command_line(args.shared_limit):
        # As the authkey is kept off the command line: argv lands in shell history and
        # in `ps` for every user of the machine. Said, not refused: the run is right.
        ctx.out.warn(
            "--shared-limit carries a Redis password, which the command line shows in "
            "shell history and process lists (ps): put the URL in AISIX_SHARED_LIMIT "
            "instead (export it, or load it from a file only you can read)"
        )
    _check_outcomes(args)
    if args.outcomes and _is_stdout(args.outcomes):
        if ctx.out.json_mode:
            raise CliError(
                f"--outcomes {args.outcomes} is this command's stdout, where --json writes "
                "its records: the two would mix; give --outcomes a file, or leave out --json"
            )
        # `--outcomes /dev/stdout | gzip`: the summary went into the CSV; into a file
        # (`> f.txt`), it overwrote the outcome lines (a user's trial). It goes to stderr.
        ctx.out.yield_stdout()
    _check_journal(args)
    content = None
    if args.content:
        try:
            # plain: a --dry-run passed a {p1} that the send then refused.
            content = check_content(args.content, plain=True)
        except ValidationError as exc:
            raise CliError(f"--content: {exc.message}") from None
    at = parse_at(args.at) if args.at else None
    if at is not None:
        try:
            check_at(at)
        except ValidationError as exc:
            raise CliError(f"--at: {exc.message}") from None
    if args.chunk_size and args.chunk_size > 1000:
        raise CliError("--chunk-size: the gateway takes at most 1000 numbers per request")
    if args.chunk_size and source.mode != "once":
        # Ignored silently, a --batch run would not be split the way its operator asked.
        raise CliError(
            "--chunk-size sets the numbers per sendOnce request (--content); a --batch or "
            "--template send takes 100 messages per request"
        )
    if args.resend_unknown and not args.journal:
        raise CliError("--resend-unknown only makes sense with --journal")

    # A person reads the first few bad lines; a script reading --json wants each one (the
    # first 20 only, and a count on stderr, left it without the rest). Bounded still:
    # a file of nothing but bad lines is not held whole in memory.
    keep = 100_000 if ctx.out.json_mode else 20
    checked = await anyio.to_thread.run_sync(
        lambda: check_source(
            source,
            keep=keep,
            duplicates=args.dry_run,
            heed=_still_wanted,  # a Ctrl-C stops it (see heeding)
        )
    )
    invalid = len(checked.problems) + checked.more_problems
    refusal: CliError | None = None
    if invalid:
        show_problems(ctx, source, checked)
        if not args.skip_invalid:
            refusal = CliError(
                f"{invalid} invalid line(s) in {source.description}: "
                + ("a real send would refuse to start; " if args.dry_run else "")
                + "fix them, or add --skip-invalid to send the rest"
            )
            # A dry run goes on to its report, and exits with this error after it.
            if not args.dry_run:
                raise refusal
    if checked.count == 0:
        raise CliError(f"no recipients in {source.description}")

    async with ctx.client(max_concurrency=args.max_concurrency, numbers=args.numbering) as client:
        said = ctx.rate_cache_note(client)
        if said is not None:
            ctx.out.note(said)
        # An empty file is a new journal, as the campaign opens it.
        resuming = bool(args.journal) and await _nonempty(args.journal)
        # A Redis that refuses the URL (a wrong password) is a setting to fix, said before
        # anything is sent: the run went on pacing alone and exited 0 under an
        # "aisix: error:" line. Redis merely down is let be: the send paces itself.
        await client.check_shared_limit()
        await _check_csid(client, args.csid)
        if resuming and args.dry_run:
            await _check_resumable(client, source, checked.count, at, args)
        est: Estimate | None = None
        if args.dry_run or not (args.no_balance_check or resuming):
            est = await _estimate(client, source, content, args)
            if args.dry_run:
                show_estimate(ctx, est, checked, dry=True, at=at)
                if resuming:
                    ctx.out.note(
                        f"resuming {args.journal}: the estimate is the whole input's; a real "
                        "run skips what the journal settled and does not compare the cost "
                        "with the balance"
                    )
                # The code the real run would exit with, so a script can rehearse on it:
                # refused over invalid lines (2) before the balance is compared (4), and
                # lines skipped by --skip-invalid end as failed recipients (1).
                if refusal is not None:
                    raise refusal
                # A resumed run compares nothing with the balance (below): neither does its
                # rehearsal, or it would say 4 for a run that goes ahead.
                if not est.enough and not resuming:
                    return ExitCode.GATEWAY
                return ExitCode.FAILED if invalid else ExitCode.OK
            if not est.enough:
                raise CliError(
                    f"this send would cost {est.cost} yuan "
                    f"({counted(est.total_units, 'unit', 'units')}) but the "
                    f"balance of {client.account} is {est.balance} yuan; nothing was sent "
                    "(--no-balance-check to send anyway)",
                    ExitCode.GATEWAY,
                )
        try:
            return await _run(ctx, client, source, checked.count, at, est)
        except BaseException as raised:
            # The journal counts items from 0; an operator edits lines of a file. (The
            # error may come wrapped by the task groups it crossed.)
            error = leaf_error(raised)
            if not isinstance(error, CampaignError):
                raise
            raise await _journal_refusal(source, error) from None


async def _journal_refusal(source: Source, error: CampaignError) -> CliError:
    """The journal's refusal as the operator reads it: the input's lines, not positions."""
    text = await anyio.to_thread.run_sync(_in_lines, source, error.message)
    return CliError(f"journal: {text}")


async def _check_resumable(
    client: AisixClient, source: Source, total: int, at: datetime | None, args: Any
) -> None:
    """Refuse, as the real run would and writing nothing, a journal it would not resume.

    A dry run said "resuming" and exited 0 where the send then refused (exit 2): a file
    that is not a journal (a mistyped path), a journal of another campaign (another
    content, signature, schedule, chunk size), an input whose recorded length changed.
    The checks are the real run's own; what the send records of its campaign is taken
    from a stream it would open, never entered. (The items of each chunk are checked
    only as the send reaches them: a rehearsal would have to plan every chunk.)
    """
    try:
        async with open_campaign_journal(args.journal) as journal:
            _check_input_size(journal.summary(), total, args.journal)
            unopened = client.campaign(args.journal, resend_unknown=args.resend_unknown)
            stream = _open_stream(client, source, (), at, args, unopened)
            assert isinstance(stream, CampaignStream)
            journal.check_definition(stream.definition)
    except CampaignError as exc:
        raise await _journal_refusal(source, exc) from None


def _check_input_size(known: CampaignSummary, total: int, journal: str) -> None:
    """Refuse an input whose length contradicts what the journal's runs read of it."""
    recorded = known.input_size
    if recorded is None and known.reached > total:
        raise CampaignError(
            f"the input now holds {total:,} items, but an earlier run of the journal "
            f"{journal} read {known.reached:,} of them: the campaign's input "
            "changed (it is shorter); resume with the whole input, or use another "
            "journal file"
        )
    if recorded is not None and recorded != total:
        # Known before anything is sent: said as what changed, not as the first chunk
        # whose recorded positions no longer match (a line appended to a finished
        # run's file was reported at "lines 1-100 (chunk 0)").
        raise CampaignError(
            f"the input now holds {total:,} items, but the journal {journal} "
            f"recorded {recorded:,} when a run read it to its end: the campaign's "
            "input changed; resume with the same input, or use another journal file"
        )


async def _nonempty(path: str) -> bool:
    try:
        return (await anyio.Path(path).stat()).st_size > 0
    except OSError:
        return False


#: "position 7" or "positions 1-5,7-1001": one position, or a chunk's ranges of them.
_POSITIONS = re.compile(r"\bpositions? (\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)")


def _in_lines(source: Source, message: str) -> str:
    """``message`` with the input positions it names given as the input's line numbers."""
    found = [
        (
            match,
            [
                (int(first), int(last or first))
                for first, _, last in (part.partition("-") for part in match.group(1).split(","))
            ],
        )
        for match in _POSITIONS.finditer(message)
    ]
    wanted = {p for _, ranges in found for first, last in ranges for p in (first, last)}
    if not wanted:
        return message
    lines: dict[int, int] = {}
    for position, (line, _) in enumerate(source.open()):
        if position in wanted:
            lines[position] = line
            if len(lines) == len(wanted):
                break
    for match, ranges in reversed(found):
        if any(first not in lines or last not in lines for first, last in ranges):
            continue
        # Every range, not the first alone: a chunk with an invalid line skipped holds
        # two ranges, and only its first was turned into lines ("lines 2-6,6-1000", the
        # second still in positions, one off; a user's trial).
        shown = ",".join(
            f"{lines[first]}" if first == last else f"{lines[first]}-{lines[last]}"
            for first, last in ranges
        )
        single = len(ranges) == 1 and ranges[0][0] == ranges[0][1]
        where = f"line {shown}" if single else f"lines {shown}"
        message = (
            message[: match.start()] + f"{source.description} {where}" + message[match.end() :]
        )
    return message


async def _run(
    ctx: Context,
    client: AisixClient,
    source: Source,
    total: int,
    at: datetime | None,
    est: Estimate | None,
) -> int:
    args, out = ctx.args, ctx.out
    tally = Tally()
    feed = Feed(source, limit=total)
    state: dict[str, int] = {}
    stream: Stream | None = None
    campaign: Campaign | None = None
    outcomes_file: TextIO | None = None
    consumed = 0
    # A file this run writes that failed (--outcomes on a full disk): the send stops as
    # at a first Ctrl-C, and the summary still says what was sent.
    write_failed = anyio.Event()
    # The journal's own error at the stream's end, once it stopped dispatch (it could not
    # record): said under the summary rather than instead of it.
    journal_error: CampaignError | None = None

    # Whether the stream has been entered (it may be opening its journal when a signal
    # comes, or stdout closes), and whether it has ended.
    entered = ended = False

    def ready_to_stop() -> bool:
        if stream is None:
            return True
        if not entered:
            # Nothing dispatched yet; its stats do not exist (read, they raised, and
            # `--json | head` ended in three tracebacks: a user's trial).
            return feed.parked or feed.exhausted
        stats = stream.stats()
        return (feed.parked or feed.exhausted) and stats.in_flight == 0 and (consumed == stats.done)

    if est is not None:
        out.note(
            f"sending to {counted(est.messages, 'recipient', 'recipients')}: about "
            f"{counted(est.total_units, 'unit', 'units')}, "
            f"{est.cost} yuan of {est.balance}"
        )

    async with AsyncExitStack() as stack:
        if args.outcomes:
            outcomes_file = open_outcomes(args.outcomes)

            def close_outcomes() -> None:
                if outcomes_file is None:
                    return  # failed, and said so: its buffer cannot be written either
                try:
                    outcomes_file.close()
                except OSError as exc:
                    out.error(f"--outcomes {args.outcomes}: its last lines were lost ({exc})")
                    # Not a success, however the sends went: a run over before its pipe's
                    # reader was found idle dropped the lines it never took, and exited 0
                    # (a script went on with a short file).
                    write_failed.set()

            stack.callback(close_outcomes)

        def write_lines(text: str) -> None:
            nonlocal outcomes_file
            if outcomes_file is None:
                return
            try:
                # One write a chunk, flushed: after a kill -9, the file lists every recipient
                # of each chunk whose lines it took, none in part.
                outcomes_file.write(text)
                outcomes_file.flush()
            except OSError as exc:
                # Raised from here it ended the run with "usage error; nothing was sent" and
                # no summary, 3,000 recipients charged (a user's trial).
                outcomes_file = None
                out.error(
                    f"--outcomes {args.outcomes}: cannot write it ({exc.strerror or exc}); "
                    "no more requests: the summary counts what was sent, and the file lacks "
                    "the outcomes from here on"
                    + (f" (the journal {args.journal} has them)" if args.journal else "")
                )
                write_failed.set()

        def found(chunk: FoundOnResume) -> None:
            # A chunk a killed run left on the wire: no run wrote its lines, and this one
            # skips it (never resent blindly), so no outcome of it will. Written the moment
            # the journal records its numbers: written as the run ended, a second kill lost
            # them for good, the journal listing them as read (an operator's trial: 11,500
            # of 200,000 lines missing). So are those that reports fetched before this run
            # proved sent: accepted, with no receipt.
            write_lines(found_rows_text(chunk))

        if args.journal:
            campaign = await stack.enter_async_context(
                client.campaign(
                    args.journal,
                    resend_unknown=args.resend_unknown,
                    on_found=found if args.outcomes else None,
                )
            )
            known = campaign.summary()
            _check_input_size(known, total, args.journal)
        group = await stack.enter_async_context(anyio.create_task_group())
        with anyio.CancelScope() as hard:

            def stop_dispatch(reason: str) -> None:
                if stream is not None:
                    stream.stop(reason)

            closed = anyio.Event()
            out.when_stdout_closes(closed.set)
            group.start_soon(
                watch_interrupts,
                ctx, feed, ready_to_stop, hard, state, stop_dispatch, closed, write_failed,
            )  # fmt: skip
            stream = _open_stream(client, source, feed.items(), at, args, campaign)

            def record(outcome: SendOutcome) -> None:
                tally.add(outcome)
                if outcomes_file is not None:
                    write_lines(outcome_rows_text(outcome))
                if out.json_mode:
                    out.emit(outcome_record(outcome))

            title = f"sending ({source.mode})"
            cut_off = 0

            def read() -> Snapshot | None:
                assert stream is not None
                if not entered:
                    return None
                stats = stream.stats()
                # Once the stream has ended, the input a stop left unread is not sent
                # either: the last line counts it, as the summary under it does.
                unread = tally.unread(total, stats.skipped) if ended else 0
                return snapshot(stats, total, tally.not_sent, unread)

            # The progress display outlives the stream: its last line is drawn once the
            # requests a second Ctrl-C cut off on the wire are counted unknown, as the
            # summary under it counts them (not as still in flight).
            async with progress(out, title, read):
                try:
                    async with stream:
                        entered = True
                        async for outcome in stream:
                            record(outcome)
                            consumed += len(outcome.mobiles)
                            # A reader far behind paces the send (the chunks after this
                            # one wait, and so does the input), as a full pipe did, but
                            # with the event loop free: Ctrl-C is heard, and the requests
                            # on the wire are answered and journalled meanwhile.
                            await out.wait_for_reader()
                except CampaignError as exc:
                    # The journal stopped dispatch itself (it could not record): every
                    # outcome came through, so the summary below holds. So it does when
                    # the journal refused a changed input only as the send reached it,
                    # after this run had sent chunks before it: raised, that said "nothing
                    # was sent" (exit 2) with no summary, over recipients just charged (an
                    # operator's trial). A refusal before any request is raised as before.
                    if (
                        not entered
                        or (stream.stopped_by is None and not stream.stats().requests)
                        or _stopped_by_us(state)
                    ):
                        raise
                    journal_error = exc
                finally:
                    # After a second Ctrl-C (``hard`` cancelled, so in a finally): the
                    # requests cut off on the wire, and the rest. (A stream that could
                    # not start, a journal refusing a changed input, has none.)
                    for outcome in stream.abandoned if entered else ():
                        record(outcome)
                        if outcome.status is OutcomeStatus.UNKNOWN:
                            cut_off += len(outcome.mobiles)
                    ended = True
        group.cancel_scope.cancel()
        assert stream is not None
        state["cut_off"] = cut_off
        stats = stream.stats()
        summary = campaign.summary() if campaign is not None else None
    code = finish(ctx, client, tally, stats, total, _stopped_by(stream), state, summary, at=at)
    if feed.grew:
        out.warn(
            f"{source.description} grew while it was sent: only the {total} recipients "
            "checked before sending were read; the lines added since were not sent (send "
            "them as a run of their own"
            + (
                f"; a resume of {args.journal} with the longer file is refused as a changed input)"
                if args.journal
                else ")"
            )
        )
        code = code if code != ExitCode.OK else ExitCode.FAILED
    if journal_error is not None:
        # A changed input is named by the input's lines, as a refusal before sending is.
        text = await anyio.to_thread.run_sync(_in_lines, source, journal_error.message)
        out.error(f"journal: {text}")
    if write_failed.is_set() or journal_error is not None:
        # Not 0 (the run stopped short), and not 2 ("nothing was sent").
        return code if code not in (ExitCode.OK, ExitCode.USAGE) else ExitCode.FAILED
    return code


def _stopped_by_us(state: dict[str, int]) -> bool:
    return bool(state.get("interrupted") or state.get("stdout_closed"))


def _stopped_by(stream: Stream) -> AisixError | None:
    # A stop of our own (Ctrl-C) is not an error to report: the summary says "interrupted".
    stop = stream.stopped_by
    return None if isinstance(stop, SendStoppedError) else stop
