"""Bearer tokens: who a request comes from, and in which role.

JWTs signed with HS256 (a shared secret, AUTH_JWT_SECRET) or RS256/ES256 (an identity provider's key,
AUTH_JWT_PUBLIC_KEY_FILE). Each algorithm is tied to its own key, and only configured algorithms are
accepted: `none`, and an HS256 token "signed" with the public key, are refused. Claims: `sub`, `role`
(client, viewer or admin), `exp`, and optionally `jobs`, the job-id patterns (shell-style, `study-*`)
the token may touch.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass
from typing import Any

import jwt

from orchestrator.settings import Settings
from orchestrator.validation import ID_PATTERN

ROLES = ("client", "viewer", "admin")
MAX_JOB_PATTERNS = 100
_MAX_DATE = 1e12  # seconds since the epoch: some 30,000 years


class AuthError(Exception):
    """The request carries no usable token; the message says why (never the token)."""


@dataclass(frozen=True)
class Principal:
    sub: str
    role: str
    jobs: tuple[str, ...] | None = None  # None: every job
    authenticated: bool = True
    expires_at: float | None = None  # the token's exp (epoch seconds)

    def may_touch(self, job_id: str) -> bool:
        return self.jobs is None or any(fnmatch.fnmatchcase(job_id, pattern) for pattern in self.jobs)


# With authentication off, every request acts as this (and the service only listens on loopback).
ANONYMOUS = Principal("anonymous", "admin", None, authenticated=False)
# With authentication on, a request to a public route acts as this: no rights at all.
NOBODY = Principal("anonymous", "", (), authenticated=False)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.keys: dict[str, Any] = {}
        if settings.auth_jwt_secret is not None:
            self.keys["HS256"] = settings.auth_jwt_secret
        if settings.auth_jwt_public_key is not None:
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            key = load_pem_public_key(settings.auth_jwt_public_key.encode())
            self.keys["ES256" if isinstance(key, ec.EllipticCurvePublicKey) else "RS256"] = key
        self.issuer = settings.auth_jwt_issuer
        self.audience = settings.auth_jwt_audience
        self.leeway = settings.auth_leeway_seconds

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def authenticate(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise AuthError("malformed token") from None
        key = self.keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:
            raise AuthError(f"algorithm {str(algorithm)[:20]!r} is not accepted here")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature") from None
        except jwt.InvalidTokenError as e:
            raise AuthError(f"invalid token: {e}") from None
        for name in ("nbf", "iat"):
            numeric_date(claims, name)
        return principal_from(claims)


def principal_from(claims: dict[str, Any]) -> Principal:
    sub, role, jobs = claims.get("sub"), claims.get("role"), claims.get("jobs")
    if not isinstance(sub, str) or not ID_PATTERN.fullmatch(sub):
        raise AuthError("the 'sub' claim must be an id of letters, digits, '.', '_', ':' or '-'")
    if role not in ROLES:
        raise AuthError(f"the 'role' claim must be one of {', '.join(ROLES)}")
    if jobs is not None and not (
        isinstance(jobs, list) and len(jobs) <= MAX_JOB_PATTERNS and all(isinstance(j, str) and j for j in jobs)
    ):
        raise AuthError(f"the 'jobs' claim must be a list of at most {MAX_JOB_PATTERNS} job-id patterns")
    expires_at = numeric_date(claims, "exp")
    return Principal(sub, str(role), None if jobs is None else tuple(jobs), expires_at=expires_at)


def numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A time claim as epoch seconds (None when absent). PyJWT takes a numeric string ("9999999999") for
    `exp`: the token would be valid while its WebSocket, not knowing when it expires, stayed open forever."""
    value = claims.get(name)
    if value is None:
        return None
    # Compared, not converted: an integer too large for a float must not raise (NaN compares false).
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not -_MAX_DATE < value < _MAX_DATE:
        raise AuthError(f"the {name!r} claim must be a number of seconds since the epoch")
    return float(value)


def bound_claims(settings: Settings) -> dict[str, str]:
    """The ``iss`` and ``aud`` a token must carry for this service (it checks them when it is configured
    with them, and refuses a token without them)."""
    bound = {"iss": settings.auth_jwt_issuer, "aud": settings.auth_jwt_audience}
    return {name: value for name, value in bound.items() if value is not None}


def issue_token(
    secret: str, sub: str, role: str, ttl_seconds: float, jobs: list[str] | None = None, **extra: Any
) -> str:
    """An HS256 token for ``sub`` in ``role``, valid for ``ttl_seconds``."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "role": role, "iat": now, "exp": now + int(ttl_seconds), **extra}
    if jobs is not None:
        claims["jobs"] = jobs
    principal_from(claims)  # refuse to issue what would be refused
    return jwt.encode(claims, secret, algorithm="HS256")


def parse_ttl(text: str) -> float:
    """'30d', '12h', '15m', '90s' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    value = float(number) * units[unit]
    if not 0 < value <= 366 * 86400:
        raise ValueError("a ttl must be positive and at most a year")
    return value
