"""Typed application state keys."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from orchestrator.hub import EventHub
from orchestrator.metrics import Metrics
from orchestrator.offload import Offloader
from orchestrator.quotas import MemoryGuard
from orchestrator.securesum.store import RoundStore, VectorStore
from orchestrator.security.audit import AuditLog
from orchestrator.security.tokens import Authenticator
from orchestrator.settings import Settings
from orchestrator.sockets import SocketRegistry
from orchestrator.store import JobStore

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", JobStore)
METRICS = web.AppKey("metrics", Metrics)
HUB = web.AppKey("hub", EventHub)
VECTORS = web.AppKey("vectors", VectorStore)
ROUNDS = web.AppKey("rounds", RoundStore)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
AUDIT = web.AppKey("audit", AuditLog)
MEMORY = web.AppKey("memory", MemoryGuard)
OFFLOAD = web.AppKey("offload", Offloader)
SOCKETS = web.AppKey("sockets", SocketRegistry)
