"""Fetch untrusted http(s) URLs safely: scheme and address checks on every hop, size and time limits.

A URL given by a user (an HLS playlist, and every segment, key or redirect it leads to) may point at the
server itself (`http://127.0.0.1:...`, `http://[::ffff:7f00:1]`, `http://2130706433`), at the private network,
at a cloud metadata service (`169.254.169.254`) or at a local file. `check_url` resolves the host and refuses
every address that is not public unicast; `fetch` then connects to exactly the address that was checked (so a
DNS answer that changes between check and connect cannot redirect it), follows redirects by hand with every hop
checked, and stops at a byte limit and a time limit. `SYNCNET_ALLOW_PRIVATE_HOSTS=1` or `allow_private=True`
allows loopback, private and link-local hosts (for local testing); nothing allows `file:` or any other scheme.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from syncnet.errors import NetworkError

log = logging.getLogger(__name__)

ALLOW_PRIVATE_ENV = "SYNCNET_ALLOW_PRIVATE_HOSTS"
SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
MAX_BYTES = 50 * 2**20  # default limit on one response body
TIMEOUT_S = 20.0  # default limit on one fetch, redirects included, from first byte sent to last byte read
MAX_URL_CHARS = 4096
USER_AGENT = "fcn-syncnet"
REDIRECT_CODES = (301, 302, 303, 307, 308)
NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetGuardError(NetworkError):
    """A URL was refused (scheme, address, size, time) or could not be fetched."""


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the checks, with the address to connect to."""

    url: str
    scheme: str
    host: str  # as written in the URL (IPv6 without brackets)
    port: int
    address: str  # the checked IP address the connection must go to


@dataclass
class Response:
    url: str  # the final URL, after redirects
    status: int
    content: bytes
    content_type: str


def private_allowed(allow_private: bool = False) -> bool:
    """True when private hosts are allowed by the argument or by SYNCNET_ALLOW_PRIVATE_HOSTS."""
    return allow_private or os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes")


