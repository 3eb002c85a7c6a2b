"""Domain errors; one middleware turns them into JSON HTTP responses."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the client caused or must know about, with its HTTP status and a stable code."""

    status = 400
    code = "bad_request"

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
        super().__init__(message)
        self.message = message
        if headers is not None:
            self.headers = headers
        if code is not None:
            self.code = code
        if http_status is not None:
            self.status = http_status
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}

    def __reduce__(self) -> tuple[Any, ...]:
        # Whole, whatever a subclass's __init__ takes: a body parsed in a worker process raises it there.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[ApiError], message: str, state: dict[str, Any]) -> ApiError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ValidationError(ApiError):
    status = 400
    code = "invalid_request"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class JobNotFound(ApiError):
    status = 404
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Unknown jobId {job_id}", jobId=job_id)
        self.job_id = job_id


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


# A job that exists with other settings than a request's: the field that differs -> the error code.
CONFLICT_CODES = {"totalClients": "total_clients_mismatch", "schema": "schema_mismatch", "maxRows": "max_rows_mismatch"}
