"""Small data and model shared by the training tests and the DDP script."""

from reactfast.data import SyntheticDyads
from reactfast.models import ReactFace, ReactFaceConfig


def tiny_data(split="train", sessions=4, frames=96):
    return SyntheticDyads(sessions=sessions, frames=frames, audio_dim=8, prototypes=2, split=split, seed=0)


def tiny_model(dropout=0.0, seed=0):
    import torch

    torch.manual_seed(seed)
    return ReactFace(ReactFaceConfig(speaker_dim=83, speaker_inputs="emotion+3dmm", audio_dim=8, dim=16, heads=2,
                                     cie_heads=2, cie_ffn=32, cie_layers=1, decoder_layers=1, window_train=16,
                                     window=8, context=32, past=16, dropout=dropout, train_samples=2))


def tiny_reactdiff(seed=0):
    import torch

    from reactfast.models import ReactDiff, ReactDiffConfig

    torch.manual_seed(seed)
    return ReactDiff(ReactDiffConfig(audio_dim=8, attn_dim=16, heads=2, latent=8, dec_heads=2, dec_ffn=16,
                                     dec_layers=1, window=8, train_steps=8, channels=8, mults=(1, 2), res_blocks=1,
                                     attn_levels=1, norm_groups=4, cond_dim=16))


def ddp_case(name):
    """(model, dataset, TrainConfig fields, validation set or None) of the DDP test's cases, built
    alike in the test and under torchrun: "tiny" (ReactFace items of two training windows),
    "one_window" (items of one: its past-listener fusion is skipped, parameters DDP must know are
    left without a gradient), "perfrdiff" (stage 1: its style encoder trained by a contrastive loss
    beside the denoiser) and "reactdiff" (stage 1, validated by its loss over 3 clips: the
    processes take 2 and 1)."""
    from reactfast.models import PerFRDiff

    cfg = dict(steps=4, batch_size=4, lr=1e-2, progress=False)
    if name == "tiny":
        return tiny_model(), tiny_data().dataset(frames=64, window=32, stride=32), cfg, None
    if name == "one_window":
        return tiny_model(), tiny_data().dataset(frames=64, window=16, stride=16), cfg, None
    if name == "reactdiff":
        import torch

        model = tiny_reactdiff().set_stage(1)
        for module in model.modules():   # the decoder's dropout (the authors' 0.1) draws from torch's RNG
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            elif isinstance(module, torch.nn.MultiheadAttention):
                module.dropout = 0.0
        val = tiny_data("val", sessions=3).dataset(frames=32, mirror=False)
        return model, tiny_data().dataset(frames=64, window=32, stride=32), dict(cfg, val_every=2), val
    if name == "perfrdiff":
        import dataclasses

        import torch

        torch.manual_seed(0)
        # No dropout: the processes draw other masks than one process does (the condition dropout and the
        # noise come from each item's generator).
        config = dataclasses.replace(PerFRDiff.demo_config(8), window=8, dim=16, heads=2, ffn=32, layers=2, dropout=0.0,
                                     style_dim=8, style_layers=1, style_heads=2, style_ffn=16, hyper_hidden=8,
                                     edited_layers=("decoder.layers.1.multihead_attn",), min_history=4)
        model = PerFRDiff(config).set_stage(1)
        # Items of a few listeners each, so that batches hold positive pairs for the contrastive loss.
        return model, tiny_data(sessions=2).dataset(frames=64, window=16, stride=8), cfg, None
    raise ValueError(name)
