"""The `lymph view` HTTP server: stdlib ``ThreadingHTTPServer``, bound to 127.0.0.1 unless told
otherwise, GET and HEAD only.

Every URL is matched against fixed patterns; a slide id is looked up among the ids discovery
gave, a static file among the packaged files: no part of a URL is ever joined to a path, so
``..``, ``%2e%2e``, absolute paths and encoded slashes name nothing (404). Tile numbers must be
plain decimal integers of at most 6 digits (400) inside the slide's pyramid (404).

URLs: ``/`` (the page), ``/static/...``, ``/data/site.js`` and ``/data/slides/<id>.js`` (what the
page loads), ``/api/slides.json`` and ``/api/slides/<id>.json`` (the same data as JSON; its
parts alone at ``/api/slides/<id>/{info,detections,truth,suggestions}.json``),
``/tiles/<id>/slide.dzi``, ``/tiles/<id>/slide_files/<level>/<col>_<row>.jpeg``,
``/tiles/<id>/map_t<NN>.dzi``, ``/tiles/<id>/map_t<NN>_files/<level>/<col>_<row>.png``
(``NN``: threshold percent, 00..90 in steps of 10).
"""

from __future__ import annotations

import errno
import json
import re
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from lymph.data.errors import ConfigError, LymphError
from lymph.model.view.catalog import Catalog, ViewConfig
from lymph.model.view.site import CONTENT_TYPES, NotFound, Site
from lymph.model.view.tiles import TileError

_TILE = re.compile(r"^/tiles/([^/]+)/([^/]+)_files/([^/]*)/([^/_]*)_([^/_]*)\.(jpeg|png)$")
_DZI = re.compile(r"^/tiles/([^/]+)/([^/]+)\.dzi$")
_SLIDE_JS = re.compile(r"^/data/slides/([^/]+)\.js$")
_SLIDE_JSON = re.compile(r"^/api/slides/([^/]+)\.json$")
_PART_JSON = re.compile(r"^/api/slides/([^/]+)/(info|detections|truth|suggestions)\.json$")
_NUMBER = re.compile(r"^[0-9]{1,6}$")
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "style-src 'self' 'unsafe-inline'; object-src 'none'; "
                               "frame-ancestors 'none'",
}


class BadRequest(ValueError):
    """A malformed request (400)."""


def _number(text: str, what: str) -> int:
    if not _NUMBER.match(text):
        raise BadRequest(f"{what} {text[:20]!r} is not a non-negative integer (at most 6 "
                         "digits)")
    return int(text)


class Handler(BaseHTTPRequestHandler):
    server_version = "lymph-view"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # headers and body go out as two writes: with Nagle on, the body waits for the client's
    # delayed ACK (40 ms measured on every tile, cached or not)
    disable_nagle_algorithm = True
    timeout = 120  # an idle keep-alive connection gives its thread back after 2 minutes
    site: Site

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._respond(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(head=True)

    def _respond(self, *, head: bool) -> None:
        try:
            path = unquote(urlsplit(self.path).path, errors="strict")
            status, ctype, body, cache = HTTPStatus.OK, *self._route(path)
        except (NotFound, TileError) as exc:
            status, ctype, body, cache = HTTPStatus.NOT_FOUND, *_text(f"not found: {exc}")
        except (BadRequest, UnicodeDecodeError) as exc:
            status, ctype, body, cache = HTTPStatus.BAD_REQUEST, *_text(f"bad request: {exc}")
        except (LymphError, OSError) as exc:  # a slide that fails to read there
            status, ctype, body, cache = (HTTPStatus.INTERNAL_SERVER_ERROR,
                                          *_text(f"cannot read: {str(exc)[:300]}"))
        except Exception as exc:  # a bug: one line on the console, the server goes on
            print(f"lymph view: {self.path[:200]!r}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            status, ctype, body, cache = (HTTPStatus.INTERNAL_SERVER_ERROR,
                                          *_text(f"internal error ({type(exc).__name__})"))
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache)
            for key, value in _SECURITY_HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser moved on (OpenSeadragon cancels tiles when zooming)

    def _route(self, path: str) -> tuple[str, bytes, str]:
        site = self.site
        if path in ("/", "/index.html"):
            return _file(site.static["static/index.html"])
        if path.startswith("/static/"):
            f = site.static.get(path[1:])
            if f is None:
                raise NotFound(path[:100])
            return _file(f, cache="max-age=3600")
        if path == "/data/site.js":
            return CONTENT_TYPES[".js"], site.site_js(mode="server").encode(), "no-cache"
        if path == "/api/slides.json":
            return _json(site.catalog.site())
        if m := _SLIDE_JS.match(path):
            return CONTENT_TYPES[".js"], site.slide_js(m[1]).encode(), "no-cache"
        if m := _SLIDE_JSON.match(path):
            return _json(site.slide_json(m[1]))
        if m := _PART_JSON.match(path):
            return _json(site.slide_json(m[1])[m[2]])
        if m := _TILE.match(path):
            sid, layer, ext = m[1], m[2], m[6]
            level, col, row = (_number(m[i], w) for i, w in ((3, "level"), (4, "column"),
                                                             (5, "row")))
            if ext != ("jpeg" if layer == "slide" else "png"):
                raise NotFound(f"{layer} tiles are {'jpeg' if layer == 'slide' else 'png'}")
            data = site.tile(sid, layer, level, col, row)
            return CONTENT_TYPES["." + ext], data, "max-age=300"
        if m := _DZI.match(path):
            return CONTENT_TYPES[".dzi"], site.dzi(m[1], m[2]).encode(), "no-cache"
        raise NotFound(path[:100])

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # no per-request log (a slide view asks for hundreds of tiles); bugs print above


