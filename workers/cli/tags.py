"""``scorefleet submit --tag NAME=VALUE``: any tag scorefleet reads, checked against
the one list of them (scorefleet.submission.USED_TAGS) before anything is uploaded."""

from __future__ import annotations

import click


class TagOption(click.Option):
    """``--tag``, whose help lists the tags scorefleet reads (scorefleet.submission's
    one list of them, imported only when the help is shown)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from scorefleet.submission import USED_TAGS

        self.help = f"repeatable: a tag scorefleet reads ({', '.join(USED_TAGS)})"
        return super().get_help_record(ctx)


def file_tags(given: tuple[str, ...], named: dict[str, str | None]) -> dict[str, str]:
    """The tags of ``submit``: its ``--tag NAME=VALUE`` items and the named options.
    A name scorefleet does not read is refused here, a near miss with the tag meant."""
    from scorefleet.submission import USED_TAGS, meant_tag

    tags = {k: v for k, v in named.items() if v}
    for item in given:
        name, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not name or not value:
            raise click.BadParameter(
                f"{item!r}: give NAME=VALUE, e.g. keep_columns=id", param_hint="--tag"
            )
        if name not in USED_TAGS:
            meant = meant_tag(name)
            raise click.BadParameter(
                f"{name!r} is not a tag scorefleet reads: "
                + (f"did you mean {meant!r}?" if meant else f"it reads {', '.join(USED_TAGS)}"),
                param_hint="--tag",
            )
        if tags.get(name, value) != value:
            raise click.BadParameter(f"{name} is given twice, as {tags[name]!r} and {value!r}")
        tags[name] = value
    return tags
