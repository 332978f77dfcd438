"""Where the dashboard may listen: ``--serve [HOST:]PORT`` parsed and checked (loopback
unless ``--serve-public``), aiohttp's presence, and which requests the server refuses."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_HOST",
    "PUBLIC_HOST",
    "ServeAddress",
    "ServeError",
    "ServeUnavailableError",
    "parse_address",
    "refusal",
    "require_aiohttp",
    "serve_option",
]

DEFAULT_HOST = "127.0.0.1"
PUBLIC_HOST = "0.0.0.0"
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]{1,253}$")


class ServeError(OSError):
    """The dashboard could not listen (port in use, host not local, permission)."""


class ServeUnavailableError(ImportError):
    """``--serve`` without aiohttp installed."""


def require_aiohttp() -> None:
    """Raise :class:`ServeUnavailableError` (one line) when aiohttp is not installed."""
    if importlib.util.find_spec("aiohttp") is None:
        raise ServeUnavailableError(
            "--serve needs aiohttp, which is not installed: pip install 'anyecg-edge[serve]'"
        )


@dataclass(frozen=True)
class ServeAddress:
    host: str
    port: int  # 0: any free port (the one taken is printed)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a name: only 'localhost' is known to stay on this machine
            return False

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def parse_address(text: str, *, public: bool = False) -> ServeAddress:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> :class:`ServeAddress`. Without a host:
    127.0.0.1 (0.0.0.0 with ``public``). A host other than loopback needs ``public``.
    Raises ValueError with the reason (the CLI turns it into a usage error)."""
    text = text.strip()
    m = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[^:]*)", text)
    if m:
        host = m.group("v6") or m.group("host")
        port_text = m.group("port")
    else:
        host, port_text = "", text
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(
            f"expected [HOST:]PORT with PORT a whole number 0-65535 (0: any free port), got {text!r}"
        )
    if not host:
        host = PUBLIC_HOST if public else DEFAULT_HOST
    elif not _HOST_RE.match(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    address = ServeAddress(host, int(port_text))
    if not address.loopback and not public:
        raise ValueError(
            f"{host} is reachable from other machines and the page has no password: "
            "add --serve-public to serve on it (default host: 127.0.0.1)"
        )
    return address


def serve_option(text: str | None, public: bool) -> ServeAddress | None:
    """``stream --serve TEXT [--serve-public]`` checked when the line is parsed: a usage
    error for a malformed address, a non-local host without --serve-public or
    --serve-public alone; a one-line error when aiohttp is missing."""
    import click

    if text is None:
        if public:
            raise click.UsageError("--serve-public applies with --serve [HOST:]PORT")
        return None
    try:
        address = parse_address(text, public=public)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--serve'") from None
    require_aiohttp()
    return address


_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}


def refusal(host: str, origin: str | None, address: ServeAddress) -> str | None:
    """Why a request is refused, or None. On loopback only requests naming this machine
    (a DNS-rebound name would reach the page otherwise); WebSockets only from this page's
    own origin (browsers let any site open a WebSocket to 127.0.0.1)."""
    name = urlsplit(f"//{host}").hostname or ""
    if address.loopback and not (name in _LOCAL_NAMES or name.startswith("127.")):
        return f"this dashboard answers to 127.0.0.1/localhost only, not {host!r}"
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return "cross-origin request refused"
    return None
