"""The search service: a FastAPI app that ranks a stored gallery against an uploaded picture.

Images are only ever served by integer index into the feature sets given at start-up; no path from
a request reaches the file system. Uploads are bounded in bytes (before parsing) and in decoded
pixels, decoded from a short list of formats, and model forwards run one at a time under a lock.
Cameras and people are named as the data set names them; crops ingested from video also say where
and when they were seen, and their frame is served with the box drawn. ``/docs`` serves Swagger UI
from local files (the fastapi-offline package), so it works offline.
"""

import dataclasses
import io
import ipaddress
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, File, HTTPException, Query, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reidkit.data.dataset import Sighting
from reidkit.errors import ReidkitError
from reidkit.models.inference import extract_features
from reidkit.models.io import load_model
from reidkit.models.spec import InputSizeError, NoEmbeddingError
from reidkit.retrieval.features import (
    FeatureSet,
    check_known_model,
    check_same_model,
    file_sha256,
    load_features,
)
from reidkit.retrieval.search import ApproximateIndex, GalleryIndex, load_index_for, search_subset

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
MAX_K = 1000  # longest result list one request may ask for
MAX_PIXELS = 4096 * 4096  # decoded size limit: a small PNG can expand to gigabytes of pixels
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")  # what Pillow may decode from an upload
MULTIPART_OVERHEAD = 64 * 2**10  # room for the multipart envelope around the file bytes
MAX_CONNECTIONS = 64  # bounds the memory held by buffered request bodies
# The page loads only its own script, style and images (and blob: previews of the user's file).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ServiceError(ReidkitError, ValueError):
    """A service that cannot start as asked (files that do not fit together, bad settings)."""


# ----------------------------------------------------------------------------- response schemas
class Health(BaseModel):
    status: str
    gallery_size: int
    query_size: int
    model: str
    feature_dim: int
    input_size: tuple[int, int]
    max_k: int
    k_default: int
    max_upload_bytes: int
    cameras: list[str]  # the gallery's camera names, for the camera filter
    footage: bool  # the gallery holds crops from video (time filter, frames)
    time_range: tuple[float, float] | None  # earliest and latest sighting, seconds


SIGHTING = "where and when the crop was seen in a video; video is the file's name (no folders)"


class SearchResult(BaseModel):
    id: int
    path: str
    distance: float
    pid: int
    camid: int
    camera: str  # the data set's own camera name (camid is reidkit's 0-based index)
    identity: str | None  # the data set's own person name; None when unknown
    sighting: Sighting | None = Field(None, description=SIGHTING)


class QueryItem(BaseModel):
    id: int
    pid: int
    camid: int
    camera: str
    identity: str | None
    sighting: Sighting | None = Field(None, description=SIGHTING)


class SearchResponse(BaseModel):
    results: list[SearchResult]
    query: QueryItem | None = None


class QueryList(BaseModel):
    queries: list[QueryItem]


class ErrorMessage(BaseModel):
    detail: str


# ----------------------------------------------------------------------------- the engine
class SearchEngine:
    """Model, transform and gallery index of one service; ``embed`` and ``search`` are thread-safe.

    Model forwards run one at a time under a lock: concurrent forwards would only compete for the
    same cores and multiply peak memory. Searches of the read-only index don't wait for them.
    """

    def __init__(self, checkpoint: str | Path, gallery: FeatureSet, query: FeatureSet | None,
                 input_size: Sequence[int] | None, approximate: ApproximateIndex | None = None) -> None:
        self.model = load_model(checkpoint)
        recorded = gallery.meta.get("model_sha256")
        if recorded is not None and recorded != file_sha256(checkpoint):
            raise ServiceError(
                f"the gallery features were extracted with another model file "
                f"({gallery.meta.get('model_file', 'unknown')}), not {checkpoint}; re-extract the "
                "gallery with this checkpoint (reidkit extract) or serve the model it was made with"
            )
        self.model_name = str(self.model.config["name"])
        spec = self.model.spec
        try:
            spec.check_embedding()
            self.input_size = spec.resolve_size(
                _resolve_input_size(input_size, spec.input_size, gallery.meta, checkpoint))
        except (NoEmbeddingError, InputSizeError) as exc:
            raise ServiceError(f"{checkpoint}: {exc}") from None
        self.transform = spec.test_transform(self.input_size)
        self.flip = bool(gallery.meta.get("flip", False))
        self.gallery = gallery
        # above the threshold the index built by `reidkit index` is used, if there is one
        self.index = GalleryIndex.from_feature_set(gallery, approximate=approximate)
        self._lock = threading.Lock()
        self.feature_dim = self._embed(torch.zeros(1, 3, *self.input_size)).shape[1]
        for name, fs in (("gallery", gallery), ("query", query)):
            if fs is not None and fs.features.shape[1] != self.feature_dim:
                raise ServiceError(
                    f"the {name} features are {fs.features.shape[1]}-d but {checkpoint} gives "
                    f"{self.feature_dim}-d features; extract the {name} with this checkpoint "
                    "(reidkit extract)"
                )

    def _embed(self, batch: torch.Tensor) -> np.ndarray:
        with self._lock:
            return extract_features(self.model, [batch], flip=self.flip)

    def embed(self, image: Image.Image) -> np.ndarray:
        """The (1, D) feature of an RGB image, computed as the gallery's were."""
        return self._embed(self.transform(image).unsqueeze(0))

    def search(self, feature: np.ndarray, k: int, mask: np.ndarray | None = None) -> list[SearchResult]:
        """The ``k`` nearest gallery items to one (1, D) feature, nearest first, among ``mask``."""
        distances, indices = search_subset(self.index, self.gallery, feature, k, mask)
        g = self.gallery
        return [SearchResult(id=int(i), path=str(g.paths[i]), distance=float(d), **_describe(g, int(i)))
                for d, i in zip(np.asarray(distances)[0], np.asarray(indices)[0], strict=True)]


