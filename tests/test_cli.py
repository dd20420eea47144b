"""The command line: init's starter and prefix, check-config and serve exits, dead letters."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from proxy.cli import main, parse_since
from proxy.clock import ManualClock
from proxy.config import load_settings
from proxy.destinations import REGISTRY
from proxy.identity.sqlite import SqliteIdentityStore
from proxy.spool.base import Dead, Retry
from proxy.spool.sqlite import SqliteSpool
from proxy.sqlite_files import ServingLock
from proxy.starter import prefix_warnings, random_prefix, starter
from tests.test_config import MINIMAL

ROOT = Path(__file__).resolve().parents[1]
# Words filter lists match in analytics paths (shared/testdata/filterlists/verdicts.md).
AD_BLOCKER_WORDS = (
    "ad", "analytic", "track", "collect", "pixel", "stat", "metric", "gtm", "gtag", "tag",
    "beacon", "event", "log", "telemetry", "segment", "pageview", "insight", "count", "hit",
)  # fmt: skip


def env_for(text: str) -> dict[str, str]:
    """A value for every ${VAR} in the uncommented lines; whsec_ + base64 suits any secret."""
    code = "\n".join(line.split("#")[0] for line in text.splitlines())
    value = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return {name: value for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", code)}


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- init ------------------------------------------------------------------------------------


def test_init_writes_a_starter_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "relay.toml"

    assert main(["init", "--path", str(path)]) == 0

    text = path.read_text(encoding="utf-8")
    env = env_for(text)
    assert set(env) == {"BACKEND_WRITE_KEY", "RELAY_ADMIN_TOKEN"}
    settings = load_settings(path, env)
    web, backend = settings.sources
    assert web.write_key.value.startswith("pk_")
    assert backend.write_key.value == env["BACKEND_WRITE_KEY"]
    assert [d.type for d in settings.destinations] == ["debug"]
    out = capsys.readouterr().out
    printed = re.findall(r"export (BACKEND_WRITE_KEY|RELAY_ADMIN_TOKEN)=(\S+)", out)
    assert [name for name, _ in printed] == ["BACKEND_WRITE_KEY", "RELAY_ADMIN_TOKEN"]
    # People commit their config: the secrets are printed once, never written to the file.
    assert all(value not in text for _, value in printed)
    assert settings.server.prefix in out


def test_init_makes_the_folder_it_is_told_to_write_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sub" / "dir" / "relay.toml"

    assert main(["init", "--path", str(path)]) == 0

    assert path.is_file()
    assert f"Wrote {path}" in capsys.readouterr().out


def test_init_keys_are_fresh_each_time() -> None:
    first, second = starter(), starter()

    assert first.server_key != second.server_key
    assert first.admin_token != second.admin_token
    assert first.text != second.text


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("mine", encoding="utf-8")

    assert main(["init", "--path", str(path)]) == 1
    assert path.read_text(encoding="utf-8") == "mine"
    assert "--force" in capsys.readouterr().err

    assert main(["init", "--path", str(path), "--force"]) == 0
    assert path.read_text(encoding="utf-8") != "mine"


def test_starter_has_an_example_of_every_destination_type() -> None:
    text = starter().text

    for type_name in {*REGISTRY, "webhook", "ga4"}:
        assert re.search(rf'^#? ?type = "{type_name}"( +# .*)?$', text, re.MULTILINE), type_name


@pytest.mark.parametrize("type_name", sorted(set(REGISTRY) - {"debug"}))
def test_each_registered_example_loads_when_uncommented(tmp_path: Path, type_name: str) -> None:
    text = uncomment_block(starter().text, f"# [destinations.{type_name}]")
    path = tmp_path / "relay.toml"
    path.write_text(text, encoding="utf-8")

    settings = load_settings(path, env_for(text))

    assert type_name in [d.type for d in settings.destinations]


def uncomment_block(text: str, header: str) -> str:
    lines = text.splitlines()
    start = lines.index(header)
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    lines[start:end] = [line.removeprefix("# ") for line in lines[start:end]]
    return "\n".join(lines)


def test_generated_prefixes_are_neutral() -> None:
    for _ in range(200):
        prefix = random_prefix()
        segment = prefix.removeprefix("/")
        assert prefix.startswith("/")
        assert re.fullmatch(r"[a-z0-9]{6,9}", segment), prefix
        assert len(segment) != 4
        assert re.search(r"[a-z]", segment), prefix
        assert re.search(r"[0-9]", segment), prefix
        assert not [word for word in AD_BLOCKER_WORDS if word in segment], prefix
        assert not prefix_warnings(prefix)


def test_prefix_warnings() -> None:
    assert prefix_warnings("") == []
    assert prefix_warnings("/k7q2xz") == []
    assert len(prefix_warnings("/abcd")) == 1
    assert prefix_warnings("/shop/abcd") == []
    assert "analytic" in prefix_warnings("/site/analytics")[0]
    assert "metric" in prefix_warnings("/metrics")[0]


# --- check-config and serve (real processes) -------------------------------------------------


def test_check_config_valid(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text(MINIMAL, encoding="utf-8")

    result = run_cli("check-config", "relay.toml", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "relay.toml: valid" in result.stdout
    assert "web (browser: https://shop.example)" in result.stdout
    assert "debug (debug)" in result.stdout
    assert str(tmp_path / "var/spool.sqlite3") in result.stdout


def test_check_config_warns_of_a_proxy_list_that_trusts_everyone(tmp_path: Path) -> None:
    text = '[server]\ntrusted_proxies = ["10.0.0.0/8", "::/0"]\n' + MINIMAL
    (tmp_path / "relay.toml").write_text(text, encoding="utf-8")

    result = run_cli("check-config", "relay.toml", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert "server.trusted_proxies: ::/0 trusts every client's X-Forwarded-For" in warning


def test_check_config_says_that_unanswered_consent_now_refuses(tmp_path: Path) -> None:
    # The default of [privacy] consent_required changed to true: a config written before, with
    # consent on a destination, would stop sending backend events of users without an answer.
    needs = MINIMAL.replace('type = "debug"', 'type = "debug"\nconsent = ["analytics"]')
    assert needs != MINIMAL
    for privacy, warned in (("", True), ("[privacy]\nconsent_required = true\n", False)):
        (tmp_path / "relay.toml").write_text(privacy + needs, encoding="utf-8")
        result = run_cli("check-config", "relay.toml", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        warned_of = "warning: privacy.consent_required is not set" in result.stdout
        assert warned_of is warned, result.stdout
        assert ("destinations: debug)" in result.stdout) is warned
    (tmp_path / "relay.toml").write_text(MINIMAL, encoding="utf-8")  # no destination needs it
    assert "consent_required" not in run_cli("check-config", "relay.toml", cwd=tmp_path).stdout


def test_check_config_takes_config_as_the_other_commands_do(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text(MINIMAL, encoding="utf-8")

    with_option = run_cli("check-config", "--config", "relay.toml", cwd=tmp_path)
    found = run_cli("check-config", cwd=tmp_path)  # ./relay.toml, as serve finds it

    assert with_option.returncode == 0, with_option.stderr
    assert "relay.toml: valid" in with_option.stdout
    assert found.returncode == 0, found.stderr
    assert "relay.toml: valid" in found.stdout
    (tmp_path / "relay.toml").unlink()
    demo = run_cli("check-config", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "the relay would run the demo" in demo.stdout


def test_check_config_prints_every_error(tmp_path: Path) -> None:
    broken = 'timeout_secs = "slow"\n[server]\nlisten = "8080"\n[admin]\ntoken = "${NOPE}"\n'
    text = MINIMAL + broken
    (tmp_path / "relay.toml").write_text(text, encoding="utf-8")

    result = run_cli("check-config", "relay.toml", cwd=tmp_path, env={"NOPE": ""})

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "relay.toml is not valid (3 errors):"
    assert lines[1:] == [
        '  server.listen: expected "host:port", got "8080"',
        "  admin.token: environment variable NOPE is set but empty",
        '  destinations.debug.timeout_secs: expected a number, got "slow"',
    ]


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = run_cli("check-config", "nope.toml", cwd=tmp_path)

    assert result.returncode == 1
    # A relative path is taken from where the command runs: the message says which file that is.
    expected = f"nope.toml: cannot read the file (No such file or directory, looked for {tmp_path}"
    assert expected in result.stderr


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[server]\nlisten = "8080"\n', encoding="utf-8")

    result = run_cli("serve", "--config", "bad.toml", cwd=tmp_path)

    assert result.returncode == 2
    assert 'server.listen: expected "host:port", got "8080"' in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()  # no spool was opened


def test_serve_uses_relay_toml_in_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text("[spool]\nmax_bytes = 0\n", encoding="utf-8")

    result = run_cli("serve", cwd=tmp_path)

    assert result.returncode == 2
    assert "spool.max_bytes: must be greater than 0, got 0" in result.stderr


# --- dead letters and replay -----------------------------------------------------------------


def make_dead_letters(path: Path) -> None:
    async def fill() -> None:
        spool = await SqliteSpool.open(path, max_bytes=10**9, destinations=["debug"])
        events = [
            orjson.dumps({"type": "track", "event": "E", "messageId": f"m-{n}"}) for n in (1, 2)
        ]
        await spool.append(events)
        claimed = await spool.claim("debug", 10, 0.0)
        await spool.settle(
            "debug",
            done=[claimed[1].id],
            dead=[Dead(claimed[0].id, "dead:http_400", '{"error":\n"bad"}')],
        )
        await spool.close()

    asyncio.run(fill())


def test_dead_letters_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(MINIMAL, encoding="utf-8")
    make_dead_letters(tmp_path / "var/spool.sqlite3")

    assert main(["dead-letters", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "debug: 1 dead letter" in out
    assert re.search(
        r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  m-1  dead:http_400  \{"error": "bad"\}', out
    )

    assert main(["replay", "debug", "--config", str(config), "--since", "1h"]) == 0
    assert "Put 1 dead letter(s) of debug" in capsys.readouterr().out

    assert main(["dead-letters", "--config", str(config), "--destination", "debug"]) == 0
    assert capsys.readouterr().out.strip() == "debug: no dead letters"


def test_maintenance_commands_run_without_the_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # systemd keeps the secrets in a root-only file: an operator's shell has none of them.
    monkeypatch.delenv("RELAY_ADMIN_TOKEN", raising=False)
    config = tmp_path / "relay.toml"
    config.write_text(MINIMAL + '[admin]\ntoken = "${RELAY_ADMIN_TOKEN}"\n', encoding="utf-8")
    make_dead_letters(tmp_path / "var/spool.sqlite3")

    assert main(["dead-letters", "--config", str(config)]) == 0
    assert "debug: 1 dead letter" in capsys.readouterr().out
    assert main(["replay", "debug", "--config", str(config)]) == 0
    assert "Put 1 dead letter(s) of debug" in capsys.readouterr().out

    # The commands that use them still say what is missing.
    assert main(["test-destination", "debug", "--config", str(config)]) == 2
    assert main(["check-config", str(config)]) == 1
    expected = "admin.token: environment variable RELAY_ADMIN_TOKEN is not set"
    assert capsys.readouterr().err.count(expected) == 2


def test_dead_letters_are_listed_oldest_failure_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(MINIMAL, encoding="utf-8")

    async def fill() -> None:
        clock = ManualClock()
        spool = await SqliteSpool.open(
            tmp_path / "var/spool.sqlite3", max_bytes=10**9, destinations=["debug"], clock=clock
        )
        await spool.append([orjson.dumps({"messageId": f"m-{n}"}) for n in (1, 2)])
        first, second = await spool.claim("debug", 10, clock.now())
        await spool.settle("debug", dead=[Dead(second.id, "dead:http_400", "")])
        clock.advance(60)  # the earlier event failed later (a retry ran out, say)
        await spool.settle("debug", dead=[Dead(first.id, "dead:max_attempts", "")])
        await spool.close()

    asyncio.run(fill())
    assert main(["dead-letters", "--config", str(config)]) == 0
    listed = re.findall(r"  (m-\d)  ", capsys.readouterr().out)
    assert listed == ["m-2", "m-1"]


def test_replay_unknown_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(MINIMAL, encoding="utf-8")

    assert main(["replay", "debgu", "--config", str(config)]) == 2
    assert 'unknown destination "debgu" (configured: debug)' in capsys.readouterr().err


def strand_dead_letters(path: Path) -> None:
    """A spool where "hook", since removed from the config, left two dead letters and a retry."""

    async def fill() -> None:
        clock = ManualClock()
        spool = await SqliteSpool.open(
            path, max_bytes=10**9, destinations=["debug", "hook"], clock=clock
        )
        await spool.append([orjson.dumps({"messageId": f"m-{n}"}) for n in (1, 2, 3)])
        first, second, third = await spool.claim("hook", 10, clock.now())
        await spool.settle("hook", dead=[Dead(first.id, "dead:http_410", "gone")])
        clock.advance(7200)
        await spool.settle(
            "hook",
            dead=[Dead(second.id, "dead:http_410", "gone")],
            retry=[Retry(third.id, clock.now() + 60, "http_500")],
        )
        await spool.close()

    asyncio.run(fill())


def test_a_removed_destinations_dead_letters_are_listed_and_discarded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(MINIMAL, encoding="utf-8")
    strand_dead_letters(tmp_path / "var/spool.sqlite3")

    assert main(["dead-letters", "--config", str(config), "--destination", "hook"]) == 0
    assert "hook: 2 dead letters" in capsys.readouterr().out

    assert main(["replay", "hook", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert 'unknown destination "hook" (configured: debug)' in err
    assert "hook is no longer in the config: to deliver what it left, add" in err
    assert "[destinations.hook] back and replay" in err
    assert "python -m proxy discard hook" in err

    assert main(["discard", "hok", "--config", str(config)]) == 2
    assert 'unknown destination "hok" (configured: debug; the spool also holds: hook)' in (
        capsys.readouterr().err
    )

    # The one that failed earlier stays; with it, so does the rest of what hook left.
    since = "2026-01-01T01:00:00Z"  # between the two failures (ManualClock's start + 1 h)
    assert main(["discard", "hook", "--config", str(config), "--since", since]) == 0
    out = capsys.readouterr().out
    assert out == "Discarded 1 dead letter(s) of hook that failed since 2026-01-01 01:00:00Z.\n"
    assert main(["discard", "hook", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Discarded 1 dead letter(s) of hook." in out
    assert "hook is not in the config: the spool keeps nothing more for it (1 waiting retry" in out
    assert main(["dead-letters", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "debug: no dead letters"
    assert main(["dead-letters", "--config", str(config), "--destination", "hook"]) == 2


def test_discard_of_a_configured_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(MINIMAL, encoding="utf-8")
    assert main(["discard", "debug", "--config", str(config)]) == 0
    assert "No spool yet" in capsys.readouterr().out
    make_dead_letters(tmp_path / "var/spool.sqlite3")
    assert main(["discard", "debug", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "Discarded 1 dead letter(s) of debug.\n"
    assert main(["dead-letters", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "debug: no dead letters"


def test_dead_letters_without_a_spool_creates_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(MINIMAL, encoding="utf-8")

    assert main(["dead-letters", "--config", str(config)]) == 0
    assert "No spool yet" in capsys.readouterr().out
    assert not (tmp_path / "var").exists()


def test_check_config_names_a_keep_traits_that_is_not_a_bool(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text(
        MINIMAL + '[identity]\nkeep_traits = "no"\n', encoding="utf-8"
    )
    result = run_cli("check-config", "relay.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert '  identity.keep_traits: expected true or false, got "no"' in result.stderr.splitlines()
    (tmp_path / "relay.toml").write_text(
        MINIMAL + "[identity]\nkeep_traits = false\n", encoding="utf-8"
    )
    assert load_settings(tmp_path / "relay.toml").identity.keep_traits is False


def test_forget_deletes_what_the_identity_store_keeps_of_a_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(MINIMAL, encoding="utf-8")
    assert main(["forget", "u-1", "--config", str(config)]) == 0
    assert "No identity store yet" in capsys.readouterr().out
    assert not (tmp_path / "var").exists()

    settings = load_settings(config)

    async def fill() -> None:
        store = await SqliteIdentityStore.open(settings.spool.path, settings.identity)
        now = time.time()
        email = {"traits": {"email": "ada@example.com"}}
        store.remember(["u:u-1", "a:a-1"], {**email, "deviceId": "dev-1"}, now)
        store.remember(["d:dev-1"], {"ip": "203.0.113.7", "deviceId": "dev-1"}, now)
        store.remember(["u:u-2"], {"traits": {"email": "bob@example.com"}}, now)
        await store.close()

    asyncio.run(fill())
    forget = ["forget", "u-1", "--anonymous-id", "a-1", "--anonymous-id", "a-9"]
    # A serving relay would go on lending from its memory what is deleted under it.
    lock = ServingLock.take(Path(settings.spool.path))
    try:
        assert main([*forget, "--config", str(config)]) == 1
        assert "stop the relay first" in capsys.readouterr().err
    finally:
        lock.release()

    assert main([*forget, "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "removed      userId u-1",
        "removed      anonymousId a-1",
        "none stored  anonymousId a-9",
        "removed      device id dev-1",
    ]
    assert main(["forget", "u-2", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == ["removed      userId u-2"]
    assert main(["forget", "u-1", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == ["none stored  userId u-1"]


def test_forget_runs_without_the_redis_package(tmp_path: Path) -> None:
    # `pip install .` leaves out the redis extra; forget imported it at the top of its module.
    config = tmp_path / "relay.toml"
    config.write_text(MINIMAL, encoding="utf-8")
    script = "import sys; sys.modules['redis'] = None; from proxy.cli import main; "
    script += "sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", script, "forget", "u-1", "--config", str(config)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert "nothing to forget" in run.stdout


def test_parse_since() -> None:
    now = 1_767_225_600.0

    assert parse_since("30m", now) == now - 1800
    assert parse_since("1h30m", now) == now - 5400
    assert parse_since("7d", now) == now - 7 * 86400
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert parse_since("2026-01-02T03:04:05Z", now) == moment
    assert parse_since("2026-01-02T03:04:05", now) == moment  # naive means UTC
    with pytest.raises(ValueError, match="neither an ISO-8601 time nor a duration"):
        parse_since("yesterday", now)


def test_what_the_machine_refuses_is_a_line_not_a_traceback(tmp_path: Path) -> None:
    # A fuzzing helper's finds: each of these printed a traceback before.
    (tmp_path / "folder").mkdir()
    config = tmp_path / "relay.toml"
    config.write_text(f'[spool]\npath = "{tmp_path / "folder"}"\n', encoding="utf-8")
    served = run_cli("serve", "--config", str(config), cwd=tmp_path)
    assert served.returncode == 1
    # SQLite's message names no file: the line does, as the config may point anywhere.
    folder = tmp_path / "folder"
    assert served.stderr.strip().endswith(f"error: {folder}: unable to open database file")

    not_a_spool = tmp_path / "spool.sqlite3"
    not_a_spool.write_text("not a database\n" * 100, encoding="utf-8")
    config.write_text(f'[spool]\npath = "{not_a_spool}"\n{MINIMAL}', encoding="utf-8")
    for command in ("dead-letters", "serve"):
        run = run_cli(command, "--config", str(config), cwd=tmp_path)
        assert run.returncode == 1
        assert run.stderr.strip().endswith(f"error: {not_a_spool}: file is not a database")

    (tmp_path / "taken").write_text("", encoding="utf-8")  # a file where a folder should be
    init = run_cli("init", "--path", str(tmp_path / "taken" / "relay.toml"), cwd=tmp_path)
    assert init.returncode == 1
    assert init.stderr.startswith("error: ")
    assert "Traceback" not in init.stderr


def test_a_since_out_of_the_range_of_dates_is_refused_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="out of the range of dates"):
        parse_since("99999999999d", 1_767_225_600.0)
    with pytest.raises(ValueError, match="out of the range of dates"):
        parse_since("9999-12-31T23:59:59-23:59", 1_767_225_600.0)
