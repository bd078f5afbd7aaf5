"""The browser client: static files shipped in the package, served at ``/``.

No build step and no CDN: the node serves ``index.html``, ``app.js`` and
``app.css`` from ``chinwag.node/static`` so a LAN with no internet still gets
a working chat page. The files are read once, at start-up.
"""

from __future__ import annotations

from importlib import resources

from .http_api import HttpApi, HttpRequest, HttpResponse

#: Everything the page loads comes from this node; the socket is same-origin.
#: ``blob:`` images: attachments are fetched with the session token and shown
#: through object URLs (node/static/files.js), never by a URL with a token.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: URL path -> (file in static/, content type).
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/view.js": ("view.js", "text/javascript; charset=utf-8"),
    "/view.css": ("view.css", "text/css; charset=utf-8"),
    "/notify.js": ("notify.js", "text/javascript; charset=utf-8"),
    "/files.js": ("files.js", "text/javascript; charset=utf-8"),
    "/actions.js": ("actions.js", "text/javascript; charset=utf-8"),
    "/actions.css": ("actions.css", "text/css; charset=utf-8"),
    "/signals.js": ("signals.js", "text/javascript; charset=utf-8"),
}


class WebClient:
    """Answers GET for the client's files with a strict content security policy."""

    def __init__(self) -> None:
        static = resources.files("chinwag.node").joinpath("static")
        self._files = {
            path: (static.joinpath(name).read_bytes(), content_type)
            for path, (name, content_type) in STATIC_FILES.items()
        }

    def register_routes(self, api: HttpApi) -> None:
        for path in self._files:
            api.add_route("GET", path, self.serve)

    async def serve(self, request: HttpRequest) -> HttpResponse:
        body, content_type = self._files[request.path]
        return HttpResponse(
            200,
            body,
            content_type=content_type,
            headers=[
                ("content-security-policy", CONTENT_SECURITY_POLICY),
                ("referrer-policy", "no-referrer"),
            ],
        )
