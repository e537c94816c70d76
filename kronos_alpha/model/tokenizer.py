"""KronosTokenizer: OHLCV bars <-> hierarchical (s1 coarse, s2 fine) tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bsq import BSQuantizer
from .hub import HubMixin
from .layers import TransformerBlock


class KronosTokenizer(
    nn.Module,
    HubMixin,
    library_name="kronos-alpha",
    repo_url="https://github.com/shiyu-coder/Kronos",
    tags=["time-series", "finance", "kronos"],
):
    """Causal transformer autoencoder with a binary spherical quantiser in the middle.

    Constructor arguments are those of the published ``config.json`` files.
    """

    def __init__(
        self,
        d_in: int,
        d_model: int,
        n_heads: int,
        ff_dim: int,
        n_enc_layers: int,
        n_dec_layers: int,
        ffn_dropout_p: float,
        attn_dropout_p: float,
        resid_dropout_p: float,
        s1_bits: int,
        s2_bits: int,
        beta: float,
        gamma0: float,
        gamma: float,
        zeta: float,
        group_size: int,
    ):
        super().__init__()
        self.d_in, self.d_model = d_in, d_model
        self.s1_bits, self.s2_bits = s1_bits, s2_bits
        self.codebook_dim = s1_bits + s2_bits

        def block():
            return TransformerBlock(
                d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p, resid_dropout_p
            )

        self.embed = nn.Linear(d_in, d_model)
        self.head = nn.Linear(d_model, d_in)
        # The published configs count the embedding as the first "layer".
        self.encoder = nn.ModuleList([block() for _ in range(n_enc_layers - 1)])
        self.decoder = nn.ModuleList([block() for _ in range(n_dec_layers - 1)])
        self.quant_embed = nn.Linear(d_model, self.codebook_dim)
        self.post_quant_embed_pre = nn.Linear(s1_bits, d_model)
        self.post_quant_embed = nn.Linear(self.codebook_dim, d_model)
        self.tokenizer = BSQuantizer(s1_bits, s2_bits, beta, gamma0, gamma, zeta, group_size)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        for layer in self.encoder:
            z, _ = layer(z)
        return self.quant_embed(z)

    def _decode_code(self, code: torch.Tensor, from_s1_only: bool = False) -> torch.Tensor:
        z = self.post_quant_embed_pre(code) if from_s1_only else self.post_quant_embed(code)
        for layer in self.decoder:
            z, _ = layer(z)
        return self.head(z)

    def encode(self, x: torch.Tensor, half: bool = True):
        """x: (batch, time, d_in) normalised bars -> (s1, s2) indices, or full indices."""
        _, _, indices = self.tokenizer(self._project(x), half)
        return indices

    def decode(self, indices, half: bool = True) -> torch.Tensor:
        """(s1, s2) indices (or full indices) -> (batch, time, d_in) normalised bars."""
        return self._decode_code(self.tokenizer.index_to_code(indices, half))

    def forward(self, x: torch.Tensor):
        """Training pass: ((coarse, full) reconstructions, bsq loss, code, (s1, s2) indices)."""
        code, bsq_loss, indices = self.tokenizer(self._project(x), half=True)
        coarse = self._decode_code(code[..., : self.s1_bits], from_s1_only=True)
        full = self._decode_code(code)
        return (coarse, full), bsq_loss, code, indices

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Upstream's tokenizer objective: (MSE coarse + MSE full + bsq) / 2."""
        (coarse, full), bsq_loss, _, _ = self(x)
        recon_s1 = F.mse_loss(coarse, x)
        recon_full = F.mse_loss(full, x)
        return {
            "loss": (recon_s1 + recon_full + bsq_loss) / 2,
            "recon_from_s1_mse": recon_s1,
            "recon_full_mse": recon_full,
            "bsq_loss": bsq_loss,
        }
