"""The SIMPLON REST subset of the simulated detector (reference notes, section 1.4).

``/{module}/api/{version}/{config|status|command}/{param}``, version 1.8.0 (default) or 1.6.0
(the detector's ``simplon_version``); ``PUT`` bodies are ``{"value": X}``.
``GET /detector/api/version/`` answers the version, or 404 where the detector has
``version_endpoint=False`` (as some real servers do).
``GET config`` answers ``{"value", "value_type", "access_mode", "unit", ...}``, ``PUT config``
the list of parameters it changed. Unknown parameters answer 404, bad values and refused commands
400 with ``{"detail": message}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from stemdaq.errors import ConfigError, DetectorError
from stemdaq.sim.params import Param, ParamNotFoundError

if TYPE_CHECKING:
    from stemdaq.sim.detector import SimulatedDetector

COMMANDS = ("arm", "trigger", "disarm", "cancel", "abort", "initialize")
_THRESHOLD_MODE = Param("string", "enabled", allowed_values=("enabled", "disabled"))


async def _value(request: Request) -> Any:
    """The ``value`` of a ``{"value": X}`` body."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise ConfigError('body is not JSON; expected {"value": ...}') from None
    if not isinstance(body, dict) or "value" not in body:
        raise ConfigError('expected a JSON body {"value": ...}')
    return body["value"]


def create_simplon_app(det: SimulatedDetector) -> FastAPI:
    """A FastAPI app serving the SIMPLON subset for ``det`` (its ``simplon_version``)."""
    V = det.simplon_version  # noqa: N806  (reads as the path segment it is)
    app = FastAPI(title="stemdaq simulated DECTRIS detector (SIMPLON subset)", version=V)

    @app.exception_handler(ParamNotFoundError)
    async def _not_found(_: Request, exc: ParamNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": f"no such parameter: {exc.args[0]}"}, status_code=404)

    @app.exception_handler(ConfigError)
    async def _bad_value(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(DetectorError)
    async def _refused(_: Request, exc: DetectorError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    if det.version_endpoint:

        @app.get("/detector/api/version/")
        @app.get("/detector/api/version")
        async def version() -> dict[str, str]:
            return {"value": V, "value_type": "string"}

    # -- detector config -------------------------------------------------------------------------

    @app.get(f"/detector/api/{V}/config/keys")
    async def detector_keys() -> list[str]:
        return det.config.keys()

    @app.get(f"/detector/api/{V}/config/threshold/{{n}}/{{param}}")
    async def get_threshold(n: int, param: str) -> dict[str, Any]:
        return _threshold(det, n, param, None)

    @app.put(f"/detector/api/{V}/config/threshold/{{n}}/{{param}}")
    async def put_threshold(n: int, param: str, request: Request) -> list[str]:
        _threshold(det, n, param, await _value(request))
        return [f"threshold/{n}/{param}"]

    @app.get(f"/detector/api/{V}/config/{{param}}")
    async def get_detector_config(param: str) -> dict[str, Any]:
        return det.config.describe(param)

    @app.put(f"/detector/api/{V}/config/{{param}}")
    async def put_detector_config(param: str, request: Request) -> list[str]:
        return det.config.set(param, await _value(request))

    # -- detector commands and status ------------------------------------------------------------

    @app.put(f"/detector/api/{V}/command/{{command}}")
    def command(command: str) -> dict[str, int]:
        if command not in COMMANDS:
            raise ParamNotFoundError(command)
        seq = getattr(det, command)()
        return {"sequence id": det.sequence_id if seq is None else seq}

    @app.get(f"/detector/api/{V}/status/{{param:path}}")
    async def detector_status(param: str) -> dict[str, Any]:
        if param == "state":
            return {
                "value": det.state,
                "value_type": "string",
                "access_mode": "r",
                "allowed_values": [
                    "na",
                    "idle",
                    "ready",
                    "acquire",
                    "configure",
                    "initialize",
                    "error",
                ],
            }
        if param == "error":
            return {
                "value": [repr(e) for e in det.errors],
                "value_type": "list",
                "access_mode": "r",
            }
        if param == "builder/dcu_buffer_free":
            return {"value": 100.0, "value_type": "float", "access_mode": "r", "unit": "%"}
        if param in ("temperature", "board_000/th0_temp"):
            return {"value": 30.0, "value_type": "float", "access_mode": "r", "unit": "degC"}
        if param in ("humidity", "board_000/th0_humidity"):
            return {"value": 5.0, "value_type": "float", "access_mode": "r", "unit": "%"}
        raise ParamNotFoundError(param)

    # -- stream ---------------------------------------------------------------------------------

    @app.get(f"/stream/api/{V}/config/keys")
    async def stream_keys() -> list[str]:
        return det.stream_config.keys()

    @app.put(f"/stream/api/{V}/config")
    async def put_stream_bulk(request: Request) -> list[str]:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            raise ConfigError("body is not JSON") from None
        if not isinstance(body, dict) or not all(
            isinstance(v, dict) and "value" in v for v in body.values()
        ):
            raise ConfigError('expected {"param": {"value": ...}, ...}')
        for name in body:  # validate everything before changing anything
            if name not in det.stream_config.params:
                raise ParamNotFoundError(name)
        changed: list[str] = []
        for name, item in body.items():
            changed += det.stream_config.set(name, item["value"])
        return changed

    @app.get(f"/stream/api/{V}/config/{{param}}")
    async def get_stream_config(param: str) -> dict[str, Any]:
        return det.stream_config.describe(param)

    @app.put(f"/stream/api/{V}/config/{{param}}")
    async def put_stream_config(param: str, request: Request) -> list[str]:
        return det.stream_config.set(param, await _value(request))

    @app.get(f"/stream/api/{V}/status/{{param}}")
    async def stream_status(param: str) -> dict[str, Any]:
        if param == "state":
            return {
                "value": det.stream_state,
                "value_type": "string",
                "access_mode": "r",
                "allowed_values": ["disabled", "ready", "acquire", "error"],
            }
        if param == "dropped":
            return {"value": det.dropped, "value_type": "uint", "access_mode": "r"}
        raise ParamNotFoundError(param)

    @app.put(f"/stream/api/{V}/command/initialize")
    async def stream_initialize() -> None:
        det.stream_config.set("mode", "disabled")  # "restarts the stream interface and disables it"

    return app


def _threshold(det: SimulatedDetector, n: int, param: str, value: Any) -> dict[str, Any]:
    """GET (value None) or PUT ``threshold/{n}/{mode|energy}``; threshold 1 is always enabled."""
    if n not in det.threshold_modes or param not in ("mode", "energy"):
        raise ParamNotFoundError(f"threshold/{n}/{param}")
    if param == "energy":
        if value is not None:
            if n != 1:
                raise ConfigError("threshold/2/energy follows threshold/1/energy (x1.5)")
            det.config.set("threshold_energy", value)
        energy = float(det.config["threshold_energy"]) * (1 + 0.5 * (n - 1))
        return {"value": energy, "value_type": "float", "access_mode": "rw", "unit": "eV"}
    if value is not None:
        value = _THRESHOLD_MODE.check(f"threshold/{n}/mode", value)
        if n == 1 and value != "enabled":
            raise ConfigError("threshold/1 cannot be disabled")
        det.threshold_modes[n] = value
    return _THRESHOLD_MODE.describe(det.threshold_modes[n])
