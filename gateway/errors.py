"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right status."""

from __future__ import annotations

import json


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type_: str, code: str | None, param: str | None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_value" if param else None)


def unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, type="invalid_request_error", code="invalid_api_key")


def model_not_found(name: str) -> GatewayError:
    # The same answer whether the model does not exist or the key may not use it.
    return GatewayError(
        404,
        f"The model `{name}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def no_ready_worker(name: str) -> GatewayError:
    return GatewayError(
        503,
        f"No worker of `{name}` is ready to serve this request; retry shortly.",
        type="service_unavailable",
        code="no_ready_worker",
    )


def bad_gateway(message: str) -> GatewayError:
    return GatewayError(502, message, type="api_error", code="engine_error")


def gateway_timeout(message: str) -> GatewayError:
    return GatewayError(504, message, type="api_error", code="engine_timeout")
