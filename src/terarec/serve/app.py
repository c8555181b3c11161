"""The HTTP service of ``terarec serve``: FastAPI over one :class:`~terarec.serve.ServedModel`.

Endpoints: ``POST /score`` (candidates' scores for a context), ``POST /retrieve`` (a two-tower
model's top-k items for a context), ``GET /healthz`` (the process answers), ``GET /readyz`` (a
model is loaded), ``GET /metrics`` (Prometheus text) and the OpenAPI schema at ``/docs``.

A bad request gets a 4xx naming what is wrong, never a 5xx: 422 for a body that does not
validate (pydantic) or a feature the model lacks or a value of the wrong kind (the ``loc``
names ``context`` or ``candidates[i]`` and the feature), 413 for a body over
``max_body_bytes``, 401 without the bearer token when one is set, 404 for ``/retrieve`` on a
model without an item index. Model work runs on one thread per process, off the event loop, so
``/healthz`` answers while a request computes and a request that outlasts
``request_timeout_seconds`` gets a 503. With ``watch_run``, newer checkpoints of a training run
are swapped in while requests flow (:mod:`terarec.serve.reload`); ``/metrics`` counts the swaps
and refusals and shows the served version and step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numba
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from terarec.data import RecordError
from terarec.serve.model import ServedModel, freeze_long_lived_objects
from terarec.serve.reload import CurrentModel, ModelReloader
from terarec.serve.schemas import RetrieveResponse, ScoreResponse, request_models

__all__ = ["ServeSettings", "app_from_environment", "configure_process", "create_app", "settings_environment"]

SETTINGS_ENVIRONMENT = "TERAREC_SERVE_SETTINGS"
_log = logging.getLogger("terarec.serve")

@dataclass(frozen=True)
class ServeSettings:
    """How ``terarec serve`` answers.

    Args:
        model_dir (str): the model directory of ``terarec export``.
        max_body_bytes (int, optional): larger request bodies get 413. Default: ``1048576``
        max_candidates (int, optional): most candidates per ``/score`` request. Default: ``1000``
        max_k (int, optional): largest ``k`` of ``/retrieve``. Default: ``1000``
        token (str, optional): when set, ``/score`` and ``/retrieve`` need the header
            ``Authorization: Bearer <token>``. Default: ``None``
        request_timeout_seconds (float, optional): a request whose model work takes longer
            gets 503. Default: ``10.0``
        watch_run (str, optional): a training run whose newer checkpoints are swapped in as
            they appear (:class:`~terarec.serve.reload.ModelReloader`). Default: ``None``
        watch_seconds (float, optional): how often ``watch_run`` is looked at. Default: ``1.0``
        threads (int, optional): numba threads of the model thread, and torch threads of each
            ``terarec serve`` process (:func:`configure_process`); more cores are used by more
            workers. Default: ``1``
        cache_bytes (int, optional): RAM for the rows of tables trained tiered, per worker (see
            :class:`~terarec.serve.ServedModel`); ``None``: the caches they trained with.
            Default: ``None``
    """

    model_dir: str
    max_body_bytes: int = 1 << 20
    max_candidates: int = 1000
    max_k: int = 1000
    token: str | None = None
    request_timeout_seconds: float = 10.0
    watch_run: str | None = None
    watch_seconds: float = 1.0
    threads: int = 1
    cache_bytes: int | None = None


def _error(status: int, loc: list[Any], message: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": [{"loc": loc, "msg": message, "type": kind}]})


class _BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_large = _error(413, ["body"], f"the request body is over {self.limit} bytes", "body_too_large")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await too_large(scope, receive, send)


class _TooLarge(Exception):
    pass


_ENDPOINTS = frozenset(("/score", "/retrieve", "/healthz", "/readyz", "/metrics"))


class _Measured:
    """ASGI middleware: counts each answer by endpoint and status and observes its latency."""

    def __init__(self, app: Any, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun, status = time.perf_counter(), 500
        endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"

        async def sent(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            self.requests.labels(endpoint, str(status)).inc()
            self.latency.labels(endpoint).observe(time.perf_counter() - begun)


class _TableCacheCollector(Collector):
    """The served model's table caches, read at each scrape: rows found in the cache and read
    from disk since the model was opened, and their hit rate, by table."""

    def __init__(self, current: CurrentModel) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        counters = self.current.model.tables.counters()
        hits = CounterMetricFamily("terarec_table_cache_hits", "Rows a lookup found in the table's RAM cache", labels=["table"])
        misses = CounterMetricFamily("terarec_table_cache_misses", "Rows a lookup read from the table's file", labels=["table"])
        rate = GaugeMetricFamily("terarec_table_cache_hit_rate", "Cache hits over all rows looked up, since the model was opened", labels=["table"])
        for key in counters:
            table, counter = key.rsplit("/", 1)
            if counter != "cache_hits":
                continue
            found, read = counters[key], counters[f"{table}/cache_misses"]
            hits.add_metric([table], found)
            misses.add_metric([table], read)
            rate.add_metric([table], found / (found + read) if found + read else 0.0)
        yield from (hits, misses, rate)


def create_app(settings: ServeSettings, model: ServedModel | None = None) -> FastAPI:
    """The service over ``model`` (default: the model directory of ``settings``, opened now)."""
    started = time.perf_counter()
    served = model if model is not None else ServedModel(Path(settings.model_dir), settings.cache_bytes)
    load_seconds = time.perf_counter() - started
    registry = CollectorRegistry()
    requests = Counter("terarec_requests", "Requests answered, by endpoint and status", ["endpoint", "status"], registry=registry)
    latency = Histogram(
        "terarec_request_seconds", "Request latency, by endpoint", ["endpoint"], registry=registry,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
    )
    version = Gauge("terarec_model_info", "The served model (value 1), by version", ["version", "task"], registry=registry)
    version.labels(served.version, served.task).set(1)
    step = Gauge("terarec_model_step", "The training step of the served model", registry=registry)
    step.set(served.step)
    Gauge("terarec_model_load_seconds", "Seconds taken to open the model directory", registry=registry).set(load_seconds)
    reloads = Counter("terarec_reloads", "Checkpoints of the watched run swapped in, or refused", ["result"], registry=registry)
    swap_seconds = Gauge("terarec_reload_seconds", "Seconds the last reload took (export, open, swap)", registry=registry)
    current = CurrentModel(served)
    registry.register(_TableCacheCollector(current))
    # numba's thread count is per calling thread: the model thread sets its own.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="terarec-serve",
                                initializer=numba.set_num_threads, initargs=(_numba_threads(settings),))

    def swapped(old: ServedModel, new: ServedModel, seconds: float) -> None:
        version.remove(old.version, old.task)
        version.labels(new.version, new.task).set(1)
        step.set(new.step)
        swap_seconds.set(seconds)
        reloads.labels("ok").inc()
        _log.info("swapped in %s (step %d) in %.2f s", new.version, new.step, seconds)

    def refused(checkpoint: Path, err: Exception) -> None:
        reloads.labels("failed").inc()
        _log.error("refused %s: %s; still serving %s", checkpoint, err, current.model.version)

    reloader = None
    if settings.watch_run is not None:
        reloader = ModelReloader(current, Path(settings.watch_run), Path(settings.model_dir).resolve().parent,
                                 settings.watch_seconds, swapped, refused, cache_bytes=settings.cache_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(worker, current.model.warm_up)
        freeze_long_lived_objects()
        if reloader is not None:
            reloader.start()
        yield
        if reloader is not None:
            reloader.stop()
        worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="terarec", version=served.version, lifespan=lifespan,
                  summary="Scores candidates and retrieves items with a terarec model.")
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(_Measured, requests=requests, latency=latency)

    def authorised(request: Request) -> bool:
        if settings.token is None:
            return True
        header = request.headers.get("authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {settings.token}".encode())

    async def compute(function: Any, *args: Any) -> Any:
        future = asyncio.get_running_loop().run_in_executor(worker, function, *args)
        return await asyncio.wait_for(future, settings.request_timeout_seconds)

    def record_error(err: RecordError, candidates: list[dict[str, Any]] | None) -> JSONResponse:
        if candidates is not None and err.row is not None and err.feature in candidates[err.row]:
            loc: list[Any] = ["body", "candidates", err.row, err.feature]
        else:
            loc = ["body", "context", err.feature]
        return _error(422, loc, str(err), "feature_error")

    crossed = tuple(dict.fromkeys(name for names in served.config.data.crosses for name in names))
    bodies = request_models(served.features, served.schema.dense_features, crossed, settings.max_candidates, settings.max_k)

    def plain(features: Any) -> dict[str, Any]:
        return features.model_dump(by_alias=True, exclude_none=True)

    async def score(body: Any, request: Request) -> Any:
        if not authorised(request):
            return _error(401, ["header", "authorization"], "a bearer token is required", "unauthorised")
        served = current.model
        candidates = [plain(candidate) for candidate in body.candidates]
        try:
            scores = await compute(served.score, plain(body.context), candidates)
        except RecordError as err:
            return record_error(err, candidates)
        except asyncio.TimeoutError:
            return _error(503, ["body"], f"scoring took over {settings.request_timeout_seconds} s", "timeout")
        return ScoreResponse(scores=scores, version=served.version)

    async def retrieve(body: Any, request: Request) -> Any:
        if not authorised(request):
            return _error(401, ["header", "authorization"], "a bearer token is required", "unauthorised")
        served = current.model
        if served.index is None:
            return _error(404, ["path"], f"this model ({served.task}) has no item index: /retrieve needs a two-tower "
                          "model exported with its index", "no_index")
        try:
            found = await compute(served.retrieve, plain(body.context), body.k)
        except RecordError as err:
            return record_error(err, None)
        except asyncio.TimeoutError:
            return _error(503, ["body"], f"retrieval took over {settings.request_timeout_seconds} s", "timeout")
        return RetrieveResponse(items=found.items, scores=found.scores, version=served.version)

    # The bodies' classes are built from the model's features at run time: the handlers' annotations
    # are set here, since the module's postponed annotations could not name them.
    score.__annotations__.update(body=bodies.score, request=Request)
    retrieve.__annotations__.update(body=bodies.retrieve, request=Request)
    errors = {401: {"description": "missing or wrong bearer token"}, 413: {"description": "the body is too large"},
              503: {"description": "the model took longer than the request timeout"}}
    app.post("/score", response_model=ScoreResponse, responses=errors, summary="Score candidates for a context")(score)
    app.post("/retrieve", response_model=RetrieveResponse, summary="Retrieve a two-tower model's nearest items",
             responses={**errors, 404: {"description": "the model has no item index"}})(retrieve)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, object]:
        model = current.model
        return {"status": "ready", "version": model.version, "task": model.task, "step": model.step}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text exposition format)")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _numba_threads(settings: ServeSettings) -> int:
    return max(1, min(settings.threads, numba.config.NUMBA_NUM_THREADS))


def configure_process(settings: ServeSettings) -> None:
    """Sets this process's torch threads to ``settings.threads`` (the model thread sets numba's):
    a request is small, and threads of one worker would only contend with each other and with
    the other workers."""
    torch.set_num_threads(settings.threads)


def app_from_environment() -> FastAPI:
    """The app of the settings in ``$TERAREC_SERVE_SETTINGS`` (JSON), for uvicorn's workers."""
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_ENVIRONMENT]))
    configure_process(settings)
    return create_app(settings)


def settings_environment(settings: ServeSettings) -> dict[str, str]:
    """The environment :func:`app_from_environment` reads ``settings`` from."""
    return {SETTINGS_ENVIRONMENT: json.dumps(asdict(settings))}
