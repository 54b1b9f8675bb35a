"""The HTTP routes of `vecstore serve` (FastAPI; its OpenAPI description at /openapi.json):
each parses a request, calls the Store through the
ReviewService, and returns JSON. Library errors become JSON answers: unknown image 404,
another writer 409, bad values 422."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from .. import __version__, dicom
from ..browse import ImageFilter, review_queue, select
from ..errors import BadInput, EmbedError, NoRun, UnknownImage, VecstoreError
from ..params import parse_where
from . import render
from .options import ServeOptions
from .security import Guard
from .service import JOB_KINDS, Busy, ReviewService

STATIC = resources.files("vecstore.web") / "static"
ERRORS = [(UnknownImage, 404), (NoRun, 404), (Busy, 409), (BadInput, 422), (EmbedError, 422)]
MAX_LABEL = 128  # characters of a label


class LabelBody(BaseModel):
    label: str = Field(min_length=1, max_length=MAX_LABEL)
    new_class: bool = False  # a label no image has yet
    queue: Literal["review", "next"] | None = None  # where it was given (how chosen)


class UndoBody(BaseModel):
    batch: int = Field(ge=1)


class JobBody(BaseModel):
    kind: Literal[JOB_KINDS]  # type: ignore[valid-type]
    space: str | None = None


def create_app(store_path: str | os.PathLike[str], options: ServeOptions | None = None) -> FastAPI:
    """The service over the store at ``store_path`` (opened now, to read)."""
    options = options or ServeOptions()
    service = ReviewService(store_path, options)
    # the OpenAPI description at /openapi.json; no /docs page: FastAPI's loads Swagger UI from
    # a CDN with an inline script, which this service's CSP (and an offline machine) forbid
    app = FastAPI(
        title="vecstore", version=__version__, description=__doc__, docs_url=None, redoc_url=None
    )
    app.state.service = service
    app.middleware("http")(Guard(options.token, options.port))
    _errors(app)
    _pages(app)
    _image_routes(app, service)
    _label_routes(app, service)
    _other_routes(app, service)
    app.router.on_shutdown.append(service.close)
    return app


def _errors(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        status = next((code for kind, code in ERRORS if isinstance(exc, kind)), 400)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    app.add_exception_handler(VecstoreError, answer)


def _pages(app: FastAPI) -> None:
    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        import plotly  # its bundled plotly.js, as the report embeds it

        path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        return FileResponse(str(path), media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})


def _image_routes(app: FastAPI, service: ReviewService) -> None:
    lim = service.options.limits

    @app.get("/api/images")
    def images(
        label: str | None = None,
        pseudo_label: str | None = None,
        expert: str | None = None,
        source: Literal["expert", "propagated", "none"] | None = None,
        cluster: int | None = None,
        needs_review: bool | None = None,
        where: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI's idiom)
        sort: Literal["id", "confidence", "p_positive"] = "id",
        order: Literal["asc", "desc"] = "asc",
        offset: int = Query(0, ge=0),
        limit: int = Query(60, ge=1, le=500),
    ) -> dict[str, Any]:
        """Images filtered (label in force, pseudo-label, expert label, source, cluster,
        review flag, metadata `where=COLUMN=VALUE`), sorted and paginated."""
        f = ImageFilter(
            label, pseudo_label, expert, source, cluster, needs_review, parse_where(where),
            sort, order == "desc", offset, limit,
        )  # fmt: skip
        table = service.table()
        total, items = select(table, f)
        out = {"total": total, "offset": offset, "limit": limit, "items": items}
        return {**out, "classes": table.classes, "positive": table.positive}

    @app.get("/api/images/{image_id}")
    def image(image_id: int) -> dict[str, Any]:
        """One image: labels, pseudo-label and probabilities, review reason, metadata,
        label history, size and bits."""
        table = service.table()
        out = service.store.image_record(table, image_id)
        return {**out, **render.describe(_file(service, image_id), lim)}

    @app.get("/api/images/{image_id}/thumb", response_class=Response)
    def thumb(image_id: int, size: int = Query(160, ge=16, le=512)) -> Response:
        png = render.thumbnail_png(_file(service, image_id), size, lim)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})

    @app.get("/api/images/{image_id}/full", response_class=Response)
    def full(image_id: int, center: float | None = None, width: float | None = None) -> Response:
        """The image whole, as PNG; 16-bit images windowed by center / width."""
        png = render.full_png(_file(service, image_id), render.Window(center, width), lim)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})

    @app.get("/api/images/{image_id}/neighbours")
    def neighbours(
        image_id: int,
        space: str | None = None,
        k: int = Query(service.options.neighbours, ge=1, le=service.options.max_k),
    ) -> dict[str, Any]:
        """The most similar stored images, with their labels."""
        res = service.store.query(image_id=image_id, space=space, k=k)
        return _hits(service, res)

    @app.post("/api/query")
    async def query_upload(
        request: Request,
        file: Annotated[UploadFile, File()],
        space: Annotated[str | None, Form()] = None,
        k: Annotated[int, Form(ge=1, le=100)] = 8,
    ) -> dict[str, Any]:
        """The stored images most similar to an uploaded one (413 beyond the upload cap)."""
        data = await file.read(service.options.max_upload + 1)
        if len(data) > service.options.max_upload:
            raise HTTPException(413, f"upload over {service.options.max_upload} bytes")
        name = os.path.basename(file.filename or "upload")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload"
            path.write_bytes(data)
            try:
                res = service.store.query(path=str(path), space=space, k=k)
            except BadInput as exc:
                raise BadInput(str(exc).replace(str(path), name)) from None
        return {**_hits(service, res), "query": f"upload {file.filename or ''}".strip()}


def _label_routes(app: FastAPI, service: ReviewService) -> None:
    @app.post("/api/images/{image_id}/label")
    def set_label(image_id: int, body: LabelBody, request: Request) -> dict[str, Any]:
        """Set the expert label (source `review`, recorded with the reviewer and time)."""
        who = service.reviewer(request.headers.get("x-reviewer"))
        chosen = "suggested" if body.queue == "next" else "review"
        ch = service.set_label(
            image_id, body.label, new_class=body.new_class, source="review", who=who,
            chosen=chosen,
        )  # fmt: skip
        return {**ch.to_dict(), "who": who, "at": _now()}

    @app.delete("/api/images/{image_id}/label")
    def remove_label(image_id: int, request: Request) -> dict[str, Any]:
        who = service.reviewer(request.headers.get("x-reviewer"))
        with service.writing("remove") as store:
            ch = store.remove_label(str(image_id), who=who, source="review")
        return {**ch.to_dict(), "who": who, "at": _now()}

    @app.post("/api/labels/undo")
    def undo(body: UndoBody, request: Request) -> dict[str, Any]:
        """Undo a label batch: its images get back exactly the labels they had."""
        who = service.reviewer(request.headers.get("x-reviewer"))
        with service.writing("undo") as store:
            out = store.undo_labels(body.batch, who=who)
        return {**out.to_dict(), "who": who, "at": _now()}

    @app.get("/api/queue/review")
    def queue_review(
        offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)
    ) -> dict[str, Any]:
        """Flagged pseudo-labels, the riskiest first (a possible missed positive first)."""
        table = service.table()
        total, items = review_queue(table, offset, limit)
        return {"total": total, "items": items, "classes": table.classes}

    @app.post("/api/queue/next")
    def queue_next(
        request: Request, n: int = Query(20, ge=1, le=200), space: str | None = None
    ) -> dict[str, Any]:
        """The images whose labels would help most (`vecstore suggest`: recorded as a run
        with the reviewer, so a POST)."""
        who = service.reviewer(request.headers.get("x-reviewer"))
        with service.writing("suggest") as store:
            picks = store.suggest(n, space, who=who)
        # without the suggestion's own grouping (not the cluster run the gallery shows)
        # and its empty `label` column (for a CSV to fill)
        items = [
            {**p.to_dict(), "name": os.path.basename(p.path or ""), "cluster": None} for p in picks
        ]
        for it in items:
            it.pop("label")
        return {"items": items, "classes": service.table().classes}


def _other_routes(app: FastAPI, service: ReviewService) -> None:
    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        """The dashboard: counts, flagged share, recall promise, learning curve, jobs."""
        table = service.table()
        spaces = [sp.name for sp in service.store.spaces()]
        out = service.store.dashboard(table)
        jobs = [j.to_dict() for j in service.jobs()]
        return {**out, "store": str(service.path), "spaces": spaces, "jobs": jobs}

    @app.post("/api/jobs", status_code=202)
    def start_job(body: JobBody) -> dict[str, Any]:
        """Start a propagate, evaluate or cluster run in the background."""
        return service.start_job(body.kind, body.space).to_dict()

    @app.get("/api/jobs")
    def jobs() -> list[dict[str, Any]]:
        return [j.to_dict() for j in service.jobs()]

    @app.get("/api/jobs/{job_id}")
    def job(job_id: int) -> dict[str, Any]:
        found = service.job(job_id)
        if found is None:
            raise HTTPException(404, f"no job {job_id}")
        return found.to_dict()


def _file(service: ReviewService, image_id: int) -> str:
    path = service.store.image_file(image_id)
    if not dicom.file_exists(path):  # a frame: its file
        raise UnknownImage(f"the file of image {image_id} is missing on disk: {path}")
    return path


def _hits(service: ReviewService, res: Any) -> dict[str, Any]:
    """Query hits with the label in force of each (expert, else pseudo) and its source."""
    table, items = service.table(), []
    for h in res.hits:
        label, source = table.label_of(h.id)
        items.append(
            {
                **{k: getattr(h, k) for k in ("rank", "id", "path", "similarity")},
                "name": os.path.basename(h.path),
                "label": label,
                "source": source,
            }
        )
    # query_id: the stored image the query is (an upload of its very bytes): left out
    return {"space": res.space, "query": res.query, "query_id": res.query_id, "items": items}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
