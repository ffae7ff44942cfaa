"""`/docs`: Swagger UI for the JSON API, started by a script file (the CSP allows no inline
scripts). Swagger UI's own files are served from the `fastapi-offline` package: nothing
is fetched from a CDN, so the page works on a machine without internet."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "templates" / "web" / "static"
SWAGGER_FILES = Path(fastapi_offline.__file__).resolve().parent / "static"
SWAGGER = "/static/swagger"

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Relink API</title>
  <link rel="stylesheet" href="{SWAGGER}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"><p>Relink API: the OpenAPI description is at
    <a href="/openapi.json">/openapi.json</a>.</p></div>
  <script src="{SWAGGER}/swagger-ui-bundle.js"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""


@router.get("/docs")
def docs() -> Response:
    return HTMLResponse(PAGE)


@router.get("/static/swagger/swagger-ui.css")
def swagger_css() -> Response:
    return FileResponse(SWAGGER_FILES / "swagger-ui.css", media_type="text/css")


@router.get("/static/swagger/swagger-ui-bundle.js")
def swagger_js() -> Response:
    return FileResponse(SWAGGER_FILES / "swagger-ui-bundle.js", media_type="text/javascript")


@router.get("/static/docs.js")
def docs_script() -> Response:
    return FileResponse(STATIC / "docs.js", media_type="text/javascript")
