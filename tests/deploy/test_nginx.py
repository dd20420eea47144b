"""The nginx snippet, as shipped, inside a full server block: `nginx -t` accepts it, and a request
through a real nginx on loopback reaches the relay with the client's address, not a spoofed one.

Three loopback addresses keep the roles apart: the client connects from 127.0.0.2, nginx connects
to the relay from 127.0.0.3 (the relay's only trusted proxy), everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxy.keys import MONITOR
from proxy.settings import ServerSettings
from tests.admin.conftest import TOKEN, AdminFactory, AdminRelay, eventually
from tests.conftest import WEB_KEY
from tests.ingest.client import basic, track
from tests.relay_process import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PREFIX = "/k7q2xz"
CLIENT, NGINX_HOP = "127.0.0.2", "127.0.0.3"

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")


def site_config(root: Path, port: int, relay_port: int, admin_port: int) -> Path:
    """A whole nginx.conf around the shipped snippet; only its upstream and include path change."""
    headers = DEPLOY / "relay-headers.conf"
    snippet = (DEPLOY / "relay.conf").read_text()
    snippet = snippet.replace("127.0.0.1:8080", f"127.0.0.1:{relay_port}")
    snippet = snippet.replace("/etc/nginx/snippets/relay-headers.conf", str(headers))
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / folder).mkdir(exist_ok=True)
    config = root / "nginx.conf"
    config.write_text(f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        server_name shop.example;
        proxy_bind {NGINX_HOP};
        {snippet}
        # Test only: the admin's client-IP page, behind the same headers as the relay.
        location /relay-admin/ {{
            proxy_pass http://127.0.0.1:{admin_port}/;
            include {headers};
        }}
    }}
}}
""")
    return config


def nginx_test(config: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGINX, "-t", "-p", str(root), "-e", str(root / "error.log"), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nginx_accepts_the_snippet_in_a_server_block(tmp_path: Path) -> None:
    config = site_config(tmp_path, free_port(), free_port(), free_port())
    result = nginx_test(config, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(config.read_text().replace("proxy_pass", "proxy_passs", 1))
    assert nginx_test(broken, tmp_path).returncode != 0  # the check can fail


@pytest.fixture
async def behind_nginx(
    admin_factory: AdminFactory, tmp_path: Path
) -> AsyncIterator[tuple[AdminRelay, str]]:
    trusted = (ipaddress.ip_network(f"{NGINX_HOP}/32"),)
    relay = await admin_factory(server=ServerSettings(prefix=PREFIX, trusted_proxies=trusted))
    relay_port = int(relay.public_url.split(":")[2].split("/")[0])
    admin_port = int(relay.admin_url.rsplit(":", 1)[1])
    port = free_port()
    config = site_config(tmp_path, port, relay_port, admin_port)
    proc = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(config),
        "-g", "daemon off; master_process on;",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def up() -> bool:
                try:
                    async with http.get(f"{url}{PREFIX}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(up, "nginx proxies to the relay")
        yield relay, url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_the_client_ip_arrives_through_nginx(behind_nginx: tuple[AdminRelay, str]) -> None:
    relay, url = behind_nginx
    spoof = {"X-Forwarded-For": "198.51.100.7"}  # what a client may claim; nginx overwrites it
    connector = aiohttp.TCPConnector(local_addr=(CLIENT, 0))
    async with aiohttp.ClientSession(connector=connector) as client:
        headers = {**spoof, "Authorization": basic(WEB_KEY), "Content-Type": "application/json"}
        body = orjson.dumps(track(messageId="via-nginx"))
        async with client.post(f"{url}{PREFIX}/v1/track", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()
        admin_headers = {**spoof, "Authorization": f"Bearer {TOKEN}"}
        async with client.get(f"{url}/relay-admin/ip", headers=admin_headers) as response:
            page = await response.text()
    assert f'id="chosen-ip">{CLIENT}<' in page
    assert "198.51.100.7" not in page  # nginx replaced the client's own header
    seen = relay.public[MONITOR].events[-1].data()
    assert seen["messageId"] == "via-nginx"
    assert seen["context"]["ip"] == CLIENT
