"""Typed application state keys."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from orchestrator.metrics import Metrics
from orchestrator.settings import Settings
from orchestrator.store import JobStore

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", JobStore)
METRICS = web.AppKey("metrics", Metrics)
