"""The README's config example loads as written (its optional geo file commented out), and its
table of Segment's names for each destination type is the one routing uses."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.config import load_settings
from proxy.destinations import REGISTRY, SEGMENT_NAMES

README = Path(__file__).resolve().parents[1] / "README.md"
ENV = {
    "RELAY_ADMIN_TOKEN": "admin-token-0123456789",
    "BACKEND_WRITE_KEY": "sk_backend_0123456789abcdef",
    "WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "GA4_API_SECRET": "ga4-secret",
}


def test_the_readme_config_example_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    example = next(block for block in blocks if "[destinations.ga4]" in block)
    assert re.search(r"^# city_db = ", example, flags=re.M)  # optional: left out as written
    path = tmp_path / "relay.toml"
    path.write_text(example)
    settings = load_settings(path, ENV)
    assert settings.server.prefix == "/k7q2xz"
    assert [d.name for d in settings.destinations] == ["hook", "ga4"]
    assert settings.policy.server_only_events == ("Order Completed", "Order Refunded")


def test_the_readme_lists_the_segment_names_routing_answers_to() -> None:
    table = README.read_text().split("| type | Segment's names |\n|---|---|\n", 1)[1]
    listed: dict[str, tuple[str, ...]] = {}
    for row in table.split("\n\n", 1)[0].splitlines():
        kinds, names = row.strip("|").split("|")
        for kind in re.findall(r"`([^`]+)`", kinds):
            listed[kind] = tuple(re.findall(r"`([^`]+)`", names))
    assert listed == SEGMENT_NAMES
    assert set(SEGMENT_NAMES) == set(REGISTRY)
