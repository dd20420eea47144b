"""The ad-block check: Blocklists agrees with shared verdicts, starter paths stay clean, and
`python -m proxy paths` names the rule that blocks a path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.blocklists import Block, Blocklists, list_files
from proxy.cli import main
from proxy.config import load_settings
from proxy.public_paths import PublicPath, check_paths, public_paths, report
from proxy.starter import starter
from tests.shared_data import shared_dir
from tests.test_cli import env_for

SHOP = "https://shop.example.com"


@pytest.fixture(scope="module")
def lists_folder() -> Path:
    return shared_dir("testdata", "filterlists")


@pytest.fixture(scope="module")
def blocklists(lists_folder: Path) -> Blocklists:
    return Blocklists.load(list_files(lists_folder))


@pytest.fixture(scope="module")
def verdicts(lists_folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((lists_folder / "verdicts.json").read_text())["rows"]
    return rows


def verdict(rows: list[dict[str, Any]], url: str, request_type: str) -> dict[str, Any]:
    found = [row for row in rows if row["url"] == url and row["request_type"] == request_type]
    assert len(found) == 1, (url, request_type)
    combined: dict[str, Any] = found[0]["combined"]
    return combined


def words(text: str) -> list[str]:
    """The report's lines with runs of spaces made one, so tests need not count padding."""
    return [" ".join(line.split()) for line in text.splitlines()]


def test_every_shared_verdict_holds(blocklists: Blocklists, verdicts: list[dict[str, Any]]) -> None:
    wrong = []
    for row in verdicts:
        rule = blocklists.check(row["url"], row["source_url"], row["request_type"])
        expected = row["combined"].get("rule_adblock_rust")
        if rule != expected:
            wrong.append((row["url"], row["request_type"], rule, expected))
    assert wrong == []
    assert len(verdicts) == 288


def test_starter_configs_have_clean_public_paths(blocklists: Blocklists, tmp_path: Path) -> None:
    for attempt in range(12):
        result = starter()
        config = tmp_path / f"relay{attempt}.toml"
        config.write_text(result.text)
        settings = load_settings(config, env_for(result.text))
        paths = public_paths(settings)
        # The snippet's script and event endpoint, and the Segment API, are all among them.
        for expected in (
            PublicPath(f"{result.prefix}/s.js", ("script",)),
            PublicPath(f"{result.prefix}/e", ("xmlhttprequest", "ping")),
            PublicPath(f"{result.prefix}/v1/batch", ("xmlhttprequest", "ping")),
        ):
            assert expected in paths
        checks = check_paths(blocklists, paths)
        assert [c for c in checks if c.block is not None] == [], result.prefix


def test_known_blocked_paths_are_reported_with_their_rule(
    blocklists: Blocklists, verdicts: list[dict[str, Any]]
) -> None:
    paths = [
        PublicPath("/collect?v=2&tid=G-XYZ", ("xmlhttprequest", "ping")),
        PublicPath("/metrics", ("script", "xmlhttprequest")),
    ]
    checks = check_paths(blocklists, paths, SHOP)
    collect_rule = verdict(verdicts, f"{SHOP}/collect?v=1&tid=UA-1-1&cid=555", "ping")
    metrics_rule = verdict(verdicts, f"{SHOP}/metrics", "script")
    assert [check.block for check in checks] == [
        Block(collect_rule["rule_adblock_rust"], "easyprivacy.txt"),
        Block(collect_rule["rule_adblock_rust"], "easyprivacy.txt"),
        Block(metrics_rule["rule_adblock_rust"], "ublock-privacy.txt"),
        None,  # uBO's rule is for scripts only
    ]
    assert not verdict(verdicts, f"{SHOP}/metrics", "xmlhttprequest")["blocked"]
    lines = words(report(checks))
    rule = metrics_rule["rule_adblock_rust"]
    assert f"{SHOP}/metrics script BLOCKED by {rule} (ublock-privacy.txt)" in lines
    assert f"{SHOP}/metrics xmlhttprequest allowed" in lines


def test_paths_command_on_a_starter_config(
    lists_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    result = starter()
    config = tmp_path / "relay.toml"
    config.write_text(result.text)
    for name, value in env_for(result.text).items():
        monkeypatch.setenv(name, value)
    assert main(["paths", "--config", str(config), "--lists", str(lists_folder)]) == 0
    out = capsys.readouterr().out
    assert f"https://www.example.com{result.prefix}/v1/t " in out
    last = out.splitlines()[-1]
    assert last.startswith("All "), last
    assert last.endswith(" allowed."), last


def test_exceptions_allow_and_the_exit_code_says_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """No shared data needed: a tiny list of our own, with an @@ exception in another file."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "block.txt").write_text("! a test list\n/v1/\n")
    (lists / "allow.txt").write_text("@@/v1/t$xmlhttprequest\n")
    blocklists = Blocklists.load(list_files(lists))
    page = "https://www.example.com/"
    assert blocklists.check(page + "v1/t", page, "xmlhttprequest") is None
    assert blocklists.check(page + "v1/t", page, "ping") == "/v1/"
    assert blocklists.find(page + "v1/b", page, "ping") == Block("/v1/", "block.txt")
    monkeypatch.setenv("RELAY_FILTER_LISTS", str(lists))
    monkeypatch.chdir(tmp_path)  # no relay.toml here: the demo's routes
    assert main(["paths"]) == 1
    lines = words(capsys.readouterr().out)
    assert "https://www.example.com/v1/batch ping BLOCKED by /v1/ (block.txt)" in lines
    assert "https://www.example.com/v1/t xmlhttprequest allowed" in lines
    assert "https://www.example.com/s.js script allowed" in lines
    assert lines[-1].endswith(" blocked: change the prefix or the route names.")


def test_paths_without_lists_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["paths", "--lists", str(tmp_path)]) == 2
    assert f"No filter lists (*.txt) in {tmp_path}" in capsys.readouterr().err
