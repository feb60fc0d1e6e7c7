"""A Cloud Storage emulator on 127.0.0.1 for the gs:// tests: `python tests/gcs_emulator.py PORT`.

It is gcp-storage-emulator (a JSON-API server in Python), with two parts of Cloud Storage
added that the emulator leaves out and that orbax's checkpoints (TensorStore's OCDBT) rely on:

- every download names the object's generation (`x-goog-generation`), as Cloud Storage does;
- writes and deletes honour `ifGenerationMatch` (`0`: only if absent), answering 412 when
  the object's generation differs, as Cloud Storage does.

Everything else is the emulator's own behaviour. It serves one request at a time, so a
precondition check and the write that follows it cannot interleave with another request.

Clients reach it through the variables `client_env(port)` returns.
"""

from __future__ import annotations

import sys
import urllib.parse
from http import HTTPStatus

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator import settings
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

BUCKET = "synthjax-ci"


def client_env(port: int) -> dict[str, str]:
    """Environment that points gcsfs (through epath) and TensorStore (orbax) at the emulator."""
    url = f"http://127.0.0.1:{port}"
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs and the google-cloud clients
        "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's array store
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: no credential lookup
        # gcsfs's experimental client asks a gRPC control API for the bucket's layout first;
        # the emulator has none (each call would wait out a 60 s timeout).
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


def _target(path: str, query: dict[str, list[str]]) -> tuple[str, str] | None:
    """(bucket, object) a request writes, reads or deletes; None for other requests."""
    parts = path.split("/")
    for prefix in (settings.UPLOAD_API_ENDPOINT, settings.API_ENDPOINT):
        head = [*prefix.split("/"), "b"]
        if parts[: len(head)] == head and len(parts) > len(head):
            bucket = parts[len(head)]
            rest = parts[len(head) + 1 :]
            if rest[:1] != ["o"]:
                return None
            if len(rest) >= 2:
                return bucket, urllib.parse.unquote("/".join(rest[1:]))
            if "name" in query:
                return bucket, query["name"][0]
    return None


def _generation(storage, bucket: str, name: str) -> str:
    try:
        return str(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return "0"


_handle = emulator_server.Router.handle


def _handle_with_preconditions(self, method):
    request = self._request_handler
    url = urllib.parse.urlsplit(request.path)
    query = urllib.parse.parse_qs(url.query)
    wanted = query.get("ifGenerationMatch")
    target = _target(url.path, query)
    if wanted and target is not None and _generation(request.storage, *target) != wanted[0]:
        request.send_response(HTTPStatus.PRECONDITION_FAILED.value)
        body = b'{"error": {"code": 412, "message": "conditionNotMet"}}'
        request.send_header("Content-type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
        return
    _handle(self, method)


_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    except NotFound:
        pass
    return _download(request, response, storage, *args, **kwargs)


def main(port: int) -> None:
    emulator_server.Router.handle = _handle_with_preconditions
    objects.download = _download_with_generation
    server = emulator_server.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    print(f"gcs emulator on 127.0.0.1:{port}", flush=True)
    server.run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
