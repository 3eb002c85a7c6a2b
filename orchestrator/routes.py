"""URL table."""

from __future__ import annotations

from aiohttp import web

from orchestrator import views, ws
from orchestrator.securesum import views as securesum_views
from orchestrator.security import views as security_views
from orchestrator.staticfiles import static_handler


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", views.index)
    app.router.add_post("/api/update", views.update)
    app.router.add_get("/api/job-status/{jobId}", views.job_status)
    app.router.add_get("/api/jobs", views.list_jobs)
    app.router.add_get("/api/jobs/{jobId}", views.get_job)
    app.router.add_post("/api/jobs/{jobId}/cancel", views.cancel_job)
    app.router.add_post("/api/jobs/{jobId}/keys", securesum_views.register_key)
    app.router.add_get("/api/jobs/{jobId}/keys", securesum_views.get_keys)
    app.router.add_post("/api/smpc/callback/{jobId}", views.smpc_callback)
    app.router.add_post("/api/jobs/{jobId}/deliveries/retry", views.retry_deliveries)
    app.router.add_get("/api/openapi.json", views.openapi)
    app.router.add_get("/api/whoami", security_views.whoami)
    app.router.add_post("/api/ws-ticket", security_views.ws_ticket)
    app.router.add_get("/api/audit", security_views.audit_entries)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/ws", ws.all_socket)
    app.router.add_get("/ws/jobs/{jobId}", ws.job_socket)
    app.router.add_get("/dashboard", views.dashboard)
    app.router.add_get("/static/{filename:.+}", static_handler(), name="static")
