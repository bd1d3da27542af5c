"""The security headers every answer carries, and the Content-Security-Policy of the two HTML pages.

API answers are JSON that no browser should render, frame or sniff, so their policy allows nothing.
The chat page runs only its own inline script and style, allowed by their sha256 hashes, which are
computed from the page as served (an edited page cannot leave a stale hash): HTML that slipped into
model text through the Markdown renderer still could not run a script or load anything.
"""

from __future__ import annotations

import base64
import hashlib
import re

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = ((b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"))
SWAGGER_CDN = "https://cdn.jsdelivr.net"  # where FastAPI's /docs page loads Swagger UI from
SWAGGER_ICON = "https://fastapi.tiangolo.com"


def chat_page_policy(html: str) -> str:
    """The chat page's policy: its inline script and style, calls to this server, nothing else."""
    return (f"default-src 'none'; script-src {inline_hashes(html, 'script')}; "
            f"style-src {inline_hashes(html, 'style')}; connect-src 'self'; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'none'")


def swagger_policy(html: str) -> str:
    """/docs: Swagger UI from its CDN and its inline start-up script; Swagger UI sets inline styles and
    draws its icons from data: URLs, which only this page allows."""
    return (f"default-src 'none'; script-src {SWAGGER_CDN} {inline_hashes(html, 'script')}; "
            f"style-src {SWAGGER_CDN} 'unsafe-inline'; img-src {SWAGGER_ICON} data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def inline_hashes(html: str, tag: str) -> str:
    """CSP sources allowing `html`'s inline `<script>` or `<style>` elements (those without attributes)."""
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
                    for body in bodies) or "'none'"
