"""``kronos-alpha qrun CONFIG.yaml``: Qlib's ``qrun`` with the config's paths made absolute.

Plain ``qrun`` reads a relative ``provider_uri`` against the working directory, and run from
elsewhere it fails late with Qlib's "can't find a freq from [] that can resample to day!".
This command loads the YAML as ``qrun`` does (Jinja rendering from the environment,
``BASE_CONFIG_PATH``), makes its relative paths absolute, checks the provider folder, and
runs Qlib's own workflow (``qlib.cli.run.workflow``) on the resolved copy.

Which paths, and against what:

- inputs - ``qlib_init.provider_uri`` (a path or a ``{freq: path}`` mapping), a
  ``riskmodel_root``, and the ``model``/``tokenizer`` of a ``kronos_alpha`` class (also in
  its ``kronos:`` block, and the ``init`` checkpoints of its ``finetune_config``) - are looked up from the config file's
  folder, then from each folder above it; the first that exists is used. So the example
  YAMLs, written relative to the project root for plain ``qrun``, work from any directory.
  A ``model`` found nowhere is left as written (a zoo name or a Hub id), unless it starts
  with ``./``, ``../`` or ``~``.
- outputs of a ``kronos_alpha`` class (``cache_dir``, ``settings.cache_dir``,
  ``kronos.cache_dir``, ``finetune_config.output_dir``) are put in the config file's folder.
- ``sys.rel_path`` entries are made absolute against the config file's folder, as qrun does.
- mlflow's store (``exp_manager``'s uri, or ``--uri-folder``) stays where Qlib puts it:
  relative to the working directory.

Every path changed is printed on stderr. A provider folder that is missing, or has no
calendar, ends the command (exit 1) with the key, the path as written and as resolved.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

from . import DefaultsHelpFormatter

INPUT_KEYS = ("model", "tokenizer")  # of kronos_alpha classes: a folder, or a zoo/Hub name
OUTPUT_KEYS = ("cache_dir",)  # of kronos_alpha classes


class QrunConfigError(ValueError):
    """A workflow config this command will not run; the message names the key and the path."""


def register(sub) -> None:
    p = sub.add_parser(
        "qrun",
        help="run a Qlib workflow YAML (as qrun) with its relative paths read from the config's folder",
        description=(
            "Run a Qlib workflow YAML like Qlib's qrun, from any directory: relative paths in "
            "the config (qlib_init.provider_uri, the Kronos model's model/tokenizer/cache_dir, "
            "riskmodel_root) are read from the config file's folder (inputs also from the "
            "folders above it), and the provider folder is checked before Qlib starts."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "config", help="the workflow YAML (e.g. examples/qlib/workflow_kronos_fast.yaml)"
    )
    p.add_argument(
        "--experiment-name",
        default="workflow",
        help="mlflow experiment, as qrun's (a config's experiment_name wins)",
    )
    p.add_argument(
        "--uri-folder",
        default="mlruns",
        help="mlflow file store in the working directory, when qlib_init has no exp_manager",
    )
    p.add_argument(
        "--resolve-only",
        action="store_true",
        help="print the resolved config (YAML) and check the provider; run nothing",
    )
    p.set_defaults(func=run)


# -- resolution -----------------------------------------------------------------------------------
def _candidates(written: str, folder: Path) -> list[Path]:
    path = Path(written).expanduser()
    if path.is_absolute():
        return [path]
    return [(base / path).resolve() for base in (folder, *folder.parents)]


def find_input(written: str, folder: Path) -> Path | None:
    """The first of ``folder/written``, ``folder/../written``, ... that exists (or None)."""
    return next((p for p in _candidates(written, folder) if p.exists()), None)


def _looks_local(written: str) -> bool:
    return written.startswith(("./", "../", "~", "/")) or written in (".", "..")


class _Resolver:
    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        self.changes: list[tuple[str, str, str]] = []  # (key, as written, resolved)

    def _note(self, key: str, written: str, resolved: Path) -> str:
        if str(resolved) != written:
            self.changes.append((key, written, str(resolved)))
        return str(resolved)

    def input(self, key: str, written, must_exist: bool = True):
        """A path to read: found from the config's folder upward; else the config's folder
        (``must_exist``) or, for a name that may be a zoo name/Hub id, as written."""
        if not isinstance(written, str) or not written or "://" in written:
            return written
        found = find_input(written, self.folder)
        if found is None:
            if not must_exist and not _looks_local(written):
                return written  # kronos-small, NeoQuasar/Kronos-small: not a local folder
            found = _candidates(written, self.folder)[0]
        return self._note(key, written, found)

    def output(self, key: str, written):
        if not isinstance(written, str) or not written:
            return written
        return self._note(key, written, _candidates(written, self.folder)[0])

    def kronos_kwargs(self, key: str, kwargs: dict) -> None:
        for name in INPUT_KEYS:
            if name in kwargs:
                kwargs[name] = self.input(f"{key}.{name}", kwargs[name], must_exist=False)
        for name in OUTPUT_KEYS:
            if name in kwargs:
                kwargs[name] = self.output(f"{key}.{name}", kwargs[name])
        nested = kwargs.get("kronos")  # a handler's Kronos block (KronosAlpha158's kronos:)
        if isinstance(nested, dict):
            self.kronos_kwargs(f"{key}.kronos", nested)
        settings = kwargs.get("settings")
        if isinstance(settings, dict) and "cache_dir" in settings:
            settings["cache_dir"] = self.output(f"{key}.settings.cache_dir", settings["cache_dir"])
        ft = kwargs.get("finetune_config")
        if isinstance(ft, dict):
            if "output_dir" in ft:
                ft["output_dir"] = self.output(
                    f"{key}.finetune_config.output_dir", ft["output_dir"]
                )
            for stage in ("tokenizer", "predictor"):
                part = ft.get(stage)
                if isinstance(part, dict) and part.get("init") not in (None, "fresh"):
                    where = f"{key}.finetune_config.{stage}.init"
                    part["init"] = self.input(where, part["init"], must_exist=False)

    def walk(self, node, key: str) -> None:
        if isinstance(node, dict):
            kwargs = node.get("kwargs")
            if isinstance(kwargs, dict):
                if str(node.get("module_path", "")).startswith("kronos_alpha"):
                    self.kronos_kwargs(f"{key}.kwargs", kwargs)
                if "riskmodel_root" in kwargs:
                    where = f"{key}.kwargs.riskmodel_root"
                    kwargs["riskmodel_root"] = self.input(where, kwargs["riskmodel_root"])
            for name, value in node.items():
                self.walk(value, f"{key}.{name}" if key else str(name))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                self.walk(value, f"{key}[{i}]")


def resolve_config(config: dict, folder) -> tuple[dict, list[tuple[str, str, str]]]:
    """A copy of the workflow ``config`` (a dict, as loaded from a YAML in ``folder``) whose
    relative paths are absolute (see the module's docstring), and the changes made as
    ``(key, as written, resolved)``. Checks nothing; ``check_provider`` does."""
    config = copy.deepcopy(config)
    r = _Resolver(folder)
    init = config.get("qlib_init")
    if isinstance(init, dict) and "provider_uri" in init:
        uri = init["provider_uri"]
        if isinstance(uri, dict):
            init["provider_uri"] = {
                freq: r.input(f"qlib_init.provider_uri.{freq}", path) for freq, path in uri.items()
            }
        else:
            init["provider_uri"] = r.input("qlib_init.provider_uri", uri)
    sys_part = config.get("sys")
    if isinstance(sys_part, dict) and sys_part.get("rel_path"):
        rel = sys_part.pop("rel_path")
        rel = [rel] if isinstance(rel, str) else list(rel)
        paths = sys_part.get("path") or []
        paths = [paths] if isinstance(paths, str) else list(paths)
        sys_part["path"] = paths + [r.output(f"sys.rel_path[{i}]", p) for i, p in enumerate(rel)]
    for name, value in config.items():
        if name not in ("qlib_init", "sys"):
            r.walk(value, str(name))
    return config, r.changes


def check_provider(config: dict) -> None:
    """A ``QrunConfigError`` naming the key and the path when ``qlib_init.provider_uri`` is
    not a folder with a calendar (``calendars/day.txt`` for daily data)."""
    uri = (config.get("qlib_init") or {}).get("provider_uri")
    if uri is None:
        return  # Qlib's own default (~/.qlib/qlib_data/cn_data)
    items = uri.items() if isinstance(uri, dict) else [(None, uri)]
    for freq, path in items:
        key = "qlib_init.provider_uri" + (f".{freq}" if freq else "")
        if not isinstance(path, str) or "://" in path:
            continue
        root = Path(path)
        if not root.is_dir():
            raise QrunConfigError(
                f"{key}: the provider folder {path} does not exist (a relative path is read from "
                "the config file's folder, then the folders above it)"
            )
        calendar = root / "calendars" / f"{freq or 'day'}.txt"
        if not calendar.is_file() and not any((root / "calendars").glob("*.txt")):
            raise QrunConfigError(
                f"{key}: {path} is not a Qlib provider folder: it has no {calendar.relative_to(root)} "
                "(no calendar at all; Qlib would fail with \"can't find a freq from [] that can "
                'resample to day!"). Build one with `kronos-alpha qlib-data build`.'
            )


def load_config(path) -> tuple[dict, list[tuple[str, str, str]]]:
    """The workflow config at ``path`` as qrun reads it (rendered from the environment, its
    ``BASE_CONFIG_PATH`` merged in), resolved; and the changes made."""
    import yaml
    from qlib.cli.run import render_template
    from qlib.utils.data import update_config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    config = yaml.safe_load(render_template(str(path)))
    if not isinstance(config, dict):
        raise QrunConfigError(f"{path}: the top level must be a mapping of fields")
    folder = path.resolve().parent
    config, changes = resolve_config(config, folder)
    base = config.pop("BASE_CONFIG_PATH", None)
    if base:
        found = find_input(str(base), folder) or (Path.cwd() / base)
        if not found.is_file():
            raise QrunConfigError(f"BASE_CONFIG_PATH: {base} is not a file (read from {folder})")
        base_config, base_changes = load_config(found)
        config = update_config(base_config, config)
        changes = base_changes + [("BASE_CONFIG_PATH", str(base), str(found.resolve()))] + changes
    return config, changes


def run(args) -> int:
    import tempfile

    import yaml

    from kronos_alpha.files import write_text

    config, changes = load_config(args.config)
    for key, written, resolved in changes:
        print(f"kronos-alpha qrun: {key}: {written} -> {resolved}", file=sys.stderr)
    check_provider(config)
    text = yaml.safe_dump(config, sort_keys=False)
    if args.resolve_only:
        print(text, end="")
        return 0
    from qlib.cli.run import workflow

    with tempfile.TemporaryDirectory(prefix="kronos-alpha-qrun-") as tmp:
        resolved = write_text(Path(tmp) / Path(args.config).name, text)
        workflow(str(resolved), experiment_name=args.experiment_name, uri_folder=args.uri_folder)
    return 0
