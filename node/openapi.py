"""The OpenAPI 3.1 document of the node's HTTP API, served at ``/api/openapi.json``.

Written by hand, next to the routes it describes; a test fails when a route exists that
this document does not describe.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import __version__


def _params(*specs: tuple[str, ...]) -> list[dict[str, Any]]:
    """(name, where, type) or (name, where, type, description); path parameters are
    required."""
    out = []
    for name, where, kind, *about in specs:
        param: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path",
            "schema": {"type": kind},
        }
        if about:
            param["description"] = about[0]
        out.append(param)
    return out


def _op(
    summary: str,
    *,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    auth: bool = False,
    ok: str = "200",
    content: str = "application/json",
    schema: str | None = None,
) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema}"}} if schema else {}
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {"description": "success", "content": {content: media}},
            "4XX": {
                "description": "a client error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    }
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {body: {"schema": {"type": "object"}}}}
    if auth:
        op["security"] = [{"bearer": []}, {"session": []}]
    return op


ID = ("id", "path", "integer")
TOKEN = ("token", "query", "string")  # an API token, as Authorization: Bearer (Civitai's ?token=)
PAGE = (("limit", "query", "integer"), ("page", "query", "integer"))
UPLOAD = {
    "name": "upload",
    "in": "query",
    "required": False,
    "description": "a random id (16-64 of A-Za-z0-9_-) to watch at /api/uploads/{id}/events",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
}

PATHS: dict[str, dict[str, Any]] = {
    "/.well-known/civitas": {"get": _op("Node identity: did, name, version, endpoints")},
    "/healthz": {"get": _op("200 when the database answers, else 503")},
    "/api/openapi.json": {"get": _op("This document")},
    "/metrics": {
        "get": _op(
            "Prometheus metrics, text format (admin unless metrics.public)",
            auth=True,
            content="text/plain; version=0.0.4",
        )
    },
    "/api/auth/login": {"post": _op("Log in; sets the session cookie", body="application/json")},
    "/api/auth/logout": {"post": _op("End the session", auth=True)},
    "/api/auth/signup": {
        "post": _op(
            "Create a member account and log it in (as accounts.registration allows)",
            body="application/json",
            ok="201",
        )
    },
    "/api/auth/registration": {"get": _op("Who may sign up: open, invite or closed")},
    "/api/admin/invites": {
        "get": _op("List invite codes' rows (admin)", auth=True),
        "post": _op(
            "Make an invite code, shown once (an admin's session or the admin token)",
            auth=True,
            ok="201",
        ),
    },
    "/api/admin/invites/{id}": {
        "delete": _op(
            "Delete an unused invite (an admin's session or the admin token)",
            params=_params(("id", "path", "integer")),
            auth=True,
        ),
    },
    "/api/auth/me": {"get": _op("Who you are", auth=True)},
    "/api/admin/status": {"get": _op("Node status and counts (admin)", auth=True)},
    "/api/admin/users": {
        "get": _op("List local accounts (admin)", auth=True),
        "post": _op(
            "Create an account (an admin's session or the admin token, not an API token)",
            body="application/json",
            auth=True,
            ok="201",
        ),
    },
    "/api/admin/users/{name}/tokens": {
        "post": _op(
            "Create an API token (a session or the admin token; an API token: 403)",
            params=_params(("name", "path", "string")),
            body="application/json",
            auth=True,
            ok="201",
        ),
        "get": _op(
            "List a user's API tokens (a session or the admin token; an API token: 403)",
            params=_params(("name", "path", "string")),
            auth=True,
        ),
    },
    "/api/admin/users/{name}/tokens/{id}": {
        "delete": _op(
            "Revoke an API token (a session or the admin token; an API token: 403)",
            params=_params(("name", "path", "string"), ("id", "path", "integer")),
            auth=True,
        ),
    },
    "/api/v1/models": {
        "get": _op(
            "Search models (Civitai-compatible)",
            params=_params(
                ("limit", "query", "integer", "1-100, default 20"),
                ("page", "query", "integer", "page-based paging: metadata gains totals"),
                ("cursor", "query", "string", "metadata.nextCursor of the previous page"),
                ("query", "query", "string", "full text, or a creator's name"),
                ("tag", "query", "string"),
                ("username", "query", "string", "a creator, in any case (name@node: a peer's)"),
                ("types", "query", "string", "model types, comma-separated or repeated"),
                ("baseModels", "query", "string", "base models, comma-separated or repeated"),
                ("sort", "query", "string", "Newest, Most Downloaded, Highest Rated, Name"),
                ("nsfw", "query", "boolean", "false: PG and PG13 models and gallery images"),
                ("rating", "query", "number", "Civitai's star rating: at least N stars (0-5)"),
                ("contentRating", "query", "string", "PG, PG13, R, X (comma-separated)"),
                ("ids", "query", "string", "model ids (up to 100); ignored beside query"),
                (
                    "period",
                    "query",
                    "string",
                    "AllTime, Year, Month, Week, Day: a version published within it",
                ),
                ("favorites", "query", "boolean", "the requester's favorites (a user: 401)"),
                ("hidden", "query", "boolean", "the requester's hidden models (a user: 401)"),
                ("primaryFileOnly", "query", "boolean", "each version keeps its primary file"),
                (
                    "supportsGeneration",
                    "query",
                    "boolean",
                    "a Checkpoint, LORA, LoCon or DoRA whose creator grants RentCivit",
                ),
                ("allowNoCredit", "query", "boolean"),
                ("allowDerivatives", "query", "boolean"),
                ("allowDifferentLicenses", "query", "boolean"),
                (
                    "allowCommercialUse",
                    "query",
                    "string",
                    "None, Image, RentCivit, Rent, Sell: grants any of them",
                ),
                TOKEN,
            ),
            schema="CivitaiModelPage",
        ),
    },
    "/api/v1/models/{id}": {
        "get": _op("One model with its versions", params=_params(ID, TOKEN), schema="CivitaiModel"),
    },
    "/api/v1/model-versions/{id}": {
        "get": _op("One model version", params=_params(ID, TOKEN), schema="CivitaiVersion"),
    },
    "/api/v1/{tail}": {
        "options": _op(
            "CORS preflight for reads (GET, HEAD) of the Civitai-compatible API; one for "
            "any other method is refused (403, no Access-Control-Allow-Origin)",
            params=_params(("tail", "path", "string")),
            ok="204",
        ),
    },
    "/api/v1/model-versions/by-hash/{hash}": {
        "get": _op(
            "The version holding a file with this hash (any type, any case); where several "
            "authors claim the file, the first-seen claim, the others in civitas.disputedBy",
            params=_params(("hash", "path", "string")),
        ),
    },
    "/api/v1/model-versions/by-hash": {
        "post": _op(
            "Versions for up to 100 SHA256 hashes (one per hash, as the GET chooses)",
            body="application/json",
        ),
    },
    "/api/v1/images": {
        "get": _op(
            "Images with generation metadata",
            params=_params(
                *PAGE,
                ("modelId", "query", "integer"),
                ("modelVersionId", "query", "integer"),
                ("postId", "query", "integer", "a post: the images published with a version"),
                ("username", "query", "string"),
                ("withMeta", "query", "boolean"),
                (
                    "nsfw",
                    "query",
                    "string",
                    "None, Soft, Mature, X: rated at most that; true: R and X only; "
                    "false: PG only; absent: all",
                ),
                ("sort", "query", "string", "Newest, Oldest, Most Reactions, Most Comments"),
                ("period", "query", "string", "AllTime, Year, Month, Week, Day"),
                ("cursor", "query", "string", "metadata.nextCursor of the previous page"),
                TOKEN,
            ),
            schema="CivitaiImagePage",
        ),
    },
    "/api/v1/creators": {
        "get": _op(
            "Creators",
            params=_params(*PAGE, ("query", "query", "string"), TOKEN),
            schema="CivitaiPage",
        ),
    },
    "/api/v1/tags": {
        "get": _op(
            "Tags", params=_params(*PAGE, ("query", "query", "string"), TOKEN), schema="CivitaiPage"
        ),
    },
    "/api/download/models/{id}": {
        "get": _op(
            "Download a version's file: the primary one, or the one type/format/size/fp choose "
            "(Range, Content-Disposition)",
            params=_params(
                ID,
                ("type", "query", "string", "Model, Pruned Model, VAE, … (Civitai's file types)"),
                ("format", "query", "string", "SafeTensor, PickleTensor, GGUF, … Other"),
                ("size", "query", "string", "full or pruned"),
                ("fp", "query", "string", "fp16, fp8, nf4, fp32 or bf16"),
                TOKEN,
            ),
            content="application/octet-stream",
        ),
    },
    "/images/{sha256}/{transform}/{name}": {
        "get": _op(
            "An image; transform is width=N (resized) or original=true",
            params=_params(
                ("sha256", "path", "string"),
                ("transform", "path", "string"),
                ("name", "path", "string"),
            ),
            content="image/*",
        ),
    },
    "/api/models": {
        "post": _op(
            "Publish: multipart metadata (JSON), image parts, then the file part",
            params=[UPLOAD],
            body="multipart/form-data",
            auth=True,
            ok="201",
        ),
    },
    "/api/models/publish-path": {
        "post": _op(
            "Publish a file on the node's disk (admin)",
            body="application/json",
            auth=True,
            ok="201",
        ),
    },
    "/api/models/{model_id}/versions": {
        "post": _op(
            "Publish a new version of a model (multipart, like /api/models)",
            params=[*_params(("model_id", "path", "integer")), UPLOAD],
            body="multipart/form-data",
            auth=True,
            ok="201",
        ),
    },
    "/api/uploads/{id}/events": {
        "get": _op(
            "An upload's progress as Server-Sent Events, until it is done or failed",
            params=_params(("id", "path", "string")),
            auth=True,
            content="text/event-stream",
        ),
    },
    "/scrape": {
        "get": _op(
            "BitTorrent tracker scrape (BEP 48): seeders, leechers, completed; bencoded",
            params=_params(("info_hash", "query", "string")),
            content="text/plain",
        ),
    },
    "/announce": {
        "get": _op(
            "BitTorrent HTTP tracker (BEP 3/23); answers bencoded",
            params=_params(
                ("info_hash", "query", "string"),
                ("peer_id", "query", "string"),
                ("port", "query", "integer"),
                ("left", "query", "integer"),
            ),
            content="text/plain",
        ),
    },
    "/federation/v1/torrents/{infohash}": {
        "get": _op(
            "The .torrent file for an infohash",
            params=_params(("infohash", "path", "string")),
            content="application/x-bittorrent",
        ),
    },
    "/webseed/{sha256}": {
        "get": _op(
            "A file by SHA256, Range-capable (BEP 19 web seed)",
            params=_params(("sha256", "path", "string")),
            content="application/octet-stream",
        ),
    },
    "/api/downloads": {
        "post": _op(
            "Fetch a file over BitTorrent (admin)", body="application/json", auth=True, ok="202"
        ),
        "get": _op("Downloads and seeded torrents (admin)", auth=True),
    },
    "/api/downloads/{infohash}": {
        "get": _op(
            "One download's status (admin)",
            params=_params(("infohash", "path", "string")),
            auth=True,
        ),
    },
    "/federation/v1/records": {
        "get": _op(
            "This node's record log, paged (msgpack)",
            params=_params(("after", "query", "integer"), ("limit", "query", "integer")),
            content="application/msgpack",
        ),
    },
    "/federation/v1/files/{infohash}/records": {
        "get": _op(
            "The signed records describing the version that names a torrent: profile, "
            "model, revisions, version (msgpack list); for magnets from unpeered nodes",
            params=_params(("infohash", "path", "string")),
            content="application/msgpack",
        ),
    },
    "/federation/v1/records/{id}": {
        "get": _op(
            "One visible record (msgpack)",
            params=_params(("id", "path", "string")),
            content="application/msgpack",
        ),
    },
    "/federation/v1/blobs/{sha256}": {
        "get": _op(
            "A file this node holds",
            params=_params(("sha256", "path", "string")),
            content="application/octet-stream",
        ),
    },
    "/federation/v1/inbox": {
        "post": _op("A peer's signed push of up to 50 records", body="application/msgpack"),
    },
    "/api/admin/peers": {
        "get": _op("Peers (admin)", auth=True),
        "post": _op("Peer with a node (admin)", body="application/json", auth=True, ok="201"),
    },
    "/api/admin/peers/{did}": {
        "delete": _op(
            "Stop federating with a node (admin)",
            params=_params(("did", "path", "string")),
            auth=True,
        ),
    },
    "/api/admin/authors/blocked": {"get": _op("Blocked author keys (admin)", auth=True)},
    "/api/admin/authors/{did}/block": {
        "post": _op(
            "Block an author key: refuse and suppress its records (admin)",
            params=_params(("did", "path", "string")),
            body="application/json",
            auth=True,
        ),
    },
    "/api/admin/authors/{did}/unfreeze": {
        "post": _op(
            "Settle an identity frozen by conflicting key rotations (admin)",
            params=_params(("did", "path", "string")),
            body="application/json",
            auth=True,
        ),
    },
    "/api/auth/rotate-key": {"post": _op("Rotate your author key (pre-rotation)", auth=True)},
    "/api/admin/authors/{did}/unblock": {
        "post": _op(
            "Lift an author block (admin)", params=_params(("did", "path", "string")), auth=True
        ),
    },
    "/api/admin/nodes": {"get": _op("Nodes announced through the federation (admin)", auth=True)},
    "/api/admin/peers/{did}/block": {
        "post": _op(
            "Block a peer node (admin)", params=_params(("did", "path", "string")), auth=True
        ),
    },
    "/api/admin/peers/{did}/unblock": {
        "post": _op(
            "Unblock a peer node (admin)", params=_params(("did", "path", "string")), auth=True
        ),
    },
    "/api/admin/sync": {"post": _op("Sync with every peer now (admin)", auth=True)},
    "/api/admin/wanted": {
        "get": _op(
            "Files this node's records need and it does not hold yet, with retries (admin)",
            auth=True,
        ),
    },
    "/api/admin/wanted/retry": {
        "post": _op("Make every wanted file due now (admin)", auth=True),
    },
    "/api/jobs": {
        "post": _op(
            "Submit a generation job (JSON) or a training job (multipart: params, image…, zip)",
            body="application/json",
            auth=True,
            ok="201",
        ),
        "get": _op("Your jobs, newest first", auth=True),
    },
    "/api/jobs/{id}": {
        "get": _op("A job: state, queue position, progress, results", params=_params(ID), auth=True)
    },
    "/api/jobs/{id}/events": {
        "get": _op(
            "Server-Sent Events: the job on every change, until it finishes",
            params=_params(ID),
            auth=True,
            content="text/event-stream",
        )
    },
    "/api/jobs/{id}/cancel": {"post": _op("Cancel a job", params=_params(ID), auth=True)},
    "/api/jobs/{id}/publish": {
        "post": _op(
            "Publish a finished training job's LoRA as a new model (its requester)",
            params=_params(ID),
            body="application/json",
            auth=True,
            ok="201",
        )
    },
    "/api/jobs/{id}/outputs/{sha256}": {
        "get": _op(
            "A finished job's output, private to its requester (or an admin) until published",
            params=_params(ID, ("sha256", "path", "string")),
            auth=True,
            content="application/octet-stream",
        )
    },
    "/api/jobs/{id}/outputs/{sha256}/publish": {
        "post": _op(
            "Publish one generated image as the requester (only they may): an image record "
            "with the worker's attestation, rated as its model or stricter ({rating})",
            params=_params(ID, ("sha256", "path", "string")),
            body="application/json",
            auth=True,
            ok="201",
        )
    },
    "/api/compute/workers/{did}": {
        "delete": _op(
            "Remove a worker (its owner or an admin): its requests are refused from then "
            "on, the jobs it held requeued; 404 for a worker that is not yours",
            params=_params(("did", "path", "string")),
            auth=True,
        )
    },
    "/api/compute/workers/{did}/serves": {
        "post": _op(
            "Whom a worker serves (admin): {serves: all} a node worker, {serves: own} its "
            "owner's jobs only",
            params=_params(("did", "path", "string")),
            body="application/json",
            auth=True,
        )
    },
    "/api/compute/workers": {
        "post": _op(
            "Register a worker key under you, its donor (also signed by the worker key)",
            body="application/json",
            auth=True,
            ok="201",
        ),
        "get": _op("Workers and their contributions (admins: all; donors: theirs)", auth=True),
    },
    "/api/compute/pop": {
        "post": _op(
            "Lease the next job this worker can run, or why none fits (worker-signed)",
            body="application/json",
        )
    },
    "/api/compute/jobs/{id}/progress": {
        "post": _op(
            "Report progress; extends the lease (worker-signed)",
            params=_params(ID),
            body="application/json",
        )
    },
    "/api/compute/jobs/{id}/outputs/{sha256}": {
        "put": _op(
            "Upload one output's bytes, named by their SHA256; signed by the worker over that "
            "SHA256 and checked (signature 401, lease 403/409, outputs 409, length 413, "
            "compute.max_worker_uploads 429) before the body is read; "
            "compute.upload_timeout_s 408",
            params=_params(ID, ("sha256", "path", "string")),
            body="application/octet-stream",
            ok="201",
        )
    },
    "/api/compute/jobs/{id}/result": {
        "post": _op(
            "Submit the result: outputs with attestations; verified, then published",
            params=_params(ID),
            body="application/json",
        )
    },
    "/api/compute/jobs/{id}/fail": {
        "post": _op(
            "Give up on a job: requeued, or failed after compute.max_failures",
            params=_params(ID),
            body="application/json",
        )
    },
    "/api/compute/jobs/{id}/inputs/{sha256}": {
        "get": _op(
            "A training image of a job the worker holds (worker-signed)",
            params=_params(ID, ("sha256", "path", "string")),
            content="application/octet-stream",
        )
    },
    "/api/models/{id}": {
        "patch": _op(
            "Edit a model (a signed revision)",
            params=_params(ID),
            body="application/json",
            auth=True,
        ),
        "delete": _op(
            "Withdraw a model (a signed tombstone; final)", params=_params(ID), auth=True
        ),
    },
}


def _page(
    summary: str,
    *,
    params: list[dict[str, Any]] | None = None,
    form: str | None = None,
) -> dict[str, Any]:
    """A page of the web UI: HTML (or a 303 redirect after a form), HTML errors too."""
    html: dict[str, Any] = {"text/html": {}}
    responses: dict[str, Any] = {"4XX": {"description": "an error page", "content": html}}
    if form:
        responses["303"] = {"description": "done: go to the page named by Location"}
        responses["200"] = {"description": "the form again, with what was wrong", "content": html}
    else:
        responses["200"] = {"description": "the page", "content": html}
    op: dict[str, Any] = {"summary": summary, "tags": ["web UI"], "responses": responses}
    if params:
        op["parameters"] = params
    if form:
        op["requestBody"] = {
            "required": True,
            "content": {form: {"schema": {"type": "object"}}},
            "description": "the form's fields, with csrf_token (see the README's Web UI section)",
        }
    return op


FORM = "application/x-www-form-urlencoded"
PAGES: dict[str, dict[str, Any]] = {
    "/api/docs": {"get": _page("This API's documentation as a page (the OpenAPI document)")},
    "/": {
        "get": _page(
            "Browse and search models (image cards, filters, sort, cursor pages)",
            params=_params(
                ("q", "query", "string"),
                ("type", "query", "string"),
                ("base", "query", "string"),
                ("rating", "query", "string"),
                ("tag", "query", "string"),
                ("sort", "query", "string"),
                ("cursor", "query", "string"),
            ),
        )
    },
    "/tags": {"get": _page("Tags, each linking to the models that carry it")},
    "/creators/{username}": {
        "get": _page("A creator's models", params=_params(("username", "path", "string")))
    },
    "/models/{id}": {
        "get": _page(
            "A model: versions, files and hashes, download, permissions, gallery",
            params=_params(ID, ("version", "query", "integer")),
        )
    },
    "/models/{id}/fetch": {
        "post": _page("Fetch a version's file to this node (admin)", params=_params(ID), form=FORM),
    },
    "/downloads": {"get": _page("What this node fetches and seeds, live (admin)")},
    "/generate": {
        "get": _page(
            "The generate form and your jobs", params=_params(("version", "query", "integer"))
        ),
        "post": _page("Queue a generation job without JavaScript", form=FORM),
    },
    "/jobs/{id}/outputs/{sha256}/publish": {
        "post": _page(
            "Publish one generated image with a rating (the requester)",
            params=_params(ID, ("sha256", "path", "string")),
            form=FORM,
        )
    },
    "/jobs/{id}/publish": {
        "post": _page(
            "Publish a finished training job's LoRA (the requester)", params=_params(ID), form=FORM
        )
    },
    "/jobs/{id}": {
        "get": _page("A job, live: state, queue position, progress, results", params=_params(ID))
    },
    "/api/downloads/events": {
        "get": _op(
            "Server-Sent Events: downloads and seeding, as they change (admin)",
            auth=True,
            content="text/event-stream",
        ),
    },
    "/models/{id}/edit": {
        "get": _page("The edit form (the model's author)", params=_params(ID)),
        "post": _page("Save an edit (a signed revision)", params=_params(ID), form=FORM),
    },
    "/images/{sha256}": {
        "get": _page(
            "An image with its generation data", params=_params(("sha256", "path", "string"))
        )
    },
    "/publish": {
        "get": _page("The publish form"),
        "post": _page(
            "Publish without JavaScript: fields, preview images, then the file",
            form="multipart/form-data",
        ),
    },
    "/login": {
        "get": _page("The log-in form", params=_params(("next", "query", "string"))),
        "post": _page("Log in; sets the session cookie", form=FORM),
    },
    "/signup": {
        "get": _page(
            "The sign-up form",
            params=_params(("next", "query", "string"), ("invite", "query", "string")),
        ),
        "post": _page("Sign up and log in (as accounts.registration allows)", form=FORM),
    },
    "/logout": {"post": _page("Log out", form=FORM)},
    "/preferences": {"post": _page("Show or hide R and X content (a cookie)", form=FORM)},
    "/account/tokens": {
        "get": _page("Your API tokens: list, create, revoke"),
        "post": _page("Create an API token (label, expires_days)", form=FORM),
    },
    "/account/tokens/{id}/revoke": {
        "post": _page(
            "Revoke one of your API tokens", params=_params(("id", "path", "integer")), form=FORM
        ),
    },
    "/takedowns/new": {
        "get": _page(
            "The takedown notice form (user)", params=_params(("target", "query", "string"))
        ),
        "post": _page("File a takedown notice signed with your account's key", form=FORM),
    },
    "/takedowns/{id}": {
        "get": _page("A takedown notice's status", params=_params(("id", "path", "string")))
    },
    "/takedowns/{id}/counter": {
        "post": _page(
            "File a counter-notice (user)", params=_params(("id", "path", "string")), form=FORM
        )
    },
    "/takedowns/{id}/decide": {
        "post": _page(
            "Honor or reject a notice (moderator)",
            params=_params(("id", "path", "string")),
            form=FORM,
        )
    },
    "/moderation": {
        "get": _page("The review queue (moderator)", params=_params(("status", "query", "string")))
    },
    "/moderation/audit": {"get": _page("The latest audit log entries (moderator)")},
    "/moderation/decisions/{id}/review": {
        "post": _page(
            "Honor or dismiss another node's queued decision (moderator)",
            params=_params(("id", "path", "string")),
            form=FORM,
        )
    },
    "/moderation/held/{id}/release": {
        "post": _page(
            "Show an image held as a near copy (moderator)",
            params=_params(("id", "path", "string")),
            form=FORM,
        )
    },
    "/admin/federation": {
        "get": _page("Peers, nodes heard of, blocked authors, takedown-list subscriptions (admin)")
    },
    "/admin/federation/peers": {"post": _page("Add a peer by URL (admin)", form=FORM)},
    "/admin/federation/peers/{did}/remove": {
        "post": _page("Remove a peer (admin)", params=_params(("did", "path", "string")), form=FORM)
    },
    "/admin/federation/peers/{did}/block": {
        "post": _page("Block a peer (admin)", params=_params(("did", "path", "string")), form=FORM)
    },
    "/admin/federation/peers/{did}/unblock": {
        "post": _page(
            "Unblock a peer (admin)", params=_params(("did", "path", "string")), form=FORM
        )
    },
    "/admin/federation/sync": {"post": _page("Sync with every peer now (admin)", form=FORM)},
    "/admin/federation/authors/block": {
        "post": _page("Block an author's key, with a reason (admin)", form=FORM)
    },
    "/admin/federation/authors/{did}/unblock": {
        "post": _page(
            "Unblock an author (admin)", params=_params(("did", "path", "string")), form=FORM
        )
    },
    "/admin/federation/authors/unfreeze": {
        "post": _page("Settle a frozen identity: the key to keep (admin)", form=FORM)
    },
    "/admin/federation/subscriptions": {
        "post": _page("Subscribe to a node's takedown list (admin)", form=FORM)
    },
    "/admin/federation/subscriptions/{did}/remove": {
        "post": _page(
            "Unsubscribe from a takedown list (admin)",
            params=_params(("did", "path", "string")),
            form=FORM,
        )
    },
    "/static": {
        "get": {
            "summary": "The web UI's CSS, JavaScript and icons, under /static/",
            "tags": ["web UI"],
            "responses": {"200": {"description": "a file", "content": {"*/*": {}}}},
        }
    },
}


RID = ("id", "path", "string")  # a record id: 64 hexadecimal characters
JSON = "application/json"
MODERATION: dict[str, dict[str, Any]] = {
    "/api/takedowns": {
        "post": {
            **_op(
                "File a takedown notice (JSON, signed with your key; or signed msgpack)",
                body=JSON,
                ok="201",
            ),
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": {"type": "object"}},
                    "application/msgpack": {"schema": {"type": "string", "format": "binary"}},
                },
            },
        },
        "get": _op("Takedown notices this node knows (moderator)", auth=True),
    },
    "/api/takedowns/{id}": {"get": _op("A notice's status and decisions", params=_params(RID))},
    "/api/takedowns/{id}/decision": {
        "post": _op(
            "Decide on a notice (moderator)", params=_params(RID), body=JSON, auth=True, ok="201"
        ),
    },
    "/api/takedowns/{id}/counter": {
        "post": _op("File a counter-notice", params=_params(RID), body=JSON, auth=True, ok="201"),
    },
    "/api/takedowns/{id}/proof-check": {
        "post": _op("Check a notice's proof URLs now (moderator)", params=_params(RID), auth=True),
    },
    "/api/moderation/queue": {
        "get": _op(
            "The review queue (moderator)", params=_params(("status", "query", "string")), auth=True
        ),
    },
    "/api/moderation/decisions/{id}/review": {
        "post": _op(
            "Honor or dismiss another node's queued decision (moderator)",
            params=_params(RID),
            body=JSON,
            auth=True,
        ),
    },
    "/api/moderation/decisions/{id}/delete-files": {
        "post": _op(
            "Delete a decision's quarantined files now (moderator)", params=_params(RID), auth=True
        ),
    },
    "/api/moderation/held/{id}/release": {
        "post": _op(
            "Show an image held as a near copy (moderator)", params=_params(RID), auth=True
        ),
    },
    "/api/moderation/models/{id}/rating": {
        "post": _op(
            "Re-rate or flag a model on this node (moderator)",
            params=_params(ID),
            body=JSON,
            auth=True,
        ),
    },
    "/api/moderation/images/{id}/rating": {
        "post": _op(
            "Re-rate an image on this node (moderator)", params=_params(ID), body=JSON, auth=True
        ),
    },
    "/api/moderation/queue/{item}/close": {
        "post": _op(
            "Dismiss a queue item, e.g. a handled report (moderator)",
            params=_params(("item", "path", "integer")),
            body=JSON,
            auth=True,
        ),
    },
    "/api/moderation/audit": {
        "get": _op(
            "The moderation audit log (moderator)",
            params=_params(("before", "query", "integer")),
            auth=True,
        ),
    },
    "/api/moderation/subscriptions": {
        "get": _op("Followed takedown lists (admin)", auth=True),
        "post": _op("Follow a node's takedown list (admin)", body=JSON, auth=True, ok="201"),
    },
    "/api/moderation/subscriptions/{did}": {
        "delete": _op(
            "Stop following a takedown list (admin)",
            params=_params(("did", "path", "string")),
            auth=True,
        ),
    },
    "/api/reports": {"post": _op("Report content to the moderators", body=JSON, ok="201")},
    "/moderation/v1/takedowns": {
        "get": _op(
            "This node's takedown list, paged",
            params=_params(("after", "query", "integer"), ("limit", "query", "integer")),
        ),
    },
}


def _object(*names: str, **nested: Any) -> dict[str, Any]:
    """An object schema naming the fields it has (their types are Civitai's)."""
    props: dict[str, Any] = {key: {} for key in names}
    props.update(nested)
    return {"type": "object", "properties": props}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


# The Civitai-compatible answers, field by field (our additions sit under ``civitas``).
CIVITAI_SCHEMAS: dict[str, Any] = {
    "CivitaiImage": _object(
        "id",
        "url",
        "hash",
        "width",
        "height",
        "nsfw",
        "nsfwLevel",
        "type",
        "createdAt",
        "postId",
        "meta",
        "username",
        "civitas",
    ),
    "CivitaiFile": _object(
        "id",
        "sizeKB",
        "name",
        "type",
        "pickleScanResult",
        "pickleScanMessage",
        "virusScanResult",
        "scannedAt",
        "metadata",
        "hashes",
        "downloadUrl",
        "primary",
        "civitas",
    ),
    "CivitaiVersion": _object(
        "id",
        "modelId",
        "name",
        "createdAt",
        "updatedAt",
        "publishedAt",
        "status",
        "availability",
        "supportsGeneration",
        "trainedWords",
        "baseModel",
        "baseModelType",
        "downloadUrl",
        "model",
        "civitas",
        description={"type": ["string", "null"], "description": "sanitized HTML"},
        stats=_object("downloadCount", "ratingCount", "rating", "thumbsUpCount", "thumbsDownCount"),
        files=_list_of("CivitaiFile"),
        images=_list_of("CivitaiImage"),
    ),
    "CivitaiModel": _object(
        "id",
        "name",
        "type",
        "poi",
        "nsfw",
        "nsfwLevel",
        "mode",
        "availability",
        "supportsGeneration",
        "allowNoCredit",
        "allowCommercialUse",
        "allowDerivatives",
        "allowDifferentLicense",
        "creator",
        "tags",
        "civitas",
        description={"type": ["string", "null"], "description": "sanitized HTML"},
        stats=_object(
            "downloadCount",
            "favoriteCount",
            "thumbsUpCount",
            "thumbsDownCount",
            "commentCount",
            "ratingCount",
            "rating",
            "tippedAmountCount",
        ),
        modelVersions=_list_of("CivitaiVersion"),
    ),
    "CivitaiMetadata": _object(
        "nextCursor",
        "nextPage",
        "prevPage",
        "pageSize",
        "currentPage",
        "totalItems",
        "totalPages",
    ),
    "CivitaiModelPage": _object(items=_list_of("CivitaiModel"), metadata=_ref("CivitaiMetadata")),
    "CivitaiImagePage": _object(items=_list_of("CivitaiImage"), metadata=_ref("CivitaiMetadata")),
    "CivitaiPage": _object(
        items={"type": "array", "items": {"type": "object"}}, metadata=_ref("CivitaiMetadata")
    ),
}


ATOM_FEED = "application/atom+xml"
NSFW = ("nsfw", "query", "boolean")  # feeds: R and X models too
FEEDS: dict[str, dict[str, Any]] = {
    "/feeds/new.atom": {
        "get": _op("Atom feed: the newest 50 models", params=_params(NSFW), content=ATOM_FEED)
    },
    "/feeds/tags/{tag}.atom": {
        "get": _op(
            "Atom feed: the newest 50 models with a tag",
            params=_params(("tag", "path", "string"), NSFW),
            content=ATOM_FEED,
        )
    },
    "/feeds/creators/{name}.atom": {
        "get": _op(
            "Atom feed: a creator's newest 50 models (404: no such creator)",
            params=_params(("name", "path", "string"), NSFW),
            content=ATOM_FEED,
        )
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Civitas node API", "version": __version__},
        "paths": {**PATHS, **MODERATION, **PAGES, **FEEDS},
        "components": {
            "schemas": {
                **CIVITAI_SCHEMAS,
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "civitas_session"},
            },
        },
    }


async def openapi_json(_request: web.Request) -> web.Response:
    return web.json_response(document())
