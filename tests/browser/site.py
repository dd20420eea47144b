"""The local "website" of the browser tests: shop pages served beside the relay on its origin (as a
site mounts the relay under a path of its own domain), and a second origin to leave to.

Every shop page installs the snippet with `install_tag`, the very tag README tells users to paste.
"""

from __future__ import annotations

from html import escape

from aiohttp import web

from proxy.ingest.snippet import install_tag

SHOP_PATH = "/shop/"
VENDOR_PATH = "/shop/vendor"  # the shop page that also talks to Google directly, as gtag would
GA_ID = "G-TEST1"
# Straight to the vendor, as a page with gtag.js does it (EasyPrivacy blocks both hosts).
VENDOR_TAGS = f"""<script async src="https://www.googletagmanager.com/gtag/js?id={GA_ID}"
  onload="document.title += ' gtag-loaded'" onerror="window.gtagFailed = true"></script>
<script>
window.vendorHit = fetch("https://www.google-analytics.com/g/collect?v=2&tid={GA_ID}&cid=1.2&en=page_view",
  {{method: "POST", mode: "no-cors", keepalive: true}}).then(() => "sent", () => "failed");
</script>"""
SHOP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shop</title>
{tag}
{vendor}
</head><body>
<h1>Shop</h1>
<a id="out" href="{leave}">Leave the shop</a>
<button id="buy" type="button">Add to cart</button>
<script>
// A track in a link's click handler, then the browser navigates away at once.
document.getElementById("out").addEventListener("click", function () {{
  analytics.track("Outbound Link Clicked", {{n: new URLSearchParams(location.search).get("n")}});
}});
document.getElementById("buy").addEventListener("click", function () {{
  analytics.track("Product Added", {{sku: "p-1"}});
}});
</script>
</body></html>
"""


def shop_routes(write_key: str, prefix: str, leave_url: str) -> list[web.RouteDef]:
    """The shop's pages; `leave_url` is where its outbound link goes (another origin)."""
    tag = install_tag(write_key, prefix)
    leave = escape(leave_url)

    async def shop(request: web.Request) -> web.Response:
        return _html(SHOP_PAGE.format(tag=tag, vendor="", leave=leave))

    async def vendor(request: web.Request) -> web.Response:
        return _html(SHOP_PAGE.format(tag=tag, vendor=VENDOR_TAGS, leave=leave))

    return [web.get(SHOP_PATH, shop), web.get(VENDOR_PATH, vendor)]


def other_origin_app() -> web.Application:
    """Another site: `/bye` (a tiny page to land on) and `/go?to=URL` (a link to URL, to arrive
    at the shop with a cross-origin referrer)."""

    async def bye(request: web.Request) -> web.Response:
        return _html("<!doctype html><title>bye</title><p>bye</p>")

    async def go(request: web.Request) -> web.Response:
        to = escape(request.query["to"])
        return _html(f'<!doctype html><title>ad</title><a id="go" href="{to}">Visit the shop</a>')

    app = web.Application()
    app.add_routes([web.get("/bye", bye), web.get("/go", go)])
    return app


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html")
