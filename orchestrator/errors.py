"""The errors a request can meet. Domain errors (a refused field, an unknown job, a conflict) carry a stable
code and no HTTP: the store and the model raise them, and one middleware gives each its status
(``http_status``). ApiError is for what belongs to HTTP itself (limits, media types, credentials, load)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """What the service refuses and why: a stable ``code`` clients branch on, a message, and details."""

    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}

    def __reduce__(self) -> tuple[Any, ...]:
        # Whole, whatever a subclass's __init__ takes: a body parsed in a worker process raises it there.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[DomainError], message: str, state: dict[str, Any]) -> DomainError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ValidationError(DomainError):
    code = "invalid_request"


class JobNotFound(DomainError):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Unknown jobId {job_id}", jobId=job_id)
        self.job_id = job_id


class Conflict(DomainError):
    """The request disagrees with the job as it is (its settings, its state)."""

    code = "conflict"


class ApiError(DomainError):
    """An error of the HTTP exchange itself, with its status (and headers, such as Retry-After)."""

    status = 400
    headers: dict[str, str] | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, code=code, **details)
        if headers is not None:
            self.headers = headers
        if http_status is not None:
            self.status = http_status


_STATUS: dict[type[DomainError], int] = {ValidationError: 400, JobNotFound: 404, Conflict: 409}


def http_status(error: DomainError) -> int:
    """The HTTP status a domain error answers with."""
    if isinstance(error, ApiError):
        return error.status
    return next((_STATUS[cls] for cls in type(error).__mro__ if cls in _STATUS), 400)


def http_headers(error: DomainError) -> dict[str, str] | None:
    return error.headers if isinstance(error, ApiError) else None


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


# A job that exists with other settings than a request's: the field that differs -> the error code.
CONFLICT_CODES = {
    "totalClients": "total_clients_mismatch",
    "schema": "schema_mismatch",
    "maxRows": "max_rows_mismatch",
    "minClients": "min_clients_mismatch",
    "roundTimeout": "round_timeout_mismatch",
}
