"""Translate the ``openai`` SDK's errors into core's tree, once, where they enter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2
import openai

from core.errors import (
    BackendAuthError,
    BackendBadRequest,
    BackendError,
    BackendNotFound,
    BackendRateLimited,
    BackendTimeout,
    BackendUnavailable,
    RunEnded,
)

# A dropped stream surfaces as httpx2's own error inside the SDK's streaming code, and as
# openai.APIConnectionError elsewhere: both mean the same thing to us.
STREAM_ERRORS: tuple[type[BaseException], ...] = (openai.APIError, httpx2.HTTPError)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def translate(exc: BaseException) -> BackendError:
    """The core error for an SDK or transport error. Messages carry no request data or keys."""
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return BackendTimeout("backend request timed out")
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return BackendUnavailable(f"backend connection failed: {type(exc).__name__}")
    if isinstance(exc, openai.APIStatusError):
        return _translate_status(exc)
    if isinstance(exc, openai.APIError):
        return BackendError(f"backend error: {exc.message}", code=getattr(exc, "code", None))
    return BackendError(f"backend error: {type(exc).__name__}")


def _translate_status(exc: openai.APIStatusError) -> BackendError:
    status, code = exc.status_code, getattr(exc, "code", None)
    detail = f"backend answered HTTP {status}: {exc.message}"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return BackendAuthError(f"backend refused the credentials (HTTP {status})", status=status, code=code)
    if isinstance(exc, openai.RateLimitError):
        return BackendRateLimited(detail, status=status, code=code, retry_after_s=_retry_after(exc))
    if isinstance(exc, openai.NotFoundError):
        return BackendNotFound(detail, status=status, code=code)
    if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError | openai.ConflictError):
        return BackendBadRequest(detail, status=status, code=code)
    if status >= 500:
        return BackendUnavailable(detail, status=status, code=code)
    return BackendError(detail, status=status, code=code)


def ended(status: str, obj: Mapping[str, Any], *, error_field: str) -> RunEnded:
    """``RunEnded`` for a run or response that ended without completing: its error (``last_error``
    on a run, ``error`` on a response) or its ``incomplete_details`` as code and detail."""
    if error := obj.get(error_field):
        return RunEnded(status, code=error.get("code"), detail=error.get("message"))
    if incomplete := obj.get("incomplete_details"):
        return RunEnded(status, code=incomplete.get("reason"))
    return RunEnded(status)
