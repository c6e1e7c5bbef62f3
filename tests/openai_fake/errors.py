"""Errors the fake answers with, in OpenAI's ``ErrorResponse`` shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["TRAINING_NOT_AVAILABLE", "ApiError", "injected_error"]

TRAINING_NOT_AVAILABLE = (
    "Fine-tuning is not available for this organization: "
    "self-serve fine-tuning no longer accepts new jobs."
)
# status -> (error.type, error.code, error.message) used when a test injects a fault.
_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "The request was invalid."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to perform this request."),
    404: ("invalid_request_error", None, "The requested resource does not exist."),
    409: ("invalid_request_error", None, "Another request is modifying this resource."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Try again shortly."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


class ApiError(Exception):
    """An HTTP error reply: status, ``error`` object fields, and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.code, self.param = code, param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI sends for this error."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": error}


def injected_error(
    status: int,
    *,
    code: str | None = None,
    message: str | None = None,
    type: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> ApiError:
    """An error for the fault plan, filling OpenAI's usual type/code/message for ``status``.

    A 429 gets ``retry-after`` / ``retry-after-ms`` headers (0.05 s unless ``retry_after`` is set).
    """
    default_type, default_code, default_message = _DEFAULTS.get(status, _DEFAULTS[400])
    if code == "training_not_available":
        default_message = TRAINING_NOT_AVAILABLE
    if retry_after is None and status == 429:
        retry_after = 0.05
    headers = {}
    if retry_after is not None:
        headers = {"retry-after": f"{retry_after:g}", "retry-after-ms": f"{retry_after * 1000:g}"}
    return ApiError(
        status,
        message or default_message,
        type=type or default_type,
        code=code or default_code,
        param=param,
        headers=headers,
    )
