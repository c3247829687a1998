"""Command-line interface: ``expressnet COMMAND --help``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ExpressNet-MoE facial expression recognition.")
console = Console()


@app.command("model-summary")
def model_summary(
    preset: Annotated[str, typer.Option(help="Model preset (see `expressnet presets`).")] = "paper",
    num_classes: Annotated[int, typer.Option(help="Number of output classes.")] = 7,
    input_size: Annotated[int | None, typer.Option(help="Input side in pixels (default: the preset's).")] = None,
) -> None:
    """Parameters and multiply-accumulates per branch (global, local, backbone, fusion, MoE, head)."""
    from .nn import create_model
    from .nn.summary import batchnorm_statistics, model_costs

    overrides = {} if input_size is None else {"input_size": input_size}
    model = create_model(preset, num_classes=num_classes, **overrides)
    cfg = model.config
    costs = model_costs(model)
    table = Table(title=f"{preset}: {cfg.input_size}x{cfg.input_size}x{cfg.in_channels} -> {num_classes} classes")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("MACs / image", justify="right")
    table.add_column("share of MACs", justify="right")
    total = costs["total"].macs
    for part, cost in costs.items():
        style = "bold" if part == "total" else None
        table.add_row(
            part, f"{cost.params:,}", f"{cost.macs / 1e6:,.1f} M", f"{100 * cost.macs / total:.1f} %", style=style
        )
    console.print(table)
    fft = [f"{m.kernel_size[0]}x{m.kernel_size[1]}" for m in model.modules() if getattr(m, "uses_fft", False)]
    console.print(f"BatchNorm running statistics: {batchnorm_statistics(model):,} entries (buffers)")
    console.print(f"FFT convolutions (kernel >= {cfg.fft_min_kernel}): {', '.join(fft) or 'none'}")


@app.command()
def presets() -> None:
    """List the model presets."""
    from .nn import PRESETS

    table = Table()
    table.add_column("preset")
    table.add_column("description")
    for name in sorted(PRESETS):
        table.add_row(name, PRESETS[name].description)
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
