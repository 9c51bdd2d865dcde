"""``civitas takedown``: artists sign and submit notices; operators subscribe to other
nodes' takedown lists and decide on notices, through the running node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import click

from node.cli.common import Context, handle_errors, pass_ctx, run
from node.client import TIMEOUT, NodeClient, RemoteError
from node.errors import BadRequest, CivitasError, HomeError
from node.moderation import schemas
from node.moderation.service import notice_body
from node.p2p.keys import SigningKey, load_key, save_key
from node.p2p.records import sign_record, verify_record


@click.group()
def takedown() -> None:
    """Takedown notices, decisions and shared takedown lists."""


@takedown.command("sign")
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Your private key file (created, mode 0600, if it does not exist).",
)
@click.option("--claimant", required=True, help="Your name as the rights holder or person.")
@click.option("--works", required=True, help="The works concerned (titles, links).")
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    help="KIND:HEX, KIND one of model, version, image, file, pdq (repeatable).",
)
@click.option("--reason", type=click.Choice(schemas.REASONS), required=True)
@click.option("--action", type=click.Choice(schemas.ACTIONS), default="remove", show_default=True)
@click.option("--name", "names", multiple=True, help="A term to remove (action remove_name).")
@click.option(
    "--proof-url",
    "proof_urls",
    multiple=True,
    help="A page of yours that shows your did:key (repeatable).",
)
@click.option("--statement", default="", help="Anything the moderators should know.")
@click.option(
    "--good-faith", is_flag=True, help="I believe in good faith the use is not authorised."
)
@click.option("--accurate", is_flag=True, help="The information in this notice is accurate.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the signed notice.",
)
@handle_errors
def takedown_sign(
    key_path: Path,
    claimant: str,
    works: str,
    targets: tuple[str, ...],
    reason: str,
    action: str,
    names: tuple[str, ...],
    proof_urls: tuple[str, ...],
    statement: str,
    good_faith: bool,
    accurate: bool,
    output: Path,
) -> None:
    """Sign a takedown notice with your own key, offline; submit it to any node."""
    if not key_path.exists():
        save_key(key_path, SigningKey.generate())
        click.echo(f"created a new key in {key_path} (keep it private)", err=True)
    key = load_key(key_path)
    body = notice_body(
        {
            "claimant_name": claimant,
            "works": works,
            "targets": list(targets),
            "reason": reason,
            "action": action,
            "names": list(names),
            "proof_urls": list(proof_urls),
            "statement": statement,
            "good_faith": good_faith,
            "accurate": accurate,
        },
        key.did,
    )
    try:
        schemas.check_notice(body)
    except CivitasError as exc:
        raise BadRequest(exc.message.replace("body.", "--").replace("_", "-")) from None
    record = sign_record(key, schemas.NOTICE, body)
    output.write_bytes(record.raw)
    click.echo(f"signed notice {record.id.hex()} by {key.did} -> {output}")


async def _post_raw(url: str, raw: bytes) -> Any:
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.post(url, data=raw, headers={"Content-Type": "application/msgpack"}) as resp,
        ):
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RemoteError(resp.status, data.get("error", ""), data.get("message", ""))
            return data
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise HomeError(f"cannot submit to {url}: {exc}") from None


@takedown.command("submit")
@click.argument("notice_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--node", "node_url", required=True, help="The node to submit to (any node).")
@click.option("--contact", default="", help="How its moderators reach you (kept on that node).")
@handle_errors
def takedown_submit(notice_file: Path, node_url: str, contact: str) -> None:
    """Submit a signed notice (or counter-notice) to a node."""
    raw = notice_file.read_bytes()
    record = verify_record(raw)
    from urllib.parse import urlencode

    url = f"{node_url.rstrip('/')}/api/takedowns?{urlencode({'contact': contact})}"
    data = run(_post_raw(url, raw))
    click.echo(f"submitted {record.id.hex()}: {data['notice']['status']}")
    click.echo(f"follow it at {node_url.rstrip('/')}/takedowns/{record.id.hex()}")


def _client(ctx: Context) -> NodeClient:
    return NodeClient.for_home(ctx.home)


@takedown.command("status")
@click.argument("notice_id")
@pass_ctx
@handle_errors
def takedown_status(ctx: Context, notice_id: str) -> None:
    """A notice's status and the decisions on it, on this node."""
    notice = run(_client(ctx).get(f"/api/takedowns/{notice_id}"))["notice"]
    click.echo(
        f"{notice['id']}\t{notice['status']}\t{notice['reason']}\t{notice['claimant']['name']}"
    )
    for d in notice["decisions"]:
        click.echo(
            f"  decision {d['id']} by {d['node']} ({d['moderator']}): {d['verdict']} -> "
            f"{d['outcome']} {d['outcome_reason']}"
        )


