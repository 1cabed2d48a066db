"""Presets equal their originals: the PoolFormer paper's [Pool, Pool, Attn, Attn] hybrid against its structure as
the authors wrote it, MLP-Mixer and ResMLP with timm's weights, the head that normalises every token before the
average pool, position embeddings, and each original's preprocessing."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from explorer.core.build import build_model
from explorer.core.catalog import load_spec, preset_names
from explorer.core.spec import NORMS, ArchSpec, SpecError
from explorer.explain.predict import data_config
from explorer.explain.weights import load_model
from explorer.measure.analytic import analytic_cost
from explorer.measure.fvcore_count import fvcore_cost
from tests.conftest import tiny_spec


# ---- the PPAA hybrid, rebuilt the way sail-sg/poolformer models/metaformer.py builds metaformer_ppaa_s12_224 ----
# (written for this test from the published structure: a list `network` of stages, downsamplings and the position
# embedding; LayerNormChannel everywhere; the head normalises every token, averages, classifies)
class LayerNormChannel(nn.Module):
    def __init__(self, c, eps=1e-5):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - mu) / torch.sqrt(var + self.eps) + self.bias[:, None, None]


class PoolMix(nn.Module):
    def forward(self, x):
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - x


class AttnMix(nn.Module):  # on (B, C, H, W): flatten, attend with head_dim 32, restore
    def __init__(self, c):
        super().__init__()
        self.heads = c // 32
        self.qkv, self.proj = nn.Linear(c, 3 * c, bias=False), nn.Linear(c, c)

    def forward(self, x):
        B, C, H, W = x.shape
        t = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).reshape(B, H * W, 3, self.heads, 32).permute(2, 0, 3, 1, 4)
        a = ((q * 32**-0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, H * W, C)).transpose(1, 2).reshape(B, C, H, W)


class OriginalBlock(nn.Module):
    def __init__(self, c, mixer):
        super().__init__()
        self.norm1, self.token_mixer, self.norm2 = LayerNormChannel(c), mixer, LayerNormChannel(c)
        self.fc1, self.fc2 = nn.Conv2d(c, 4 * c, 1), nn.Conv2d(4 * c, c, 1)
        self.layer_scale_1 = nn.Parameter(1e-5 * torch.ones(c))
        self.layer_scale_2 = nn.Parameter(1e-5 * torch.ones(c))

    def forward(self, x):
        x = x + self.layer_scale_1[:, None, None] * self.token_mixer(self.norm1(x))
        return x + self.layer_scale_2[:, None, None] * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class OriginalPPAA(nn.Module):
    def __init__(self, depths=(2, 2, 6, 2), dims=(64, 128, 320, 512)):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dims[0], 7, 4, 2)
        net = []
        for i, (d, c) in enumerate(zip(depths, dims)):
            if i == 2:
                net.append(nn.ParameterDict({'pos_embed': nn.Parameter(torch.zeros(1, c, 14, 14))}))
            net.append(nn.Sequential(*[OriginalBlock(c, PoolMix() if i < 2 else AttnMix(c)) for _ in range(d)]))
            if i < 3:
                net.append(nn.Conv2d(c, dims[i + 1], 3, 2, 1))
        self.network = nn.ModuleList(net)
        self.norm, self.head = LayerNormChannel(dims[-1]), nn.Linear(dims[-1], 1000)

    def forward(self, x):
        x = self.patch_embed(x)
        for part in self.network:
            x = x + part['pos_embed'] if isinstance(part, nn.ParameterDict) else part(x)
        return self.head(self.norm(x).mean([-2, -1]))


def _ours_from_original(orig: OriginalPPAA, ours: nn.Module) -> None:
    """Copy the original's weights into the preset's model, key by key."""
    o = dict(orig.named_parameters())
    target = ours.state_dict()
    src = {'stem.conv.weight': o['patch_embed.weight'], 'stem.conv.bias': o['patch_embed.bias']}
    stage_at, down_at = {0: 0, 1: 2, 2: 5, 3: 7}, {1: 1, 2: 3, 3: 6}
    for i in range(4):
        if i in down_at:
            prefix = 'downsample.0' if i == 2 else 'downsample'
            for w in ('weight', 'bias'):
                src[f'stages.{i}.{prefix}.conv.{w}'] = o[f'network.{down_at[i]}.{w}']
        blocks = orig.network[stage_at[i]]
        for j in range(len(blocks)):
            a, b = f'network.{stage_at[i]}.{j}', f'stages.{i}.blocks.{j}'
            for n in ('norm1', 'norm2'):
                for w in ('weight', 'bias'):
                    src[f'{b}.{n}.{w}'] = o[f'{a}.{n}.{w}']
            for n in ('fc1', 'fc2'):
                for w in ('weight', 'bias'):
                    src[f'{b}.mlp.{n}.{w}'] = o[f'{a}.{n}.{w}']
            src[f'{b}.layer_scale1.scale'] = o[f'{a}.layer_scale_1']
            src[f'{b}.layer_scale2.scale'] = o[f'{a}.layer_scale_2']
            if i >= 2:
                src[f'{b}.token_mixer.qkv.weight'] = o[f'{a}.token_mixer.qkv.weight']
                src[f'{b}.token_mixer.proj.weight'] = o[f'{a}.token_mixer.proj.weight']
                src[f'{b}.token_mixer.proj.bias'] = o[f'{a}.token_mixer.proj.bias']
    src['stages.2.downsample.1.pos_embed'] = o['network.4.pos_embed']
    for w in ('weight', 'bias'):
        src[f'head.norm.{w}'] = o[f'norm.{w}']
        src[f'head.fc.{w}'] = o[f'head.{w}']
    assert set(src) == set(target), set(src) ^ set(target)
    ours.load_state_dict({k: v.detach().reshape(target[k].shape) for k, v in src.items()})


def test_ppaa_preset_has_the_originals_parameter_count():
    spec = load_spec('poolformer_hybrid_ppaa_s12')
    original = sum(p.numel() for p in OriginalPPAA().parameters())
    assert original == 16_535_592  # 16,472,872 + the 320 x 14 x 14 = 62,720 position embedding
    assert sum(p.numel() for p in build_model(spec).parameters()) == original
    assert analytic_cost(spec).params == original


@pytest.mark.slow
def test_ppaa_preset_computes_what_the_original_computes():
    torch.manual_seed(0)
    orig = OriginalPPAA().eval()
    with torch.no_grad():  # every weight away from its init, so that norms, scales and the embedding all matter
        for p in orig.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = build_model(load_spec('poolformer_hybrid_ppaa_s12'), seed=0).eval()
    _ours_from_original(orig, ours)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), orig(x), rtol=1e-4, atol=1e-5)
        ours.stages[2].downsample[1].pos_embed.add_(1.0)  # the embedding is on the path: changing it changes logits
        assert (ours(x) - orig(x)).abs().max() > 1e-3


# ---- the head that normalises every token first, and position embeddings: counted and built as specified ------
def _head_spec(order: str, norm: str, pos: bool = False) -> ArchSpec:
    d = tiny_spec(mixers=('pooling', 'attention'), dims=(8, 16), img_size=16)
    d.update(head='linear', head_norm=norm, head_order=order)
    d['stages'][1]['pos_embed'] = pos
    return ArchSpec.from_dict(d)


def test_norm_pool_head_normalises_every_token_then_averages():
    spec = _head_spec('norm_pool', 'layernorm_channel')
    model = build_model(spec, seed=3).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = model.forward_features(x)  # (2, 16, 2, 2)
        by_hand = model.head.fc(F.layer_norm(feats.permute(0, 2, 3, 1), (16,), eps=1e-5).mean((1, 2)))
        torch.testing.assert_close(model(x), by_hand)
        pool_first = build_model(_head_spec('pool_norm', 'layernorm_channel'), seed=3).eval()
        assert (pool_first(x) - model(x)).abs().max() > 1e-3  # the order matters


@pytest.mark.parametrize('order', ['pool_norm', 'norm_pool'])
@pytest.mark.parametrize('norm', [n for n in NORMS if n != 'batchnorm'] + ['batchnorm'])
def test_head_norms_and_position_embeddings_count_alike(order, norm):
    if order == 'norm_pool' and norm == 'batchnorm':
        with pytest.raises(SpecError, match='head_norm'):
            _head_spec(order, norm)
        return
    spec = _head_spec(order, norm, pos=True)
    a, f = analytic_cost(spec), fvcore_cost(spec)
    model = build_model(spec, seed=0)
    assert a.params == f.params == sum(p.numel() for p in model.parameters())
    assert a.macs == f.macs
    # by hand: the head's norm sees 16 channels x 4 tokens (norm_pool) or the 16 pooled values; a LayerNorm or
    # GroupNorm costs 3 per element + 1 for its weight, BatchNorm 1 + 1, Affine 0; the pool 64, the fc 16 x 10
    per = {'affine': 0, 'batchnorm': 2}.get(norm, 4)
    seen = 16 * 4 if order == 'norm_pool' else 16
    assert a.components['head']['macs'] == 64 + per * seen + 16 * 10
    assert a.params - analytic_cost(_head_spec(order, norm)).params == 16 * 2 * 2  # the (16, 2, 2) embedding


def test_position_embedding_is_learned_zero_at_init_and_tied_to_the_grid():
    spec = _head_spec('pool_norm', 'layernorm', pos=True)
    model = build_model(spec, seed=0)
    pe = model.stages[1].downsample[1].pos_embed
    assert pe.shape == (1, 16, 2, 2) and pe.requires_grad and not pe.detach().any()
    d = spec.to_dict()
    d['img_size'] = 32
    assert build_model(d).stages[1].downsample[1].pos_embed.shape == (1, 16, 4, 4)
    d['stages'][1]['pos_embed'] = 'yes'
    with pytest.raises(SpecError, match=r'stages\[1\]\.pos_embed'):
        ArchSpec.from_dict(d)


# ---- MLP-Mixer and ResMLP: timm's weights through the key mapping, offline ------------------------------------
def _write_hub_cache(cache, repo: str, sd: dict):
    folder = cache / f'models--{repo.replace("/", "--")}'
    snap = folder / 'snapshots' / ('a' * 40)
    snap.mkdir(parents=True)
    (folder / 'refs').mkdir()
    (folder / 'refs' / 'main').write_text('a' * 40)
    save_file(sd, str(snap / 'model.safetensors'))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['mixer_b16', 'resmlp_s12'])
def test_mlp_presets_load_timm_weights_and_give_timms_logits(name, tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    spec = load_spec(name)
    tag = f'{spec.meta["timm_name"]}.{spec.meta["pretrained_tag"]}'
    ref = timm.create_model(spec.meta['timm_name']).eval()  # random weights stand in for the published ones
    with torch.no_grad():  # norms, biases and layer scales off their init values, so each mapping matters
        for p in ref.parameters():
            if p.numel() < 5000:
                p.add_(0.1 * torch.randn_like(p))
    sd = {k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}
    _write_hub_cache(tmp_path, f'timm/{tag}', sd)
    model, info = load_model(spec, 'pretrained', cache_dir=tmp_path)
    assert info.source == 'pretrained' and info.report.ok and info.report.loaded == len(sd)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-4)
    # and as a checkpoint file a user passes with --weights
    path = tmp_path / 'timm_weights.safetensors'
    save_file(sd, str(path))
    again, _ = load_model(spec, path)
    with torch.no_grad():
        torch.testing.assert_close(again(x), ref(x), rtol=1e-4, atol=1e-4)


# ---- preprocessing as the authors published it, where timm does not ship the model ----------------------------
AUTHORS_CROP = {'identityformer': 1.0, 'randformer': 1.0, 'poolformer_hybrid_ppaa': 0.95, 'cyclemlp': 0.9}


@pytest.mark.parametrize('name', [n for n in preset_names() if n.startswith(tuple(AUTHORS_CROP))])
def test_presets_without_timm_weights_preprocess_as_their_authors(name):
    spec = load_spec(name)
    _, info = load_model(spec, 'random')
    cfg = data_config(spec, info)
    crop = next(v for k, v in AUTHORS_CROP.items() if name.startswith(k))
    assert cfg['crop_pct'] == crop and cfg['interpolation'] == 'bicubic'
    assert cfg['mean'] == (0.485, 0.456, 0.406) and cfg['std'] == (0.229, 0.224, 0.225)