def address_problem(ip: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why `ip` must not be contacted ("loopback", "private", ...), or None when it may be."""
    ip = _embedded_ipv4(ip)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if allow_private:
        return None
    for kind in ("loopback", "link_local", "reserved", "site_local", "private"):
        if getattr(ip, f"is_{kind}", False):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "non-public"
    return None


def check_url(url: str, *, allow_private: bool = False) -> CheckedURL:
    """Parse `url`, resolve its host and check every address; raise NetGuardError when refused."""
    if not isinstance(url, str) or not url.strip():
        raise NetGuardError("empty URL")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise NetGuardError(f"URL too long ({len(url)} characters, limit {MAX_URL_CHARS})")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise NetGuardError(f"invalid URL {_short(url)}: {e}") from e
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        shown = scheme + ":" if scheme else "(none)"
        raise NetGuardError(f"URL scheme {shown} refused: only http and https are allowed")
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded; IPv6 without brackets
    if not host:
        raise NetGuardError(f"URL has no host: {_short(url)}")
    port = parsed.port or (443 if scheme == "https" else 80)
    allow = private_allowed(allow_private)
    addresses = _resolve(host, port)
    for ip in addresses:
        problem = address_problem(ip, allow_private=allow)
        if problem:
            hint = "" if problem in ("unspecified", "multicast") else f" (set {ALLOW_PRIVATE_ENV}=1 to allow it)"
            shown = host if str(ip) == host else f"{host} ({ip})"
            raise NetGuardError(f"refused to contact {problem} address {shown}{hint}")
    return CheckedURL(url=str(parsed), scheme=scheme, host=host, port=port, address=str(addresses[0]))


def fetch(
    url: str,
    *,
    allow_private: bool = False,
    max_bytes: int = MAX_BYTES,
    timeout_s: float = TIMEOUT_S,
    max_redirects: int = MAX_REDIRECTS,
) -> Response:
    """GET `url` with every hop checked; raise NetGuardError when refused, too large, too slow or not 2xx."""
    with Fetcher(allow_private=allow_private) as fetcher:
        return fetcher.get(url, max_bytes=max_bytes, timeout_s=timeout_s, max_redirects=max_redirects)


class Fetcher:
    """Reuses connections between fetches (one client per checked host and address); use as a context manager."""

    def __init__(self, *, allow_private: bool = False) -> None:
        self.allow_private = allow_private
        self._clients: dict[tuple[str, str, str, int], httpx.Client] = {}

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def get(
        self,
        url: str,
        *,
        max_bytes: int = MAX_BYTES,
        timeout_s: float = TIMEOUT_S,
        max_redirects: int = MAX_REDIRECTS,
    ) -> Response:
        """GET `url` (see `fetch`)."""
        deadline = time.monotonic() + timeout_s
        for _ in range(max_redirects + 1):
            target = check_url(url, allow_private=self.allow_private)
            status, location, content, content_type = self._get_once(target, max_bytes, deadline, timeout_s)
            if location is None:
                if not 200 <= status < 300:
                    raise NetGuardError(f"HTTP {status} {_reason(status)} for {_short(target.url)}")
                return Response(url=target.url, status=status, content=content, content_type=content_type)
            url = urljoin(target.url, location)
            log.debug("redirect %d: %s -> %s", status, target.url, url)
        raise NetGuardError(f"too many redirects (more than {max_redirects}) from {_short(url)}")

    def _client(self, target: CheckedURL) -> httpx.Client:
        key = (target.scheme, target.host, target.address, target.port)
        if key not in self._clients:
            # trust_env=False: no proxies from the environment, no .netrc credentials sent to arbitrary hosts
            self._clients[key] = httpx.Client(follow_redirects=False, trust_env=False)
        return self._clients[key]

    def _get_once(self, target: CheckedURL, max_bytes: int, deadline: float, timeout_s: float):
        """One request to the checked address: (status, redirect location or None, body, content type)."""
        url = httpx.URL(target.url)
        host_header = url.netloc.decode("ascii")
        if "@" in host_header:
            host_header = host_header.rsplit("@", 1)[1]
        pinned = url.copy_with(host=target.address)
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NetGuardError(f"timed out after {timeout_s:g} s fetching {_short(target.url)}")
        headers = {"Host": host_header, "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        client = self._client(target)
        try:
            request = client.build_request(
                "GET", pinned, headers=headers, extensions=extensions, timeout=httpx.Timeout(remaining)
            )
            response = client.send(request, stream=True)
            try:
                if response.status_code in REDIRECT_CODES:
                    location = response.headers.get("location")
                    if not location:
                        raise NetGuardError(
                            f"HTTP {response.status_code} redirect without a Location from {_short(target.url)}"
                        )
                    return response.status_code, location, b"", ""
                if not 200 <= response.status_code < 300:
                    return response.status_code, None, b"", ""
                content = _read_limited(response, target.url, max_bytes, deadline, timeout_s)
                return response.status_code, None, content, response.headers.get("content-type", "")
            finally:
                response.close()
        except httpx.TimeoutException as e:
            raise NetGuardError(f"timed out after {timeout_s:g} s fetching {_short(target.url)}") from e
        except httpx.HTTPError as e:
            raise NetGuardError(f"could not fetch {_short(target.url)}: {type(e).__name__}: {e}") from e


def _read_limited(response: httpx.Response, url: str, max_bytes: int, deadline: float, timeout_s: float) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise NetGuardError(f"response too large: {int(declared)} bytes from {_short(url)} (limit {max_bytes})")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise NetGuardError(f"response too large: over {max_bytes} bytes from {_short(url)}")
        if time.monotonic() > deadline:
            raise NetGuardError(f"timed out after {timeout_s:g} s fetching {_short(url)}")
        chunks.append(chunk)
    return b"".join(chunks)


def _resolve(host: str, port: int) -> list[IPAddress]:
    """All addresses `host` resolves to. Numeric tricks (2130706433, 0x7f.1, 0177.0.0.1) resolve like the C
    library would connect to them, so they are checked as the address they really are."""
    try:
        return [ipaddress.ip_address(host.split("%", 1)[0])]  # a literal IPv4 or IPv6 address, zone id dropped
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise NetGuardError(f"cannot resolve host {host!r}: {e}") from e
    addresses = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise NetGuardError(f"host {host!r} has no address")
    return addresses


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address hidden in an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address, else `ip`."""
    if ip.version == 4:
        return ip
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return ip


def _reason(status: int) -> str:
    try:
        return httpx.codes(status).phrase
    except ValueError:
        return ""


def _short(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."