@takedown.command("list")
@pass_ctx
@handle_errors
def takedown_list(ctx: Context) -> None:
    """Notices this node knows, newest first."""
    for n in run(_client(ctx).get("/api/takedowns"))["notices"]:
        click.echo(
            f"{n['id']}\t{n['status']}\t{n['reason']}\t{n['claimant']['name']}\t{n['works'][:60]}"
        )


@takedown.command("decide")
@click.argument("notice_id")
@click.option("--verdict", type=click.Choice(schemas.VERDICTS), required=True)
@click.option("--target", "targets", multiple=True, help="Honor only these targets (KIND:HEX).")
@click.option("--note", default="")
@pass_ctx
@handle_errors
def takedown_decide(
    ctx: Context, notice_id: str, verdict: str, targets: tuple[str, ...], note: str
) -> None:
    """Decide on a notice as this node's operator (signed by the node key)."""
    body: dict[str, Any] = {"verdict": verdict, "note": note}
    if targets:
        body["targets"] = list(targets)
    notice = run(_client(ctx).post(f"/api/takedowns/{notice_id}/decision", body))["notice"]
    d = notice["decisions"][-1]
    click.echo(f"decision {d['id']}: {d['verdict']} -> {d['outcome']} {d['outcome_reason']}")


@takedown.command("subscribe")
@click.argument("node")
@click.option(
    "--policy",
    type=click.Choice(("auto", "review")),
    default="review",
    show_default=True,
    help="auto: honor at once; review: queue for moderators.",
)
@pass_ctx
@handle_errors
def takedown_subscribe(ctx: Context, node: str, policy: str) -> None:
    """Follow the takedown list of NODE (a node URL, or a node did:key)."""
    sub = run(_client(ctx).post("/api/moderation/subscriptions", {"node": node, "policy": policy}))
    s = sub["subscription"]
    click.echo(f"subscribed to {s['did']} ({s['policy']})")


@takedown.command("unsubscribe")
@click.argument("did")
@pass_ctx
@handle_errors
def takedown_unsubscribe(ctx: Context, did: str) -> None:
    """Stop following a node's takedown list."""
    run(_client(ctx).request("DELETE", f"/api/moderation/subscriptions/{did}"))
    click.echo(f"unsubscribed from {did}")


@takedown.command("subscriptions")
@pass_ctx
@handle_errors
def takedown_subscriptions(ctx: Context) -> None:
    """The takedown lists this node follows."""
    subs = run(_client(ctx).get("/api/moderation/subscriptions"))["subscriptions"]
    if not subs:
        click.echo("no subscriptions")
    for s in subs:
        error = f"\terror: {s['last_error']}" if s["last_error"] else ""
        click.echo(f"{s['did']}\t{s['policy']}\t{s['url'] or 'via federation'}{error}")


@takedown.command("queue")
@pass_ctx
@handle_errors
def takedown_queue(ctx: Context) -> None:
    """What waits for a moderator: notices, reviews, held images, reports."""
    items = run(_client(ctx).get("/api/moderation/queue"))["items"]
    if not items:
        click.echo("nothing to review")
    for i in items:
        click.echo(f"{i['id']}\t{i['kind']}\t{i['ref'] or ''}\t{i['detail']}")


@takedown.command("audit")
@pass_ctx
@handle_errors
def takedown_audit(ctx: Context) -> None:
    """The moderation audit log, newest first."""
    for e in run(_client(ctx).get("/api/moderation/audit"))["entries"]:
        click.echo(json.dumps(e))