def _describe(fs: FeatureSet, i: int) -> dict[str, Any]:
    """pid, camid, names and sighting of image ``i``, as the response models hold them."""
    s = fs.sightings[i] if fs.sightings is not None else None
    sighting = None if s is None else dataclasses.replace(s, video=Path(s.video).name)
    return {"pid": int(fs.pids[i]), "camid": int(fs.camids[i]), "camera": fs.camera_label(i),
            "identity": fs.identity_label(i), "sighting": sighting}


def _resolve_input_size(explicit: Sequence[int] | None, trained: Sequence[int] | None,
                        gallery_meta: dict[str, Any], checkpoint: str | Path) -> tuple[int, int]:
    """The (height, width) queries are resized to: given, or as recorded at training/extraction."""
    known = {source: tuple(int(v) for v in size) for source, size in (
        ("input_size argument", explicit), ("checkpoint", trained),
        ("gallery features", gallery_meta.get("input_size")),
    ) if size is not None}
    if not known:
        raise ServiceError(f"{checkpoint} does not record its input size; pass input_size=(height, width) "
                         "(--input-size H W), the size the gallery features were extracted at")
    source, size = next(iter(known.items()))
    if len(size) != 2 or min(size) < 1:
        raise ServiceError(f"input_size must be (height, width) with positive values, got {size}")
    if "input_size argument" not in known and len(set(known.values())) > 1:
        raise ServiceError("the checkpoint and gallery features disagree on the input size: "
                         + ", ".join(f"{s} {h}x{w}" for s, (h, w) in known.items())
                         + "; re-extract the gallery with this checkpoint or pass input_size")
    logger.debug("input size %s from the %s", size, source)
    return size  # type: ignore[return-value]


# ----------------------------------------------------------------------------- request handling
class _BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413 before anything parses them.

    Bodies are read into memory up to the limit (the multipart parser would otherwise spool any
    size to disk first) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, limit: int, max_upload_bytes: int) -> None:
        self.app = app
        self.limit = limit
        self.message = (f"the upload is larger than the {max_upload_bytes:,} byte limit; "
                        "send a smaller image")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": self.message}, status_code=413,
                           headers={"Connection": "close"})(scope, receive, send)


def _decode_upload(data: bytes) -> Image.Image:
    """The uploaded bytes as an RGB image, or a 413/422 that says what is wrong with them."""
    if not data:
        raise HTTPException(422, "the uploaded file is empty; choose an image file")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            if img.width * img.height > MAX_PIXELS:
                raise HTTPException(413, f"the image is {img.width}x{img.height} pixels, more than "
                                         f"the {MAX_PIXELS:,} pixel limit; send a smaller image")
            img.load()
            return img.convert("RGB")
    except Image.UnidentifiedImageError:
        raise HTTPException(422, "the uploaded file is not an image in a supported format "
                                 f"({', '.join(IMAGE_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated").
        raise HTTPException(422, f"the uploaded image cannot be decoded: {exc}") from None


