"""``civitas publish`` and ``civitas search``: the catalog, through the running node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click

from node.cli.common import Context, handle_errors, pass_ctx, run
from node.client import NodeClient

MODEL_TYPE_HELP = (
    "Checkpoint, LORA, LoCon, TextualInversion, VAE, Controlnet, … [default: detected]"
)


def _absolute(path: Path) -> str:
    return str(path.expanduser().resolve())


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--user", "user_name", help="Who publishes (a local user) [default: the only user].")
@click.option("--name", help="The model's name (required for a new model).")
@click.option("--model-id", type=int, help="Add this file as a new version of model ID.")
@click.option("--type", "model_type", help=MODEL_TYPE_HELP)
@click.option("--base-model", help='e.g. "SD 1.5", "SDXL 1.0" [default: detected].')
@click.option("--version", "version_name", default="v1", show_default=True)
@click.option(
    "--description-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Markdown description of the model.",
)
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--trigger-word", "trained_words", multiple=True, help="A trigger word (repeatable).")
@click.option("--license", "license_name", help="License name, e.g. CreativeML OpenRAIL-M.")
@click.option(
    "--allow-commercial-use",
    default="Image,RentCivit,Rent,Sell",
    show_default=True,
    help="Comma list of Image, RentCivit, Rent, Sell (empty: none).",
)
@click.option(
    "--no-credit-needed/--credit-required",
    "allow_no_credit",
    default=True,
    help="Whether users may use the model without crediting the creator.",
)
@click.option("--no-derivatives", is_flag=True, help="Forbid sharing merges or derivatives.")
@click.option(
    "--rating", type=click.Choice(["PG", "PG13", "R", "X"]), default="PG", show_default=True
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A preview image, PNG/JPEG/WebP (repeatable).",
)
@click.option("--in-place", is_flag=True, help="Seed the file where it lies; do not copy it.")
@pass_ctx
@handle_errors
def publish(
    ctx: Context,
    file: Path,
    user_name: str | None,
    name: str | None,
    model_id: int | None,
    model_type: str | None,
    base_model: str | None,
    version_name: str,
    description_file: Path | None,
    tags: tuple[str, ...],
    trained_words: tuple[str, ...],
    license_name: str | None,
    allow_commercial_use: str,
    allow_no_credit: bool,
    no_derivatives: bool,
    rating: str,
    images: tuple[Path, ...],
    in_place: bool,
) -> None:
    """Publish FILE (a .safetensors on the node's disk) as a model or a new version."""
    client = NodeClient.for_home(ctx.home)
    if user_name is None:
        users = run(client.get("/api/admin/users"))["users"]
        if len(users) != 1:
            raise click.UsageError("say who publishes with --user NAME")
        user_name = users[0]["name"]
    body: dict[str, Any] = {
        "path": _absolute(file),
        "user": user_name,
        "version": version_name,
        "tags": list(tags),
        "trained_words": list(trained_words),
        "allow_commercial_use": [u for u in allow_commercial_use.split(",") if u],
        "allow_no_credit": allow_no_credit,
        "allow_derivatives": not no_derivatives,
        "rating": rating,
        "images": [_absolute(i) for i in images],
        "in_place": in_place,
    }
    for key, value in (
        ("name", name),
        ("model_id", model_id),
        ("type", model_type),
        ("base_model", base_model),
        ("license", license_name),
    ):
        if value is not None:
            body[key] = value
    if description_file is not None:
        body["description"] = description_file.read_text(encoding="utf-8")
    result = run(client.post("/api/models/publish-path", body))
    model = result["model"]
    version = model["modelVersions"][0]
    for note in result["warnings"]:
        click.echo(f"warning: {note}", err=True)
    verb = "published" if result["created"] else "already published"
    click.echo(
        f"{verb}: model {model['id']} {model['name']!r} ({model['type']}), "
        f"version {version['id']} {version['name']!r} ({version['baseModel']})"
    )
    click.echo(f"  sha256 {result['sha256']}")


@click.command()
@click.argument("query", required=False)
@click.option("--type", "types", multiple=True, help="Model type (repeatable).")
@click.option("--base-model", "base_models", multiple=True, help="Base model (repeatable).")
@click.option("--tag", help="Only models with this tag.")
@click.option("--creator", help="Only models by this username.")
@click.option(
    "--rating",
    "ratings",
    multiple=True,
    type=click.Choice(["PG", "PG13", "R", "X"]),
    help="Content rating (repeatable).",
)
@click.option(
    "--sort",
    type=click.Choice(["newest", "downloads", "name"]),
    default="newest",
    show_default=True,
)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@pass_ctx
@handle_errors
def search(
    ctx: Context,
    query: str | None,
    types: tuple[str, ...],
    base_models: tuple[str, ...],
    tag: str | None,
    creator: str | None,
    ratings: tuple[str, ...],
    sort: str,
    limit: int,
    as_json: bool,
) -> None:
    """Search the node's catalog: full text over names, descriptions, tags, trigger words."""
    params: list[tuple[str, str]] = [
        ("sort", {"newest": "Newest", "downloads": "Most Downloaded", "name": "Name"}[sort]),
        ("limit", str(limit)),
    ]
    params += [("types", t) for t in types] + [("baseModels", b) for b in base_models]
    params += [("rating", r) for r in ratings]
    for key, value in (("query", query), ("tag", tag), ("username", creator)):
        if value:
            params.append((key, value))
    result = run(NodeClient.for_home(ctx.home).get(f"/api/v1/models?{urlencode(params)}"))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if not result["items"]:
        click.echo("no models found")
    for model in result["items"]:
        bases = sorted({v["baseModel"] for v in model["modelVersions"]})
        click.echo(
            f"{model['id']}\t{model['name']}\t{model['type']}\t{', '.join(bases)}\t"
            f"{model['creator']['username']}\t{model['stats']['downloadCount']} downloads"
        )
