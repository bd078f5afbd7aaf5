"""Devices over TLS (--tls-cert/--tls-key), and federation with a TLS node."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chinwag.cli.exitcodes import Exit
from chinwag.node.client import ClientError, connect, http_json, login, signup

from .procs import run_cli
from .test_federation import drain, linked

PASSWORD = "pw-tls-secret"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as a LAN admin would make one."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chinwag test node")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    cert, key = self_signed(tmp_path)
    # Clients trust this certificate the standard way (OpenSSL's SSL_CERT_FILE).
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return cert, key


async def test_devices_talk_https_and_wss(start_node, tls_files) -> None:
    cert, key = tls_files
    node = await start_node(tls_cert=cert, tls_key=key)
    assert node.url.startswith("https://127.0.0.1:")
    await signup(node.url, "alice", PASSWORD)
    result = await login(node.url, "alice", PASSWORD, "laptop")
    async with connect(node.url, result.token) as client:
        await client.sync(0)
        ack = await client.send("alice", "over tls")
        frames = await drain(client, 1)
        assert frames[0]["id"] == ack.id and frames[0]["body"]["text"] == "over tls"

    # Plain HTTP to the TLS port fails for that client only.
    plain = node.url.replace("https://", "http://")
    with pytest.raises(ClientError):
        await http_json(plain, "GET", "/.well-known/chinwag", timeout=5)
    status, info = await http_json(node.url, "GET", "/.well-known/chinwag")
    assert status == 200 and info["name"] == node.running.identity.name


async def test_an_untrusted_certificate_is_refused_by_clients(
    start_node, tls_files, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert, key = tls_files
    node = await start_node(tls_cert=cert, tls_key=key)
    (tmp_path / "other").mkdir()  # a different certificate
    other, _ = self_signed(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    with pytest.raises(ClientError) as info:
        await http_json(node.url, "GET", "/.well-known/chinwag", timeout=5)
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.message
    with pytest.raises(ClientError):
        async with connect(node.url, "any-token", timeout=1):  # trio-websocket: a timeout
            pass


async def test_federation_links_to_a_tls_node(start_node, tls_files) -> None:
    """Peers dial https without checking the certificate: the link handshake
    proves the pinned key and seals every frame (docs/protocol.md §10)."""
    cert, key = tls_files
    kitchen = await start_node(name="kitchen", tls_cert=cert, tls_key=key)
    attic = await start_node(name="attic")
    await linked(kitchen, attic)
    await signup(kitchen.url, "alice", PASSWORD)
    await signup(attic.url, "carol", PASSWORD)
    alice = await login(kitchen.url, "alice", PASSWORD)
    carol = await login(attic.url, "carol", PASSWORD)
    async with connect(attic.url, carol.token) as c, connect(kitchen.url, alice.token) as a:
        await c.sync(0)
        await a.send("carol@attic", "through a tls node")
        texts = [f["body"]["text"] for f in await drain(c, 1)]
        assert texts == ["through a tls node"]


async def test_run_refuses_half_or_bad_tls_options(tmp_path: Path, tls_files) -> None:
    cert, key = tls_files
    data = str(tmp_path / "node")
    half = await run_cli(["run", "--data", data, "--no-mdns", "--tls-cert", str(cert)], tmp_path)
    assert half.returncode == Exit.USAGE and b"both --tls-cert and --tls-key" in half.stderr
    bad = await run_cli(
        ["run", "--data", data, "--no-mdns", "--tls-cert", str(key), "--tls-key", str(key)],
        tmp_path,
    )
    assert bad.returncode == Exit.USAGE and b"cannot use --tls-cert/--tls-key" in bad.stderr