def _text(message: str) -> tuple[str, bytes, str]:
    return "text/plain; charset=utf-8", (message + "\n").encode(), "no-store"


def _json(data: Any) -> tuple[str, bytes, str]:
    return CONTENT_TYPES[".json"], json.dumps(data, allow_nan=False).encode(), "no-cache"


def _file(path: Any, *, cache: str = "no-cache") -> tuple[str, bytes, str]:
    return CONTENT_TYPES.get(path.suffix, "application/octet-stream"), path.read_bytes(), cache


class ViewServer:
    """A running (or ready) server over one site; ``url`` is where it listens."""

    def __init__(self, site: Site, *, host: str = "127.0.0.1", port: int = 8000) -> None:
        handler = type("BoundHandler", (Handler,), {"site": site})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port {port} on {host} is in use (another lymph view?); "
                                  "pass another --port, or 0 for any free one") from None
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc}); use "
                              "127.0.0.1 or 0.0.0.0") from None
        self.httpd.daemon_threads = True
        self.site = site
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        address, port = self.httpd.server_address[:2]
        host = str(address)  # typeshed allows bytes; a TCPServer's host is a str
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def start(self) -> ViewServer:
        """Serve in a background thread (tests, the bench)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
        self.site.catalog.close()


def make_server(config: ViewConfig) -> ViewServer:
    """A server over `config`'s slides, FROC counts computed in a background thread."""
    catalog = Catalog(config)
    site = Site(catalog, cache_bytes=config.cache_mb << 20)
    server = ViewServer(site, host=config.host, port=config.port)
    threading.Thread(target=catalog.compute_froc, daemon=True).start()
    return server


def _echo_problems(problems: list[str]) -> None:
    """The catalog's problems (unreadable files, a damaged S_predict.json) on stderr as well
    as in the page: a served or exported viewer is often opened long after this prints."""
    import click

    for problem in problems:
        click.echo(f"lymph view: warning: {problem}", err=True)


def run(config: ViewConfig) -> None:
    """`lymph view`: serve until Ctrl-C, or write the static site when ``config.export``."""
    import click

    if config.export is not None:
        from lymph.model.view.export import export_site

        summary = export_site(config)
        click.echo(f"wrote {summary['tiles']} tiles of {summary['slides']} slide(s) to "
                   f"{config.export}; open {config.export / 'index.html'} in a browser")
        _echo_problems(summary["problems"])
        return
    server = make_server(config)
    catalog = server.site.catalog
    n_bad = sum(e.error is not None for e in catalog.entries.values())
    click.echo(f"lymph view: {len(catalog.entries)} slide(s)"
               + (f" ({n_bad} unreadable, listed with the cause)" if n_bad else "")
               + f" at {server.url}  (Ctrl-C to stop)")
    _echo_problems(catalog.problems)
    if config.host in ("127.0.0.1", "localhost", "::1"):
        port = server.httpd.server_address[1]
        click.echo(f"  from another machine: ssh -L {port}:127.0.0.1:{port} <this host>, then "
                   f"open http://127.0.0.1:{port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("lymph view: stopped")
    finally:
        server.httpd.server_close()
        catalog.close()
