"""The ``tbes catalog`` commands: the build catalog, shown and imported."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import click
from rich.table import Table

from tbes.catalog import Catalog, Release
from tbes.cli._app import (
    DEFAULT_CATALOG_OUT,
    catalog_of,
    cli,
    guarded,
    make_console,
    make_table,
    text_cell,
    text_line,
)
from tbes.render._common import printable
from tbes.schedule import RollingBaseline, Schedule, Step
from tbes.version import Product

# ---- tbes catalog -------------------------------------------------------------------------


@cli.group("catalog")
def catalog_group() -> None:
    """The build catalog: show it, or import Microsoft's build list as an override file.

    tbes uses its packaged catalog unless `tbes --catalog FILE` or $TBES_CATALOG names
    another one.
    """


# ---- tbes catalog phases: Microsoft's dated schedule (self-contained) ----------------------


@catalog_group.command("phases")
@click.option(
    "--final-step-from",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Day of the announced last step (only ESU builds pass); off by default.",
)
@click.pass_context
def catalog_phases(ctx: click.Context, final_step_from: dt.datetime | None) -> None:
    """Show the exchange_online policy's phases: from when, what is compliant, per product."""
    catalog = catalog_of(ctx)
    day = None if final_step_from is None else final_step_from.date()
    schedule = guarded(lambda: Schedule.exchange_online(catalog, day))
    console = make_console()
    first = schedule.steps[0].effective_from
    console.print(text_line(f"Before {first:%Y-%m-%d %H:%M} UTC nothing is enforced."))
    console.print(_phases_table(schedule, catalog))


_PHASE_PRODUCTS = tuple(
    p for p in Product if p.on_premises and p not in {Product.EXCHANGE_2000, Product.EXCHANGE_2003}
)


def _phases_table(schedule: Schedule, catalog: Catalog) -> Table:
    table = make_table("from (UTC)", "product", "compliant", title="Phases of exchange_online")
    for step in schedule.steps:
        when = f"{step.effective_from:%Y-%m-%d %H:%M}"
        for product in _PHASE_PRODUCTS:
            table.add_row(
                text_cell(when),
                text_cell(product.label),
                text_cell(_phase_rule(step, product, catalog)),
            )
            when = ""
    return table


def _phase_rule(step: Step, product: Product, catalog: Catalog) -> str:
    rule = step.baseline
    if product in rule.unsupported:
        return "no build (unsupported)"
    if isinstance(rule, RollingBaseline):
        if product not in rule.rolled:
            return "every build"
        return (
            f"builds of the newest CU line or the one before, no older than the line's oldest "
            f"public SU or HU of the last {rule.months} months (counted back from the "
            "month of the decision, or of end of support once past it)"
        )
    minimum = rule.minimum.get(product, ())
    if not minimum:
        return "every build"
    floors = []
    for build in sorted(minimum, reverse=True):
        release = catalog.release(build)
        floors.append(str(build) if release is None else f"{build} ({release.name})")
    return "from " + " or ".join(floors) + " on its CU line"


_PRODUCT_NAMES = {
    product.label.lower().removeprefix("exchange").strip(): product
    for product in Product
    if product is not Product.UNKNOWN
}


@catalog_group.command("show")
@click.argument("product", required=False)
@click.pass_context
def catalog_show(ctx: click.Context, product: str | None) -> None:
    """Show each product's latest build, or every release of PRODUCT (e.g. 2016, SE)."""
    catalog = catalog_of(ctx)
    console = make_console()
    if product is None:
        console.print(_products_table(catalog))
        return
    wanted = _product(product)
    releases = [release for release in catalog.releases if release.product is wanted]
    console.print(_releases_table(wanted, releases, catalog))


def _product(text: str) -> Product:
    key = text.strip().lower().replace("_", " ").removeprefix("exchange").strip()
    if key in _PRODUCT_NAMES:
        return _PRODUCT_NAMES[key]
    names = ", ".join(_PRODUCT_NAMES)
    raise click.BadParameter(
        f"unknown product {text!r}: choose one of {names}", param_hint="PRODUCT"
    )


def _products_table(catalog: Catalog) -> Table:
    table = make_table(
        "product",
        "latest release",
        "build",
        "date",
        "end of support",
        "releases",
        title=f"Catalog as of {catalog.as_of}",
    )
    for product in Product:
        releases = [release for release in catalog.releases if release.product is product]
        if not releases:
            continue
        latest = catalog.latest(product)
        table.add_row(
            text_cell(product.label),
            text_cell(latest.name),
            text_cell(latest.build),
            text_cell(latest.date),
            text_cell(catalog.end_of_support(product)),
            text_cell(len(releases)),
        )
    return table


def _releases_table(product: Product, releases: Sequence[Release], catalog: Catalog) -> Table:
    support = catalog.end_of_support(product)
    title = f"{product.label}: {len(releases)} releases" + (
        f", end of support {support}" if support else ""
    )
    table = make_table("release", "build", "date", "KB", title=title)
    for release in releases:
        table.add_row(
            text_cell(release.name),
            text_cell(release.build),
            text_cell(release.date),
            text_cell(release.kb),
        )
    return table


@catalog_group.command("import")
@click.argument(
    "csv_file", metavar="CSV", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(DEFAULT_CATALOG_OUT),
    show_default=True,
    help="The catalog file to write.",
)
def catalog_import(csv_file: Path, output: Path) -> None:
    """Import Microsoft's build list (CSV) and write it as a tbes catalog file."""
    imported = guarded(lambda: Catalog.from_microsoft_csv(csv_file))
    guarded(lambda: imported.dump(output))
    click.echo(
        printable(
            f"Imported {len(imported.releases)} releases (as of {imported.as_of}) from "
            f"{csv_file} into {output}. Use it with `tbes --catalog {output} ...` or "
            f"TBES_CATALOG={output}."
        )
    )
