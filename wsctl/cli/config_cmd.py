"""``wsctl config show``: the effective settings and where each came from."""

from __future__ import annotations

import typer

from wsctl.cli.columns import Column
from wsctl.cli.common import OutputOpt, check_output, state

config_app = typer.Typer(
    help="Inspect the effective configuration.\n\nExample: wsctl --context prod config show",
    no_args_is_help=True,
)


@config_app.command("show")
def show(
    ctx: typer.Context,
    output: OutputOpt = "table",
) -> None:
    """Print every setting, its value and its source (flag, env VAR, file, default).

    Passwords are shown as ***. Nothing is connected to.

    Example: wsctl --context prod config show
    """
    from wsctl.cli.output import render
    from wsctl.config import redacted

    fmt = check_output(output)
    settings = state(ctx).settings()
    rows = [{"setting": n, "value": v, "source": s} for n, v, s in redacted(settings)]
    rows.append(
        {
            "setting": "redis",
            "value": "embedded (wsctl sandbox)" if settings.embedded else _target(settings),
            "source": "derived",
        }
    )
    rows.append({"setting": "context", "value": settings.context or "", "source": "derived"})
    rows.append(
        {"setting": "config_file", "value": settings.config_file or "", "source": "derived"}
    )
    render(
        rows,
        [Column("setting", "SETTING"), Column("value", "VALUE"), Column("source", "SOURCE")],
        fmt,
    )


def _target(settings: object) -> str:
    from wsctl.config import Settings
    from wsctl.redis.factory import target_from_settings

    assert isinstance(settings, Settings)
    return target_from_settings(settings).describe()
