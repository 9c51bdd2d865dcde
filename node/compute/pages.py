"""Compute in the web UI: the generate form with your jobs, and a job's live page.

The pages work without JavaScript (the form posts, the job page shows the state when
loaded); ``jobs.js`` follows ``GET /api/jobs/{id}/events`` to update a job page live.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.accounts.routes import FORM_FIELD, check_form_token
from node.catalog.schemas import RATINGS
from node.compute.params import MAX_COUNT, MAX_STEPS
from node.compute.routes import COMPUTE, job_id_of
from node.compute.samplers import SAMPLERS
from node.errors import BadRequest, CivitasError
from node.http import parse_int, require_user
from node.render import RENDERER, page

SIDES = (64, 128, 256, 384, 512, 640, 768, 832, 896, 1024)
INT_FIELDS = ("model_version_id", "steps", "width", "height", "count")
FORM_INT = 2**62  # ASCII digits within this (parse_int); the job's own checks bound them


def _form_job(form: Any) -> dict[str, Any]:
    """The form's fields as the JSON a generation job takes."""
    job: dict[str, Any] = {"kind": "generate"}
    for name in INT_FIELDS:
        value = parse_int(str(form.get(name, "")).strip(), -FORM_INT, FORM_INT)
        if value is None:
            raise BadRequest(f"{name.replace('_', ' ')} must be a whole number")
        job[name] = value
    seed = str(form.get("seed", "")).strip()
    job["seed"] = parse_int(seed, -FORM_INT, FORM_INT) if seed else None
    if seed and job["seed"] is None:
        raise BadRequest("seed must be a whole number (or empty for a random one)")
    job["prompt"] = str(form.get("prompt", ""))
    job["negative_prompt"] = str(form.get("negative_prompt", ""))
    job["cfg_scale"] = str(form.get("cfg_scale", "7")).strip()
    job["sampler"] = str(form.get("sampler", "Euler a"))
    return job


def _render_form(
    request: web.Request, jobs: list[dict[str, Any]], values: dict[str, Any], error: str = ""
) -> web.Response:
    return request.app[RENDERER].render(
        request,
        "generate.html",
        status=400 if error else 200,
        title="Generate",
        jobs=jobs,
        values=values,
        error=error,
        samplers=SAMPLERS,
        sides=SIDES,
        max_steps=MAX_STEPS,
        max_count=MAX_COUNT,
    )


@page
async def generate_page(request: web.Request) -> web.StreamResponse:
    who = require_user(request)
    jobs = await request.app[COMPUTE].queue.mine(who, limit=20)
    values = {"model_version_id": request.query.get("version", "")}
    return _render_form(request, jobs, values)


@page
async def submit_generate(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    who = check_form_token(request, str(form.get(FORM_FIELD, "")))
    user = require_user(request).user
    if user is None:
        raise BadRequest("jobs belong to a user: log in")
    queue = request.app[COMPUTE].queue
    try:
        job = await queue.submit(user, _form_job(form))
    except CivitasError as exc:
        values = {k: str(v) for k, v in form.items() if k != FORM_FIELD}
        return _render_form(request, await queue.mine(who, limit=20), values, exc.message)
    raise web.HTTPSeeOther(f"/jobs/{job['id']}")


@page
async def job_page(request: web.Request) -> web.StreamResponse:
    who = require_user(request)
    job_id = job_id_of(request)
    job = await request.app[COMPUTE].queue.get(job_id, who)
    return request.app[RENDERER].render(
        request, "job.html", title=f"Job {job_id}", job=job, ratings=RATINGS
    )


@page
async def publish_lora(request: web.Request) -> web.StreamResponse:
    """The job page's "Publish this LoRA" form: a new model authored by the requester."""
    form = await request.post()
    who = check_form_token(request, str(form.get(FORM_FIELD, "")))
    job_id = job_id_of(request)
    data = {"name": str(form.get("name", "")).strip()}
    if not data["name"]:
        raise BadRequest("give the LoRA a name")
    published = await request.app[COMPUTE].outputs.publish_lora(job_id, who, data)
    raise web.HTTPSeeOther(f"/models/{published['model_id']}")


@page
async def publish_image(request: web.Request) -> web.StreamResponse:
    """The job page's "Publish" button under a generated image (with the rating chosen)."""
    form = await request.post()
    who = check_form_token(request, str(form.get(FORM_FIELD, "")))
    job_id = job_id_of(request)
    data = {"rating": str(form.get("rating", "PG"))}
    await request.app[COMPUTE].outputs.publish_image(
        job_id, who, request.match_info["sha256"], data
    )
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/generate", generate_page)
    app.router.add_post("/generate", submit_generate)
    app.router.add_get("/jobs/{id}", job_page)
    app.router.add_post("/jobs/{id}/publish", publish_lora)
    app.router.add_post("/jobs/{id}/outputs/{sha256}/publish", publish_image)
