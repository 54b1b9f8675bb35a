"""`vecstore serve`: the review service over the store (vecstore.web), on the loopback unless
a token guards it."""

from __future__ import annotations

import click

from vecstore.web import ServeOptions, is_loopback

from .context import Ctx

D = ServeOptions()


@click.command()
@click.option("--host", default=D.host, show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=D.port, show_default=True)
@click.option(
    "--token",
    envvar="VECSTORE_TOKEN",
    default=None,
    help="Required on every request (header `Authorization: Bearer T`, or the link printed); "
    "needed to listen beyond the loopback. Default: $VECSTORE_TOKEN.",
)
@click.option(
    "--reviewer",
    default=None,
    help="Name recorded with a label when the browser gives none (default $VECSTORE_USER, "
    "else the login).",
)
@click.pass_obj
def serve(obj: Ctx, host: str, port: int, token: str | None, reviewer: str | None) -> None:
    """Serve the store to a browser: gallery, review queue, label-next queue, dashboard,
    and the JSON API (OpenAPI at /docs). Writes take the store's lock only while they
    write: a CLI command can run beside it.

    \b
    vecstore serve                      # http://127.0.0.1:8000
    vecstore serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"
    """
    import uvicorn

    from vecstore.web import create_app

    if not is_loopback(host) and not token:
        raise click.UsageError(
            f"--host {host} listens beyond this machine: give --token (or $VECSTORE_TOKEN)"
        )
    opts = ServeOptions(host=host, port=port, token=token, reviewer=reviewer)
    app = create_app(obj.store_path, opts)
    shown = "localhost" if is_loopback(host) else host
    link = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    click.echo(f"serving {obj.store_path} at {link} (Ctrl-C to stop)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
