"""The Typer apps, the consoles and the one error boundary every command goes through."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from megalang import __version__
from megalang.errors import UserError, from_os_error

app = typer.Typer(
    rich_markup_mode=None,
    help="megalang: raw text → clean data → tokenizer → token shards → training → eval → export → generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare documents and tokenize them into shards.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train a SentencePiece BPE tokenizer.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a run or an exported model.", no_args_is_help=True)
app.add_typer(data_app, name="data")
classifier_app = typer.Typer(help="Train the document classifier used by the `classifier` prepare step.", no_args_is_help=True)
data_app.add_typer(classifier_app, name="classifier")
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(eval_app, name="eval")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def user_errors(fn):
    """Turn a UserError (or a disk-full / permission OSError) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, OSError) as e:
            # An OSError is a user's problem only for disk-full / permission / path-in-the-way errnos.
            problem = e if isinstance(e, UserError) else from_os_error(e)
            if problem is None:
                raise
            err.print(f"[bold red]error:[/] {escape(str(problem))}", markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool):
    if value:
        out.print(f"megalang {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
):
    pass


def split_recipe(args: list[str]) -> tuple[str | None, list[str]]:
    if args and "=" not in args[0]:
        recipe = args[0]
        if not Path(recipe).suffix in (".yaml", ".yml"):
            raise UserError(f"'{recipe}': expected a recipe .yaml file or key=value overrides")
        return recipe, args[1:]
    return None, args


def counts_line(counts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items() if not isinstance(v, (dict, list)))


# --- options read from the config models ------------------------------------------------------------


def field_option(model: type[BaseModel], name: str, *param_decls: str, prefix: str = "", suffix: str = "", **kwargs: Any) -> Any:
    """A typer.Option whose help is the description of `model.name` and whose shown default is the field's default,
    so the CLI never repeats either. Declare the parameter Optional with `= None` and pass it through `given`: an
    option left unset stays out of the config, and the model's own default applies."""
    field = model.model_fields[name]
    text = f"{prefix}{field.description}{suffix}"
    if text.split(" ", 1)[0].rstrip(",;").isalpha():  # not "strict: …" or "a100-40gb, …": a value keeps its case
        text = text[:1].upper() + text[1:]
    help_ = text + ("" if text.endswith(".") else ".")
    shown = None if field.is_required() else shown_default(name, field.get_default(call_default_factory=True))
    if shown is not None:
        help_ += f"  [default: {shown}]"
    return typer.Option(*param_decls, help=help_, show_default=False, **kwargs)


def shown_default(name: str, default: Any) -> str | None:
    """A default as click prints one: a flag by its name, a list comma-separated; nothing for None or empty."""
    if isinstance(default, bool):
        flag = name.replace("_", "-")
        return flag if default else f"no-{flag}"
    if default is None or (isinstance(default, (list, dict)) and not default):
        return None
    return ",".join(map(str, default)) if isinstance(default, list) else str(default)


def given(**options: Any) -> dict[str, Any]:
    """The options the user set; unset ones (None) are left out so the config's defaults apply."""
    return {k: v for k, v in options.items() if v is not None}


def passed(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave parameter `name` (by its Python name), whatever its value."""
    # By name: typer vendors its own click, so click's ParameterSource enum is not the one typer returns.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def refuse_unused(ctx: typer.Context, names: list[str], why: str) -> None:
    """Refuse the first option among `names` (parameter names) given on the command line although `why` says it is
    not used; a silently ignored option would make a user believe it took effect."""
    for param in ctx.command.params:
        if param.name in names and passed(ctx, param.name):
            flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            raise UserError(f"{flag}: {why}")
