"""Binary spherical quantisation (BSQ): project to the unit sphere, keep the signs.

A code of ``s1_bits + s2_bits`` signs is split into a coarse index (the first s1_bits)
and a fine index (the rest). Bit i of a group contributes ``2**i`` (least significant
bit first); a sign of exactly 0 counts as -1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of Bernoulli(p), elementwise, with the log guard of the published losses."""
    q = torch.stack([p, 1 - p], dim=-1)
    return -(q * torch.log(q + 1e-8)).sum(-1)


class BinarySphericalQuantizer(nn.Module):
    """Sign quantiser with the commitment and entropy losses used in training."""

    def __init__(
        self, embed_dim: int, beta: float, gamma0: float, gamma: float, zeta: float, group_size: int
    ):
        super().__init__()
        if embed_dim % group_size:
            raise ValueError(
                f"group_size ({group_size}) must divide s1_bits + s2_bits ({embed_dim})"
            )
        self.embed_dim = embed_dim
        self.beta, self.gamma0, self.gamma, self.zeta = beta, gamma0, gamma, zeta
        # Both buffers are stored in the published checkpoints (most significant bit first);
        # only their presence matters, the index convention is fixed in `bits_to_index`.
        self.register_buffer("basis", 2 ** torch.arange(embed_dim - 1, -1, -1))
        self.register_buffer("group_basis", 2 ** torch.arange(group_size - 1, -1, -1))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: L2-normalised projections. Returns (straight-through scaled code, bsq loss)."""
        signs = torch.where(z > 0, torch.ones_like(z), -torch.ones_like(z))
        code = (z + (signs - z).detach()) * (1.0 / self.embed_dim**0.5)
        commit = self.beta * ((code.detach() - z) ** 2).sum(-1).mean()
        # Analytical entropies of each bit's soft assignment.
        p = torch.sigmoid(-4 * z / self.embed_dim**0.5)
        per_sample = binary_entropy(p).sum(-1).mean()
        codebook = binary_entropy(p.reshape(-1, self.embed_dim).mean(0)).sum()
        loss = commit + self.zeta * (self.gamma0 * per_sample - self.gamma * codebook)
        return code, loss


class BSQuantizer(nn.Module):
    """Splits BSQ codes into the coarse (s1) and fine (s2) token indices."""

    def __init__(
        self,
        s1_bits: int,
        s2_bits: int,
        beta: float,
        gamma0: float,
        gamma: float,
        zeta: float,
        group_size: int,
    ):
        super().__init__()
        self.s1_bits, self.s2_bits = s1_bits, s2_bits
        self.codebook_dim = s1_bits + s2_bits
        self.bsq = BinarySphericalQuantizer(
            self.codebook_dim, beta, gamma0, gamma, zeta, group_size
        )

    @staticmethod
    def bits_to_index(code: torch.Tensor) -> torch.Tensor:
        bits = (code >= 0).long()  # codes are never exactly 0: signs map 0 to -1
        weights = 2 ** torch.arange(code.shape[-1], device=code.device, dtype=torch.long)
        return (bits * weights).sum(-1)

    def forward(self, z: torch.Tensor, half: bool = True):
        """Returns (code, bsq loss, indices): indices are (s1, s2) when half, else one index."""
        code, loss = self.bsq(F.normalize(z, dim=-1))
        if half:
            indices = (
                self.bits_to_index(code[..., : self.s1_bits]),
                self.bits_to_index(code[..., self.s1_bits :]),
            )
        else:
            indices = self.bits_to_index(code)
        return code, loss, indices

    def index_to_code(self, indices, half: bool = True) -> torch.Tensor:
        """Inverse of the index split: +-1/sqrt(dim) codes from (s1, s2) or full indices."""
        if half:
            s1, s2 = indices
            bits = torch.cat([_index_bits(s1, self.s1_bits), _index_bits(s2, self.s2_bits)], dim=-1)
        else:
            bits = _index_bits(indices, self.codebook_dim)
        return (bits.float() * 2 - 1) * (1.0 / self.codebook_dim**0.5)


def _index_bits(index: torch.Tensor, n_bits: int) -> torch.Tensor:
    mask = 2 ** torch.arange(n_bits, device=index.device, dtype=torch.long)
    return (index.unsqueeze(-1) & mask) != 0
