"""Security against real servers: rate limits shared by two service processes on one real Redis, and
a Redis that requires a password."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from orchestrator.security.tokens import issue_token
from tests.conftest import REAL_REDIS_URL
from tests.support import RedisServerProcess, ServiceProcess, service_instances, wait_until

pytestmark = pytest.mark.real_redis
SECRET = "s3cret-for-tests-only-0123456789abcdef"


async def test_rate_limits_are_shared_across_instances_and_recover(
    prefix: str, tmp_path: Path, real_redis: aioredis.Redis
) -> None:
    env = {
        "REDIS_URL": REAL_REDIS_URL,
        "KEY_PREFIX": prefix,
        "ACCESS_LOG": "false",
        "AUTH_JWT_SECRET": SECRET,
        "RATE_LIMIT_WINDOW": "3",
        "RATE_LIMIT_CLIENT_WRITES": "20",
        "RATE_LIMIT_IP_WRITES": "30",
    }
    async with service_instances(env, tmp_path) as instances:
        client = {"Authorization": f"Bearer {issue_token(SECRET, 'c1', 'client', 600, ['*'])}"}
        async with aiohttp.ClientSession() as session:

            async def send(n: int, headers: dict[str, str], client_id: str = "c1") -> tuple[int, str | None]:
                body = {"jobId": f"rl-{n}", "clientId": client_id, "totalClients": 2}
                async with session.post(f"{instances[n % 2].base}/api/update", json=body, headers=headers) as resp:
                    return resp.status, resp.headers.get("Retry-After")

            # Wait for the start of a window, so the whole burst falls into one.
            await asyncio.sleep(3 - time.time() % 3 + 0.05)
            burst = await asyncio.gather(*(send(n, client) for n in range(40)))
            statuses = [status for status, _ in burst]
            assert statuses.count(200) == 20 and statuses.count(429) == 20, statuses
            assert all(1 <= int(after or 0) <= 3 for status, after in burst if status == 429)
            # Another client from the same IP is still within the IP's limit...
            other = {"Authorization": f"Bearer {issue_token(SECRET, 'c2', 'client', 600, ['*'])}"}
            more = await asyncio.gather(*(send(100 + n, other, "c2") for n in range(20)))
            # ...until the IP's 30 writes of this window are spent (c1's 20 accepted ones count; the ones its
            # own limit refused do not).
            assert [s for s, _ in more].count(200) == 10
            # The next window: writes go through again.
            await asyncio.sleep(3 - time.time() % 3 + 0.05)
            assert (await send(200, client))[0] == 200
        # Both instances counted into the same window, and audited every write, refused or not.
        audited = await real_redis.xlen(f"{prefix}audit")
        assert audited == 40 + 20 + 1


async def test_redis_with_a_password(tmp_path: Path) -> None:
    server = RedisServerProcess(tmp_path / "redis", "--requirepass", "p4ss-w0rd")
    server.start()
    try:
        base_env = {"REDIS_URL": server.url, "ACCESS_LOG": "false"}
        good = ServiceProcess({**base_env, "REDIS_PASSWORD": "p4ss-w0rd"}, tmp_path / "good")
        bad = ServiceProcess(base_env, tmp_path / "bad")
        try:
            await good.ready("/readyz")
            async with aiohttp.ClientSession() as session:
                body = {"jobId": "pw", "clientId": "a", "totalClients": 2}
                async with session.post(f"{good.base}/api/update", json=body) as resp:
                    assert resp.status == 200
                await wait_until(f"{bad.base}/readyz", status=503)
                async with session.get(f"{bad.base}/readyz") as resp:
                    assert "Authentication" in (await resp.json())["redis"]
                async with session.post(f"{bad.base}/api/update", json=body) as resp:
                    assert resp.status == 503
            assert "Redis refused this service's credentials" in bad.stderr()
            assert "p4ss-w0rd" not in good.stderr() + bad.stderr()
        finally:
            good.stop()
            bad.stop()
    finally:
        server.kill()


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


async def test_redis_over_tls_with_an_acl_user(tmp_path: Path) -> None:
    from tests.support import free_port

    ca, cert, key = make_tls_files(tmp_path / "tls")
    tls_port = free_port()
    server = RedisServerProcess(
        tmp_path / "redis",
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no",
        "--user", "orchestrator", "on", ">acl-p4ss", "~*", "&*", "+@all",
        "--user", "default", "off",
    )  # fmt: skip
    server.start()
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
        env = {"REDIS_URL": url, "REDIS_USERNAME": "orchestrator", "REDIS_PASSWORD": "acl-p4ss", "ACCESS_LOG": "false"}
        service = ServiceProcess(env, tmp_path / "svc")
        untrusted = ServiceProcess({**env, "REDIS_URL": f"rediss://127.0.0.1:{tls_port}/0"}, tmp_path / "untrusted")
        try:
            await service.ready("/readyz")
            async with aiohttp.ClientSession() as session:
                body = {"jobId": "tls", "clientId": "a", "totalClients": 2}
                async with session.post(f"{service.base}/api/update", json=body) as resp:
                    assert resp.status == 200
            # Without the CA the server's certificate is not trusted: no connection, a clear 503.
            await wait_until(f"{untrusted.base}/readyz", status=503)
        finally:
            service.stop()
            untrusted.stop()
    finally:
        server.kill()
