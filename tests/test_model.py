"""Published configurations, state-dict compatibility and strict Hub I/O."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import SHARED, TINY_MODEL, TINY_TOKENIZER
from safetensors.torch import load_file, save_file

from kronos_alpha import CheckpointError, Kronos, KronosTokenizer
from kronos_alpha.model.configs import KRONOS_BASE, KRONOS_MINI, KRONOS_SMALL, TOKENIZER_BASE
from kronos_alpha.model.zoo import ZOO, resolve


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def on_meta(cls, **cfg):
    with torch.device("meta"):  # shapes only: no memory, no init time
        return cls(**cfg)


def test_published_parameter_counts():
    assert n_params(on_meta(KronosTokenizer, **TOKENIZER_BASE)) == 3_958_042
    assert n_params(on_meta(Kronos, **KRONOS_SMALL)) == 24_741_376
    # Given as 102.3M and 4.1M in the model card.
    assert round(n_params(on_meta(Kronos, **KRONOS_BASE)) / 1e6, 1) == 102.3
    assert round(n_params(on_meta(Kronos, **KRONOS_MINI)) / 1e6, 1) == 4.1


def _published_keys(section: str, n_layers: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes from state_dict_keys.txt, with {i} expanded."""
    path = SHARED / "fixtures" / "state_dict_keys.txt"
    if not path.exists():
        pytest.skip(f"{path} not found")
    keys, current = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = line
            continue
        if current is None or not line.strip() or line.startswith("#") or section not in current:
            continue
        name, shape = line.split("\t")
        shape = tuple(int(s) for s in re.findall(r"\d+", shape))
        if "{i}" in name:
            limit = n_layers - 1 if name.startswith(("encoder", "decoder")) else n_layers
            for i in range(limit):
                keys[name.replace("{i}", str(i))] = shape
        else:
            keys[name] = shape
    return keys


def test_state_dict_keys_match_the_published_checkpoints():
    tok = on_meta(KronosTokenizer, **TOKENIZER_BASE)
    assert {k: tuple(v.shape) for k, v in tok.state_dict().items()} == _published_keys(
        "Kronos-Tokenizer-base", 4
    )
    model = on_meta(Kronos, **KRONOS_SMALL)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _published_keys(
        "Kronos-small", 8
    )
    fixed = on_meta(Kronos, **dict(KRONOS_SMALL, learn_te=False))
    expected = {k.replace("_embed.weight", "_embed.emb.weight") if k.startswith("time_emb") else k: v
                for k, v in _published_keys("Kronos-small", 8).items()}  # fmt: skip
    assert {k: tuple(v.shape) for k, v in fixed.state_dict().items()} == expected


def test_fixed_temporal_tables_are_sinusoidal_and_frozen():
    model = Kronos(**dict(TINY_MODEL, learn_te=False))
    table = model.time_emb.hour_embed.emb.weight
    assert not table.requires_grad
    assert torch.allclose(table[3, 0], torch.sin(torch.tensor(3.0)))
    assert torch.allclose(table[3, 1], torch.cos(torch.tensor(3.0)))


def test_save_and_load_round_trip(tmp_path, tiny_pair):
    model, tokenizer = tiny_pair
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "t")
    assert (
        json.loads((tmp_path / "m" / "config.json").read_text())["d_model"] == TINY_MODEL["d_model"]
    )
    m2 = Kronos.from_pretrained(tmp_path / "m")
    t2 = KronosTokenizer.from_pretrained(tmp_path / "t")
    for a, b in ((model, m2), (tokenizer, t2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not m2.training  # loaded for inference


def test_loads_the_upstream_fixture_strictly(upstream_tiny, fixture_dir):
    model, tokenizer = upstream_tiny
    state = load_file(str(fixture_dir / "model" / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert tokenizer.s1_bits == 6 and model.s1_bits == 6


def test_missing_files_are_named(tmp_path, tiny_pair):
    model, _ = tiny_pair
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Kronos.from_pretrained(tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        Kronos.from_pretrained(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        Kronos.from_pretrained(tmp_path / "no-such-folder")


def test_config_that_does_not_fit_the_weights(tmp_path, tiny_pair):
    model, _ = tiny_pair
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(cfg, ff_dim=cfg["ff_dim"] * 2)))
    with pytest.raises(CheckpointError, match=r"shape mismatches.*ffn\.w1\.weight"):
        Kronos.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(dict(cfg, n_layers=cfg["n_layers"] + 1)))
    with pytest.raises(CheckpointError, match=r"missing keys.*transformer\.2\."):
        Kronos.from_pretrained(folder)
    (folder / "config.json").write_text(
        json.dumps({k: v for k, v in cfg.items() if k != "d_model"})
    )
    with pytest.raises(CheckpointError, match="d_model"):
        Kronos.from_pretrained(folder)


def test_unexpected_keys_are_named(tmp_path, tiny_pair):
    _, tokenizer = tiny_pair
    folder = tmp_path / "t"
    tokenizer.save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected keys.*extra.weight"):
        KronosTokenizer.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        KronosTokenizer.from_pretrained(folder)


def test_zoo_names_resolve():
    small = resolve("kronos-small")
    assert (small.model, small.tokenizer, small.max_context) == (
        "NeoQuasar/Kronos-small",
        "NeoQuasar/Kronos-Tokenizer-base",
        512,
    )
    assert resolve("NeoQuasar/Kronos-mini") == ZOO["kronos-mini"]
    assert resolve("Kronos-mini").max_context == 2048
    assert resolve("kronos-base").tokenizer == "NeoQuasar/Kronos-Tokenizer-base"
    with pytest.raises(KeyError, match="kronos-huge"):
        resolve("kronos-huge")


def test_tokenizer_round_trips_its_own_codes(tiny_pair):
    _, tokenizer = tiny_pair
    x = torch.randn(2, 10, 6)
    with torch.no_grad():
        s1, s2 = tokenizer.encode(x)
        full = tokenizer.encode(x, half=False)
        assert torch.equal(full, s1 + (s2 << TINY_TOKENIZER["s1_bits"]))
        assert torch.equal(tokenizer.decode((s1, s2)), tokenizer.decode(full, half=False))
    assert int(s1.max()) < 2 ** TINY_TOKENIZER["s1_bits"]


def test_tiny_tokenizer_config_is_valid():
    with pytest.raises(ValueError, match="group_size"):
        KronosTokenizer(**dict(TINY_TOKENIZER, group_size=3))
    with pytest.raises(ValueError, match="divisible"):
        Kronos(**dict(TINY_MODEL, n_heads=5))