async def _validation_error(_request: Any, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 as one readable sentence: ``k: Input should be less than or equal to 10``."""
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
             for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


async def _internal_error(_request: Any, exc: Exception) -> JSONResponse:
    """A JSON 500 for the page to show; the traceback goes to the server log."""
    logger.error("request failed", exc_info=exc)
    return JSONResponse({"detail": "the server failed to answer this request; see its log"},
                        status_code=500)


def _check_id(fs: FeatureSet, image_id: int, name: str) -> None:
    if image_id >= len(fs.paths):
        raise HTTPException(404, f"there is no {name} image {image_id}; the {name} set has "
                                 f"{len(fs.paths)} images (ids 0 to {len(fs.paths) - 1})")


def _frame_response(fs: FeatureSet, image_id: int) -> Response:
    """The video frame of gallery image ``image_id`` with its box drawn, as a JPEG."""
    from reidkit.retrieval.visualize import frame_picture

    _check_id(fs, image_id, "gallery")
    sighting = fs.sightings[image_id] if fs.sightings is not None else None
    if sighting is None:
        raise HTTPException(404, f"gallery image {image_id} was not cut from a video; only crops "
                                 "ingested with `reidkit ingest` have a frame")
    try:
        picture = frame_picture(sighting)
    except (ValueError, ImportError) as exc:  # VideoError: the video is gone or damaged
        logger.warning("no frame for gallery image %d: %s", image_id, exc)
        raise HTTPException(404, f"the video frame of gallery image {image_id} cannot be read on "
                                 "the server") from None
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return Response(buffer.getvalue(), media_type="image/jpeg",
                    headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"})


def _image_response(fs: FeatureSet, image_id: int, name: str) -> FileResponse:
    _check_id(fs, image_id, name)
    path = Path(fs.paths[image_id])
    if not path.is_file():
        raise HTTPException(404, f"the file of {name} image {image_id} is missing on the server")
    return FileResponse(path, headers={"X-Content-Type-Options": "nosniff",
                                       "Cache-Control": "max-age=3600"})


# ----------------------------------------------------------------------------- the app
def create_app(
    checkpoint: str | Path,
    gallery_features: str | Path,
    *,
    query_features: str | Path | None = None,
    k_default: int = 10,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    input_size: Sequence[int] | None = None,
    allow_unknown_model: bool = False,
) -> FastAPI:
    """The search service for a model file and a gallery feature file (from ``reidkit extract``).

    ``query_features`` adds a query set to pick queries from. ``input_size`` (height, width)
    overrides the size recorded in the checkpoint or the feature files. ``k`` ranges from 1 to
    the gallery size (at most ``MAX_K``) and defaults to ``k_default``. Feature files that do not
    record their model are refused unless ``allow_unknown_model`` (then a warning is logged).
    """
    if max_upload_bytes < 1:
        raise ServiceError(f"max_upload_bytes must be >= 1, got {max_upload_bytes}")
    gallery = load_features(gallery_features)
    check_known_model(gallery, str(gallery_features), allow_unknown_model=allow_unknown_model)
    if not gallery.paths:
        raise ServiceError(f"the gallery {gallery_features} holds no images; extract one with "
                           "`reidkit extract --images FOLDER`")
    k_max = min(MAX_K, len(gallery.paths))
    if not 1 <= k_default <= k_max:
        raise ServiceError(f"k_default must be between 1 and {k_max} (gallery size {len(gallery.paths)}"
                         f", at most {MAX_K}), got {k_default}")
    query = load_features(query_features) if query_features is not None else None
    if query is not None:
        check_same_model(query, gallery, allow_unknown_model=allow_unknown_model)
    approximate = load_index_for(gallery_features, len(gallery), gallery.dim,
                                 gallery.meta.get("metric", "euclidean"))
    engine = SearchEngine(checkpoint, gallery, query, input_size, approximate)
    cameras = sorted({gallery.camera_label(i) for i in range(len(gallery))}, key=_natural)
    times = [s.time for s in gallery.sightings or () if s is not None]
    time_range = (min(times), max(times)) if times else None

    # Swagger UI's script and style come from the fastapi-offline package, not from a CDN.
    app = FastAPIOffline(
        title="reidkit search",
        summary="Person re-identification: rank a gallery against a query picture.",
        version="1",
        responses={422: {"model": ErrorMessage, "description": "invalid request"}},
        redoc_url=None,
        favicon_url="/favicon.ico",
        static_url="/docs-static",
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(_BodyLimit, limit=max_upload_bytes + MULTIPART_OVERHEAD,
                       max_upload_bytes=max_upload_bytes)
    app.state.engine = engine
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    k_param = Annotated[int, Query(ge=1, le=k_max, description="number of results")]
    image_id = Annotated[int, PathParam(ge=0, description="index into the set")]
    not_found = {404: {"model": ErrorMessage, "description": "no such image"}}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "max-age=86400"})

    camera_param = Annotated[list[str] | None, Query(
        description="only gallery images of these cameras (names as in /health; repeat for several)")]
    time_from_param = Annotated[float | None, Query(
        description="only crops seen at or after this time (seconds into their video)")]
    time_to_param = Annotated[float | None, Query(
        description="only crops seen at or before this time (seconds into their video)")]

    def gallery_mask(camera: list[str] | None, time_from: float | None,
                     time_to: float | None) -> np.ndarray | None:
        unknown = sorted(set(camera or ()) - set(cameras))
        if unknown:
            raise HTTPException(422, f"camera: no gallery camera is named {', '.join(unknown)}; the "
                                     f"gallery's cameras are {', '.join(cameras)}")
        if (time_from is not None or time_to is not None) and time_range is None:
            raise HTTPException(422, "time_from/time_to: this gallery holds no crops from video, so "
                                     "its images have no time")
        if time_from is not None and time_to is not None and time_from > time_to:
            raise HTTPException(422, f"time_from ({time_from}) is after time_to ({time_to})")
        return gallery.select(camera, time_from, time_to)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        """Service status, gallery and query set sizes, and the model in use."""
        return Health(status="ok", gallery_size=len(gallery.paths),
                      query_size=len(query.paths) if query is not None else 0,
                      model=engine.model_name, feature_dim=engine.feature_dim,
                      input_size=engine.input_size, max_k=k_max, k_default=k_default,
                      max_upload_bytes=max_upload_bytes, cameras=cameras,
                      footage=time_range is not None, time_range=time_range)

    @app.post("/search", response_model=SearchResponse, responses={
        413: {"model": ErrorMessage, "description": "upload too large"}})
    async def search(
        image: Annotated[UploadFile, File(description="query picture (JPEG, PNG, WebP, BMP, GIF)")],
        k: k_param = k_default,
        camera: camera_param = None,
        time_from: time_from_param = None,
        time_to: time_to_param = None,
    ) -> SearchResponse:
        """Rank the gallery against an uploaded picture of a person."""
        mask = gallery_mask(camera, time_from, time_to)
        data = await image.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"the upload is larger than the {max_upload_bytes:,} byte limit; "
                                     "send a smaller image")
        img = await run_in_threadpool(_decode_upload, data)
        feature = await run_in_threadpool(engine.embed, img)
        return SearchResponse(results=await run_in_threadpool(engine.search, feature, k, mask))

    def require_query() -> FeatureSet:
        if query is None:
            raise HTTPException(404, "this service has no query set; start it with query features "
                                     "(--query FEATURES) to pick queries")
        return query

    @app.post("/search/query/{query_id}", response_model=SearchResponse, responses=not_found)
    async def search_query(query_id: image_id, k: k_param = k_default, camera: camera_param = None,
                           time_from: time_from_param = None,
                           time_to: time_to_param = None) -> SearchResponse:
        """Rank the gallery against a stored query feature."""
        fs = require_query()
        _check_id(fs, query_id, "query")
        mask = gallery_mask(camera, time_from, time_to)
        results = await run_in_threadpool(engine.search, fs.features[query_id:query_id + 1], k, mask)
        return SearchResponse(results=results, query=QueryItem(id=query_id, **_describe(fs, query_id)))

    @app.get("/queries", response_model=QueryList, responses=not_found)
    def queries() -> QueryList:
        """The ids, pids and cameras of the query set."""
        fs = require_query()
        return QueryList(queries=[QueryItem(id=i, **_describe(fs, i)) for i in range(len(fs))])

    @app.get("/gallery/{gallery_id}", response_class=FileResponse, responses=not_found)
    def gallery_image(gallery_id: image_id) -> FileResponse:
        """Gallery image number ``gallery_id``."""
        return _image_response(gallery, gallery_id, "gallery")

    @app.get("/gallery/{gallery_id}/frame", response_class=Response, responses={
        200: {"content": {"image/jpeg": {}}, "description": "the frame, box drawn"}, **not_found})
    def gallery_frame(gallery_id: image_id) -> Response:
        """The video frame gallery image ``gallery_id`` was cut from, with its box drawn."""
        return _frame_response(gallery, gallery_id)

    @app.get("/query/{query_id}", response_class=FileResponse, responses=not_found)
    def query_image(query_id: image_id) -> FileResponse:
        """Query image number ``query_id``."""
        return _image_response(require_query(), query_id, "query")

    return app


def serve(
    checkpoint: str | Path,
    gallery_features: str | Path,
    *,
    query_features: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    k_default: int = 10,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    input_size: Sequence[int] | None = None,
    log_level: str = "info",
    allow_unknown_model: bool = False,
) -> None:
    """Run the search service with uvicorn until interrupted; loopback only unless ``host`` says so."""
    import uvicorn

    app = create_app(checkpoint, gallery_features, query_features=query_features,
                     k_default=k_default, max_upload_bytes=max_upload_bytes, input_size=input_size,
                     allow_unknown_model=allow_unknown_model)
    if not _is_loopback(host):
        logger.warning("serving on %s: the service has no authentication; anyone who can reach "
                       "this address can search the gallery and see its images", host)
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=MAX_CONNECTIONS)


def _natural(name: str) -> tuple[int, int | str]:
    """Sort key putting "2" before "10" and numbers before other names."""
    return (0, int(name)) if name.isdigit() else (1, name)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
