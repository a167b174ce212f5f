"""HTTP search service and its web page: ``create_app`` builds the app, ``serve`` runs it."""

try:
    from reidkit.serve.app import create_app, serve
except ModuleNotFoundError as exc:  # the web stack is an optional extra
    if exc.name not in {"fastapi", "starlette", "multipart", "python_multipart", "uvicorn",
                        "fastapi_offline"}:
        raise
    raise ModuleNotFoundError(
        f"the search service needs {exc.name}, from the 'serve' extra: pip install 'reidkit[serve]'"
    ) from exc

__all__ = ["create_app", "serve"]
