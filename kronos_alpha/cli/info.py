"""``kronos-alpha info``: the device, the model-zoo names, and a checkpoint's details."""

from __future__ import annotations

import json

from . import DefaultsHelpFormatter


def register(sub) -> None:
    p = sub.add_parser(
        "info",
        help="show the device, the model zoo and checkpoint details",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--model", help="a zoo name (kronos-small), Hub id or checkpoint folder to describe"
    )
    p.add_argument("--tokenizer", help="a tokenizer folder or Hub id to describe")
    p.set_defaults(func=run)


def describe(module) -> dict:
    n = sum(p.numel() for p in module.parameters())
    return {
        "class": type(module).__name__,
        "parameters": n,
        "config": getattr(module, "_hub_mixin_config", None),
    }


def checkpoints(model: str, tokenizer: str | None) -> dict:
    """What ``--model`` names, resolved as ``forecast`` resolves it (zoo names included)."""
    from pathlib import Path

    from kronos_alpha.model import Kronos, zoo

    folder = Path(model)
    if tokenizer is None and (folder / "config.json").is_file():  # a lone predictor folder
        return {"model": {"source": model, **describe(Kronos.from_pretrained(model))}}
    net, tok, max_context, source = zoo.resolve_checkpoint(model, tokenizer)
    return {
        "model": {"source": source, "max_context": max_context, **describe(net)},
        "tokenizer": {"source": tokenizer or source, **describe(tok)},
    }


def run(args) -> int:
    import torch

    from kronos_alpha import __version__
    from kronos_alpha.inference.device import auto_device
    from kronos_alpha.model.zoo import ZOO, default_info

    info = {
        "kronos_alpha": __version__,
        "torch": torch.__version__,
        "device": auto_device(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "zoo": {k: vars(v) for k, v in ZOO.items()},
        "offline_default": default_info(),
    }
    if args.model:
        info.update(checkpoints(args.model, args.tokenizer))
    elif args.tokenizer:
        from kronos_alpha.model.zoo import load_tokenizer

        info["tokenizer"] = {"source": args.tokenizer, **describe(load_tokenizer(args.tokenizer))}
    print(json.dumps(info, indent=2, default=str))
    return 0
