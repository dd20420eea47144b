"""`python -m proxy`: serve, check-config, init, paths, dead-letters, replay, discard,
test-destination, forget.

Commands that need a config take --config FILE, else ./relay.toml if present, else the demo.
An invalid config stops every command before it touches anything, with each error on its line;
an unset secret only stops the commands that use secrets (serve, test-destination).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from proxy.admin.masking import mask_url
from proxy.config import ConfigError, demo_settings, load_settings
from proxy.roles import Role, role_problem
from proxy.settings import Settings, SpoolBackend
from proxy.spool import open_spool
from proxy.spool.base import DeadLetter, Spool, SpoolUnavailable
from proxy.sqlite_files import SpoolInUse
from proxy.starter import config_warnings, write_starter

DEFAULT_CONFIG = Path("relay.toml")
EXIT_INVALID = 2  # bad usage or an invalid config, as argparse does for bad arguments


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except (OSError, UnicodeError, sqlite3.Error, SpoolUnavailable) as error:
        # What the machine refuses (a spool path that cannot be opened, a file that is not a
        # spool, a port taken, Redis away): a line that says so, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxy", description="A first-party relay for analytics events."
    )
    parser.set_defaults(command=_serve, config=None, role=Role.ALL.value)  # no command: serve
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    config_help = f"the config file (default: ./{DEFAULT_CONFIG} if present, else the demo)"

    serve = commands.add_parser("serve", help="run the relay (the default command)")
    serve.add_argument("--config", metavar="FILE", help=config_help)
    serve.add_argument(
        "--role",
        choices=[role.value for role in Role],
        default=Role.ALL.value,
        help="ingest: take events, deliver none; deliver: deliver, take none; all (default): both."
        " Separate roles need the Redis spool",
    )
    serve.set_defaults(command=_serve)

    check = commands.add_parser("check-config", help="validate a config file and summarise it")
    check.add_argument("file", metavar="FILE", nargs="?", help="the same as --config FILE")
    check.add_argument("--config", metavar="FILE", help=config_help)
    check.set_defaults(command=_check_config)

    init = commands.add_parser("init", help="write a starter config with fresh keys")
    init.add_argument("--path", default=str(DEFAULT_CONFIG), help="where (default: relay.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(command=_init)

    paths = commands.add_parser(
        "paths", help="check the public paths against ad-block filter lists (EasyPrivacy ...)"
    )
    paths.add_argument("--config", metavar="FILE", help=config_help)
    paths.add_argument(
        "--lists",
        metavar="DIR",
        help="a folder of *.txt filter lists (default: $RELAY_FILTER_LISTS, else the checkout's"
        " ../shared/testdata/filterlists); the relay does not ship them",
    )
    paths.add_argument(
        "--origin", metavar="URL", help="the site (default: https://www.example.com)"
    )
    paths.set_defaults(command=_paths)

    dead = commands.add_parser("dead-letters", help="list the events destinations gave up on")
    dead.add_argument("--config", metavar="FILE", help=config_help)
    dead.add_argument("--destination", metavar="NAME", help="only this destination")
    dead.set_defaults(command=_dead_letters)

    # replay and discard: a destination's dead letters, all or those that failed since WHEN.
    for name, run, what in (
        ("replay", _replay, "put a destination's dead letters back in line"),
        (
            "discard",
            _discard,
            "delete a destination's dead letters (also one removed from the config)",
        ),
    ):
        letters = commands.add_parser(name, help=what)
        letters.add_argument("destination", metavar="DESTINATION")
        letters.add_argument("--config", metavar="FILE", help=config_help)
        letters.add_argument(
            "--since",
            metavar="WHEN",
            type=_since_argument,
            help="only those that failed since WHEN: ISO-8601 (UTC unless it says) or 30m, 2h, 7d",
        )
        letters.set_defaults(command=run)

    forget = commands.add_parser(
        "forget", help="delete what the relay remembers of a user (the right to erasure)"
    )
    forget.add_argument("user_id", metavar="USER_ID")
    forget.add_argument(
        "--anonymous-id",
        action="append",
        default=[],
        metavar="ID",
        help="also this anonymousId's profile (repeat for more); the devices the user and these"
        " were last seen on go too",
    )
    forget.add_argument("--config", metavar="FILE", help=config_help)
    forget.set_defaults(command=_forget)

    test = commands.add_parser("test-destination", help="send a test event to one destination")
    test.add_argument("name", metavar="NAME")
    test.add_argument("--config", metavar="FILE", help=config_help)
    test.set_defaults(command=_test_destination)
    return parser


# --- commands -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args.config, announce=True, need_secrets=True)
    if settings is None:
        return EXIT_INVALID
    role = Role(args.role)
    problem = role_problem(settings, role)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    for warning in config_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    # Imported here: the server pulls in the whole app, which the other commands don't need.
    from proxy.enrich import GeoDatabaseError
    from proxy.serve import run

    try:
        run(settings, role)
    except GeoDatabaseError as error:  # opened at start: a broken file stops it, before the spool
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    return 0


def _check_config(args: argparse.Namespace) -> int:
    if args.file is not None and args.config is not None and args.file != args.config:
        print("error: give the config file once (FILE or --config FILE)", file=sys.stderr)
        return EXIT_INVALID
    config = args.config or args.file
    if config is None and not DEFAULT_CONFIG.is_file():
        print(f"No config file (./{DEFAULT_CONFIG}): the relay would run the demo.")
        print(_summary(demo_settings(Path.cwd())))
        return 0
    path = config or str(DEFAULT_CONFIG)
    try:
        settings = load_settings(path)
    except ConfigError as error:
        _print_errors(path, error)
        return 1
    print(f"{path}: valid")
    print(_summary(settings))
    for warning in config_warnings(settings):
        print(f"warning: {warning}")
    return 0


def _init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    try:
        result = write_starter(path, force=args.force)
    except FileExistsError as error:
        if Path(error.filename) != path:  # a file where its folder should be: main() says so
            raise
        print(f"{path} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    print(f"Wrote {path} (public routes under {result.prefix}).")
    print("It names its secrets but holds none: before starting, export (shown only now):")
    print(f"  export BACKEND_WRITE_KEY={result.server_key}")
    print(f"  export RELAY_ADMIN_TOKEN={result.admin_token}")
    print("Then put your site's origin in [sources.web] and run:")
    print(f"  python -m proxy serve --config {path}")
    return 0


def _paths(args: argparse.Namespace) -> int:
    from proxy.blocklists import Blocklists, list_files, lists_dir
    from proxy.public_paths import SAMPLE_ORIGIN, check_paths, public_paths, report

    settings = _settings(args.config)
    if settings is None:
        return EXIT_INVALID
    folder = lists_dir(args.lists)
    files = list_files(folder)
    if not files:
        print(f"No filter lists (*.txt) in {folder}: pass --lists DIR.", file=sys.stderr)
        return EXIT_INVALID
    origin = args.origin or SAMPLE_ORIGIN
    checks = check_paths(Blocklists.load(files), public_paths(settings), origin)
    print(f"Public URLs on {origin}, checked against {', '.join(f.name for f in files)}:")
    print(report(checks))
    return 1 if any(check.block is not None for check in checks) else 0


def _dead_letters(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if settings is None:
        return EXIT_INVALID
    if not _spool_exists(settings):
        if not _known_destination(settings, args.destination):
            return EXIT_INVALID
        print(f"No spool yet at {settings.spool.path}: nothing has failed.")
        return 0
    letters = asyncio.run(_read_dead_letters(settings, args.destination))
    if letters is None:
        return EXIT_INVALID
    names = [args.destination] if args.destination else [d.name for d in settings.destinations]
    names += sorted({letter.destination for letter in letters} - set(names))  # removed since
    for name in names:
        mine = [letter for letter in letters if letter.destination == name]
        print(_dead_letter_report(name, mine))
    return 0


def _replay(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if settings is None:
        return EXIT_INVALID
    name = args.destination
    if not _configured(settings, name):
        held = asyncio.run(_held_names(settings)) if _spool_exists(settings) else []
        _known_destination(settings, name, [n for n in held if n != name])
        if name in held:  # replayed, its events would wait for a worker that never runs
            print(
                f"  {name} is no longer in the config: to deliver what it left, add"
                f" [destinations.{name}] back and replay; to delete it: python -m proxy"
                f" discard {name}",
                file=sys.stderr,
            )
        return EXIT_INVALID
    if not _spool_exists(settings):
        print(f"No spool yet at {settings.spool.path}: nothing to replay.")
        return 0
    count = asyncio.run(_replay_dead_letters(settings, args.destination, args.since))
    since = f" that failed since {_when(args.since)}" if args.since is not None else ""
    print(f"Put {count} dead letter(s) of {args.destination}{since} back in line.")
    return 0


def _discard(args: argparse.Namespace) -> int:
    """Like replay, it runs beside the relay (both only change rows the relay reads each time),
    but for the place of a destination no longer configured: on SQLite that waits for the relay
    to stop, whose config may still deliver it."""
    settings = _settings(args.config)
    if settings is None:
        return EXIT_INVALID
    name = args.destination
    if not _spool_exists(settings):
        if not _known_destination(settings, name):
            return EXIT_INVALID
        print(f"No spool yet at {settings.spool.path}: nothing to discard.")
        return 0
    try:
        done = asyncio.run(_discard_dead_letters(settings, name, args.since))
    except SpoolInUse:  # said why: the relay serves the file
        return 1
    if done is None:
        return EXIT_INVALID
    count, dropped = done
    since = f" that failed since {_when(args.since)}" if args.since is not None else ""
    print(f"Discarded {count} dead letter(s) of {name}{since}.")
    if dropped is not None:
        print(
            f"{name} is not in the config: the spool keeps nothing more for it"
            f" ({dropped} waiting retr{'y' if dropped == 1 else 'ies'} dropped with it)."
        )
    return 0


def _forget(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if settings is None:
        return EXIT_INVALID
    from proxy.identity.forget import IdentityStoreInUse, NoIdentityStore, forget

    try:
        removed = asyncio.run(forget(settings, args.user_id, args.anonymous_id))
    except NoIdentityStore as error:
        print(f"{error}: nothing to forget.")
        return 0
    except IdentityStoreInUse as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    named = [f"u:{args.user_id}", *(f"a:{anonymous}" for anonymous in args.anonymous_id)]
    for key in dict.fromkeys([*named, *removed]):
        print(f"{'removed' if key in removed else 'none stored':<13}{_profile_name(key)}")
    return 0


def _profile_name(key: str) -> str:
    kind = {"u:": "userId", "a:": "anonymousId", "d:": "device id"}[key[:2]]
    return f"{kind} {key[2:]}"


def _test_destination(args: argparse.Namespace) -> int:
    settings = _settings(args.config, need_secrets=True)
    if settings is None or not _known_destination(settings, args.name):
        return EXIT_INVALID
    from proxy.destinations.validate import test_destination

    ok, text = asyncio.run(test_destination(settings, args.name))
    print(text)
    return 0 if ok else 1


# --- helpers --------------------------------------------------------------------------------


def _settings(
    config: str | None, announce: bool = False, need_secrets: bool = False
) -> Settings | None:
    """The settings to run with, or None after printing why the config is invalid.

    Only serve and test-destination use secrets; the maintenance commands run without them (an
    operator's shell may not have what systemd keeps in a root-only file): `need_secrets`.
    """
    if config is None and not DEFAULT_CONFIG.is_file():
        if announce:
            print("No config file: running the demo (see `python -m proxy init`).", file=sys.stderr)
        return demo_settings(Path.cwd())
    path = DEFAULT_CONFIG if config is None else Path(config)
    try:
        settings = load_settings(path, need_secrets=need_secrets)
    except ConfigError as error:
        _print_errors(str(path), error)
        return None
    if announce:
        print(f"Using {path}.", file=sys.stderr)
    return settings


def _print_errors(path: str, error: ConfigError) -> None:
    count = len(error.errors)
    print(f"{path} is not valid ({count} error{'s' if count != 1 else ''}):", file=sys.stderr)
    for line in error.errors:
        print(f"  {line}", file=sys.stderr)


def _configured(settings: Settings, name: str | None) -> bool:
    return name is None or any(d.name == name for d in settings.destinations)


def _known_destination(settings: Settings, name: str | None, held: Sequence[str] = ()) -> bool:
    """Whether `name` is configured or among `held`, the names the spool keeps anything for
    (dead letters of a destination since removed from the config); if not, says so."""
    if _configured(settings, name) or name in held:
        return True
    names = [destination.name for destination in settings.destinations]
    removed = sorted(set(held) - set(names))
    also = f"; the spool also holds: {', '.join(removed)}" if removed else ""
    print(f'unknown destination "{name}" (configured: {", ".join(names)}{also})', file=sys.stderr)
    return False


def _summary(settings: Settings) -> str:
    server, spool = settings.server, settings.spool
    sources = ", ".join(
        f"{source.name} ({source.kind}{': ' + ' '.join(source.origins) if source.origins else ''})"
        for source in settings.sources
    )
    destinations = ", ".join(f"{d.name} ({d.type})" for d in settings.destinations)
    # A Redis URL may carry a password (redis://:secret@host): print it without one.
    where = spool.path if spool.backend is SpoolBackend.SQLITE else mask_url(spool.redis_url)
    rows = [
        (
            "listen",
            f"{_address(server.listen_host, server.listen_port)}, prefix {server.prefix or '/'}",
        ),
        ("admin", _address(settings.admin.listen_host, settings.admin.listen_port)),
        ("sources", sources or "none: no events can come in"),
        ("destinations", destinations or "none: events are only stored"),
        ("spool", f"{spool.backend} {where}, cap {spool.max_bytes / 1e9:g} GB"),
    ]
    return "\n".join(f"  {label:<13} {value}" for label, value in rows)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _spool_exists(settings: Settings) -> bool:
    """False when the SQLite file is missing: reading dead letters should not create a spool."""
    return settings.spool.backend is not SpoolBackend.SQLITE or Path(settings.spool.path).exists()


async def _in_spool(spool: Spool, settings: Settings, name: str | None) -> bool:
    """Whether `name` is configured, or kept in the spool (removed from the config since); if
    not, says so."""
    if _configured(settings, name):
        return True
    return _known_destination(settings, name, list(await spool.destinations_held()))


async def _held_names(settings: Settings) -> list[str]:
    spool = await open_spool(settings.spool)
    try:
        return list(await spool.destinations_held())
    finally:
        await spool.close()


async def _read_dead_letters(
    settings: Settings, destination: str | None
) -> list[DeadLetter] | None:
    """None (after saying why) for a destination neither configured nor in the spool."""
    spool = await open_spool(settings.spool)
    try:
        if not await _in_spool(spool, settings, destination):
            return None
        return await spool.dead_letters(destination)
    finally:
        await spool.close()


async def _discard_dead_letters(
    settings: Settings, destination: str, since: float | None
) -> tuple[int, int | None] | None:
    """How many dead letters went and, for a destination no longer configured that has none
    left, how many retries went with the rest of what the spool kept for it. None (after saying
    why) for a destination neither configured nor in the spool."""
    spool = await open_spool(settings.spool)
    try:
        if not await _in_spool(spool, settings, destination):
            return None
        configured = _configured(settings, destination)
        count = await spool.discard(destination, since=since)
        if configured or await spool.dead_letter_count(destination):
            return count, None
        try:
            return count, await spool.drop(destination)
        except SpoolInUse as error:
            print(f"Discarded {count} dead letter(s) of {destination}.")
            print(
                f"error: its retries and backlog stay until the relay is stopped and discard runs"
                f" again ({error})",
                file=sys.stderr,
            )
            raise
    finally:
        await spool.close()


async def _replay_dead_letters(settings: Settings, destination: str, since: float | None) -> int:
    spool = await open_spool(settings.spool)
    try:
        return await spool.replay(destination, since)
    finally:
        await spool.close()


def _dead_letter_report(name: str, letters: list[DeadLetter]) -> str:
    if not letters:
        return f"{name}: no dead letters"
    lines = [f"{name}: {len(letters)} dead letter{'s' if len(letters) != 1 else ''}"]
    for letter in sorted(letters, key=lambda letter: letter.failed_at):  # oldest first
        response = " ".join(letter.response.split())
        response = response if len(response) <= 80 else response[:77] + "..."
        lines.append(
            f"  {_when(letter.failed_at)}  {letter.message_id}  {letter.reason}  {response}"
        )
    return "\n".join(line.rstrip() for line in lines)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


_DURATION = re.compile(r"(?:\d+[smhdw])+")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """Epoch seconds from "2026-01-02T03:04:05Z" (naive means UTC) or a duration back from `now`."""
    text = text.strip()
    if _DURATION.fullmatch(text):
        amounts = re.findall(r"(\d+)([smhdw])", text)
        since = now - sum(int(amount) * _UNIT_SECS[unit] for amount, unit in amounts)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f'"{text}" is neither an ISO-8601 time nor a duration such as 30m, 2h or 7d'
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        since = moment.timestamp()
    try:
        _when(since)  # what the report prints: refused here, before anything is replayed
    except (OverflowError, OSError, ValueError):
        raise ValueError(f'"{text}" is out of the range of dates') from None
    return since


def _since_argument(text: str) -> float:
    try:
        return parse_since(text, time.time())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
