"""URL checks and the guarded fetch: schemes, address tricks, redirects, size and time limits."""

import ipaddress
import time

import pytest

from syncnet import netguard
from syncnet.netguard import NetGuardError, check_url, fetch
from tests.hls_server import TestServer

REFUSED_SCHEMES = [
    "file:///etc/passwd",
    "FILE:///etc/passwd",
    "ftp://example.com/x.m3u8",
    "gopher://example.com/",
    "data:application/vnd.apple.mpegurl;base64,I0VYVE0zVQ==",
    "javascript:alert(1)",
    "/etc/passwd",
    "../secret.ts",
    "C:\\Windows\\win.ini",
    "concat:/etc/passwd|/etc/hosts",
    "subfile,,start,0,end,0,,:/etc/passwd",
]

REFUSED_ADDRESSES = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.8.9.10:8080/x", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://2130706433/", "loopback"),  # decimal 127.0.0.1
    ("http://0x7f000001/", "loopback"),  # hex
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://0177.0.0.1/", "(loopback|invalid)"),  # octal: refused either way
    ("http://127.1/", "loopback"),  # short form
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),  # NAT64
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata service
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://100.64.0.1/", "non-public"),  # carrier-grade NAT
    ("http://240.0.0.1/", "reserved"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("https://user:secret@127.0.0.1:8443/x", "loopback"),
]


@pytest.fixture(autouse=True)
def no_env_allowance(monkeypatch):
    monkeypatch.delenv(netguard.ALLOW_PRIVATE_ENV, raising=False)


@pytest.mark.parametrize("url", REFUSED_SCHEMES)
def test_only_http_and_https(url):
    with pytest.raises(NetGuardError, match="scheme|invalid URL|no host"):
        check_url(url)
    with pytest.raises(NetGuardError):
        check_url(url, allow_private=True)  # nothing allows another scheme


@pytest.mark.parametrize("url,kind", REFUSED_ADDRESSES)
def test_private_addresses_refused(url, kind):
    with pytest.raises(NetGuardError, match=f"refused to contact {kind} address|invalid URL.*IPv4"):
        check_url(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/a.m3u8", "http://[::1]/", "http://10.1.2.3/",
                                 "http://localhost/x", "http://169.254.1.1/"])
def test_private_allowed_by_argument_and_environment(url, monkeypatch):
    assert check_url(url, allow_private=True).address
    with pytest.raises(NetGuardError, match="SYNCNET_ALLOW_PRIVATE_HOSTS=1"):
        check_url(url)
    monkeypatch.setenv(netguard.ALLOW_PRIVATE_ENV, "1")
    assert check_url(url).address


@pytest.mark.parametrize("url", ["http://0.0.0.0/", "http://224.0.0.1/"])
def test_unspecified_and_multicast_never_allowed(url):
    with pytest.raises(NetGuardError, match="unspecified|multicast"):
        check_url(url, allow_private=True)


def test_public_addresses_pass():
    checked = check_url("https://8.8.8.8/live/index.m3u8")
    assert (checked.scheme, checked.host, checked.port, checked.address) == ("https", "8.8.8.8", 443, "8.8.8.8")
    assert check_url("http://[2606:4700:4700::1111]:8080/x").address == "2606:4700:4700::1111"


def test_every_resolved_address_is_checked(monkeypatch):
    public, private = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")
    monkeypatch.setattr(netguard, "_resolve", lambda host, port: [public, private])
    with pytest.raises(NetGuardError, match=r"private address mixed\.example \(10\.0\.0\.7\)"):
        check_url("http://mixed.example/")


def test_unresolvable_host():
    with pytest.raises(NetGuardError, match="cannot resolve host"):
        check_url("http://no-such-host.invalid/x.m3u8")


@pytest.fixture
def server():
    with TestServer() as s:
        s.add_bytes("/ok", b"hello", content_type="text/plain")
        yield s


def test_fetch_and_404(server):
    response = fetch(server.url("/ok"), allow_private=True)
    assert (response.status, response.content, response.content_type) == (200, b"hello", "text/plain")
    with pytest.raises(NetGuardError, match=r"HTTP 404 Not Found for http://127\.0\.0\.1:\d+/missing"):
        fetch(server.url("/missing"), allow_private=True)
    with pytest.raises(NetGuardError, match="loopback"):
        fetch(server.url("/ok"))
    assert server.requests == ["/ok", "/missing"]  # the refused fetch never connected


def test_redirects_followed_and_checked(server, monkeypatch):
    server.add_redirect("/hop1", "/hop2", 301)
    server.add_redirect("/hop2", server.url("/ok"), 307)
    assert fetch(server.url("/hop1"), allow_private=True).content == b"hello"
    server.add_redirect("/to-file", "file:///etc/passwd")
    with pytest.raises(NetGuardError, match="scheme file: refused"):
        fetch(server.url("/to-file"), allow_private=True)
    server.add_redirect("/loop", "/loop")
    with pytest.raises(NetGuardError, match="too many redirects"):
        fetch(server.url("/loop"), allow_private=True)

    # A "public" server (the test server, let through by a patched check) redirecting to private addresses.
    real = netguard.address_problem
    monkeypatch.setattr(netguard, "address_problem", lambda ip, allow_private=False:
                        None if str(ip) == "127.0.0.1" else real(ip, allow_private=allow_private))
    for target in ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", f"http://[::1]:{server.port}/ok",
                   f"http://127.0.0.2:{server.port}/ok"]:
        server.add_redirect("/evil", target)
        server.requests.clear()
        with pytest.raises(NetGuardError, match="refused to contact"):
            fetch(server.url("/evil"))
        assert server.requests == ["/evil"]


def test_connects_to_the_checked_address(server, monkeypatch):
    """DNS rebinding: the connection goes to the address that was checked, with the original Host header."""
    monkeypatch.setattr(netguard, "_resolve", lambda host, port: [ipaddress.ip_address("127.0.0.1")])
    response = fetch(f"http://stream.example:{server.port}/ok", allow_private=True)
    assert response.content == b"hello"
    assert server.headers[-1]["Host"] == f"stream.example:{server.port}"
    assert response.url == f"http://stream.example:{server.port}/ok"


def test_size_limits(server):
    server.add_bytes("/big", bytes(200_000))
    with pytest.raises(NetGuardError, match="response too large: 200000 bytes"):  # refused from Content-Length
        fetch(server.url("/big"), allow_private=True, max_bytes=100_000)
    server.add_endless("/endless")
    t0 = time.monotonic()
    with pytest.raises(NetGuardError, match="response too large: over 1048576 bytes"):
        fetch(server.url("/endless"), allow_private=True, max_bytes=2**20)
    server.add_endless("/liar", declare_length=10)  # claims 10 bytes, sends more: only 10 are read
    assert fetch(server.url("/liar"), allow_private=True, max_bytes=2**20).content == bytes(10)
    assert time.monotonic() - t0 < 10


@pytest.mark.slow
def test_slow_body_stopped_by_time_limit(server):
    server.add_slow("/slow", bytes(1000), delay_s=0.1)  # would take 100 s
    t0 = time.monotonic()
    with pytest.raises(NetGuardError, match="timed out after 1.5 s"):
        fetch(server.url("/slow"), allow_private=True, timeout_s=1.5)
    assert time.monotonic() - t0 < 3
