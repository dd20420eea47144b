"""Ad-block filter lists (EasyList, EasyPrivacy, uBlock filters - Privacy) in adblock-rust.

Answers "would a visitor's blocker cancel this request?" for the relay's own URLs. The relay does
not ship the lists (GPL / CC BY-SA, megabytes): `--lists` or RELAY_FILTER_LISTS point at them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import adblock

LISTS_ENV = "RELAY_FILTER_LISTS"
# Where a checkout of the project finds the test copies: shared/ beside the repository.
CHECKOUT_LISTS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "filterlists"
# The request types adblock-rust knows that the relay's URLs can be fetched as.
REQUEST_TYPES = frozenset({"script", "xmlhttprequest", "ping", "image", "document", "other"})


@dataclass(frozen=True, slots=True)
class Block:
    rule: str  # the filter as written in its list
    list_name: str  # the file it came from ("" if no list holds it verbatim)


class Blocklists:
    """Every list in one engine, as a browser extension loads them: an `@@` exception in one list
    cancels a block from another. The lists' text is kept to name the list behind a rule."""

    def __init__(self, engine: adblock.Engine, texts: dict[str, str]) -> None:
        self._engine = engine
        self._texts = texts

    @classmethod
    def load(cls, paths: Sequence[Path]) -> Blocklists:
        """Lists in ABP/uBO "standard" syntax; OSError if a file cannot be read."""
        filters = adblock.FilterSet(debug=True)  # debug keeps the rule text for answers
        texts: dict[str, str] = {}
        for path in paths:
            text = path.read_text(encoding="utf-8")
            # Redirect rules (`$redirect=`) block too: the browser gets a stub instead of the file.
            filters.add_filter_list(text, format="standard", include_redirect_urls=True)
            texts[path.name] = "\n" + text.replace("\r\n", "\n") + "\n"
        return cls(adblock.Engine(filters, optimize=False), texts)

    @property
    def names(self) -> list[str]:
        return list(self._texts)

    def check(self, url: str, source_url: str, request_type: str) -> str | None:
        """The rule that blocks `url` fetched as `request_type` from a page at `source_url`."""
        block = self.find(url, source_url, request_type)
        return block.rule if block is not None else None

    def find(self, url: str, source_url: str, request_type: str) -> Block | None:
        """Like `check`, with the list the rule comes from; None when allowed (or excepted)."""
        if request_type not in REQUEST_TYPES:
            raise ValueError(f"unknown request type {request_type!r}")
        result = self._engine.check_network_urls(url, source_url, request_type)
        if not result.matched or result.filter is None:
            return None
        rule = result.filter
        line = f"\n{rule}\n"
        return Block(rule, next((name for name, text in self._texts.items() if line in text), ""))


def lists_dir(configured: str | None = None) -> Path:
    """Where to read the lists: `configured`, else $RELAY_FILTER_LISTS, else the checkout's."""
    chosen = configured or os.environ.get(LISTS_ENV)
    return Path(chosen) if chosen else CHECKOUT_LISTS


def list_files(folder: Path) -> list[Path]:
    """The `*.txt` filter lists in `folder`, by name; [] when there are none (or no folder)."""
    return sorted(folder.glob("*.txt")) if folder.is_dir() else []
