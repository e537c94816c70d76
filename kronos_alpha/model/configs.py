"""Constructor arguments of the published checkpoints (from the Hub's config.json files).

Used to build models of published dimensions without downloading them: benchmarks,
parameter-count checks and fresh training runs.
"""

TOKENIZER_BASE = dict(d_in=6, d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4,
                      ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=10, s2_bits=10,
                      beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4)  # fmt: skip
KRONOS_SMALL = dict(s1_bits=10, s2_bits=10, n_layers=8, d_model=512, n_heads=8, ff_dim=1024,
                    ffn_dropout_p=0.25, attn_dropout_p=0.1, resid_dropout_p=0.25, token_dropout_p=0.1,
                    learn_te=True)  # fmt: skip
KRONOS_BASE = dict(KRONOS_SMALL, d_model=832, n_layers=12, n_heads=16, ff_dim=2048)
KRONOS_MINI = dict(KRONOS_SMALL, d_model=256, n_layers=4, n_heads=4, ff_dim=512)


def without_dropout(config: dict) -> dict:
    """The same configuration with every dropout probability at 0 (inference benchmarks)."""
    return {k: (0.0 if k.endswith("dropout_p") else v) for k, v in config.items()}
