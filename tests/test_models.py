"""Model zoo: published parameter counts (abstractly), tower options, BatchNorm under sharding."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from big_contrast import models
from big_contrast.models import heads, resnet, text, vit

# Published totals *with* the 1000-class classifier, CLS token and its position
# embedding: torchvision's model docs (ViT-B/16 86,567,656 …; ResNet-50 25,557,032)
# and DeiT (Touvron et al., 2021) for Ti and S. Our towers have no classifier and
# no position embedding for the CLS token, so those are added back analytically.
PUBLISHED_VIT = {
  "Ti/16": 5_717_416,
  "S/16": 22_050_664,
  "B/16": 86_567_656,
  "B/32": 88_224_232,
  "L/16": 304_326_632,
  "L/32": 306_535_400,
  "H/14": 632_045_800,
}
PUBLISHED_RESNET = {18: 11_689_512, 50: 25_557_032}
# SoViT-400m/14 (Alabdulmohsin et al., 2023), SigLIP's So400m image tower with its
# MAP head and no classifier: "428M".
PUBLISHED_SO400M = 428e6


def _abstract(ctor):
  return nnx.eval_shape(ctor)


def _run(module, *args, method="__call__", **kwargs):
  """`module.method(*args)` compiled: eager NNX runs op by op, far slower on CPU."""
  graphdef, state = nnx.split(module)

  @jax.jit
  def fn(state, *args):
    return getattr(nnx.merge(graphdef, state), method)(*args, **kwargs)

  return fn(state, *args)


@pytest.mark.parametrize("variant", sorted(PUBLISHED_VIT))
def test_vit_param_count_matches_published(variant):
  m = _abstract(lambda: vit.ViT(variant=variant, image_size=224, pool="cls", rngs=nnx.Rngs(0)))
  classifier, cls_posemb = m.width * 1000 + 1000, m.width
  ours = models.count_params(m) + classifier + cls_posemb
  assert abs(ours - PUBLISHED_VIT[variant]) / PUBLISHED_VIT[variant] < 0.005
  assert ours == PUBLISHED_VIT[variant]  # in fact exact


@pytest.mark.parametrize("depth", sorted(PUBLISHED_RESNET))
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_resnet_param_count_matches_published(depth, norm):
  m = _abstract(lambda: resnet.ResNet(depth=depth, norm=norm, rngs=nnx.Rngs(0)))
  ours = models.count_params(m) + m.width * 1000 + 1000
  assert ours == PUBLISHED_RESNET[depth]
  stats = jax.tree.leaves(nnx.state(m, nnx.BatchStat))
  assert (len(stats) > 0) == (norm == "batch")  # running averages are not parameters


def test_so400m_with_map_head_matches_published():
  m = _abstract(lambda: vit.ViT(variant="So400m/14", image_size=224, pool="map", rngs=nnx.Rngs(0)))
  assert abs(models.count_params(m) - PUBLISHED_SO400M) / PUBLISHED_SO400M < 0.005


@pytest.mark.parametrize("pool", ["cls", "gap", "map"])
@pytest.mark.parametrize("posemb", ["learn", "sincos2d"])
def test_vit_pool_and_posemb_options(pool, posemb):
  kw = dict(image_size=16, patch=4, width=32, depth=1, heads=2, mlp_dim=64, rngs=nnx.Rngs(0))
  m = vit.ViT(pool=pool, posemb=posemb, **kw)
  out = _run(m, jnp.ones((2, 16, 16, 3)))
  assert out.shape == (2, 32) and bool(jnp.all(jnp.isfinite(out)))
  base = models.count_params(vit.ViT(pool="gap", posemb="learn", **kw))
  extra = {"cls": 32, "gap": 0, "map": None}[pool]
  pos = 16 * 32 if posemb == "learn" else 0  # a fixed sincos table is no parameter
  if extra is not None:
    assert models.count_params(m) == base - 16 * 32 + pos + extra
  else:
    assert models.count_params(m) > base - 16 * 32 + pos


@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_vit_block_features_end_with_the_pooled_output(pool):
  kw = dict(image_size=16, patch=4, width=32, depth=3, heads=2, mlp_dim=64, rngs=nnx.Rngs(0))
  m = vit.ViT(pool=pool, **kw)
  images = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  out = _run(m, images)
  blocks = _run(m, images, method="block_features", last_blocks=3)
  assert blocks.shape == (2, 3, 32)
  np.testing.assert_allclose(blocks[:, -1], out, rtol=1e-5, atol=1e-5)
  # The earlier blocks are other features, each through the final LayerNorm (unit variance).
  assert not np.allclose(blocks[:, 0], blocks[:, -1], atol=1e-2)
  np.testing.assert_allclose(
    _run(m, images, method="block_features", last_blocks=2), blocks[:, 1:], rtol=1e-5, atol=1e-5
  )
  with pytest.raises(ValueError, match=r"n=4 must be in \[1, 3\]"):
    _run(m, images, method="block_features", last_blocks=4)


def test_map_pool_and_resnet_offer_only_the_last_block():
  kw = dict(image_size=16, patch=4, width=32, depth=2, heads=2, mlp_dim=64, rngs=nnx.Rngs(0))
  images = jnp.ones((2, 16, 16, 3))
  with pytest.raises(ValueError, match="probe_last_blocks must be"):
    _run(vit.ViT(pool="map", **kw), images, method="block_features", last_blocks=2)
  net = resnet.ResNet(depth=18, base_width=8, stem="cifar", rngs=nnx.Rngs(0))
  one = _run(net, images, method="block_features", last_blocks=1)
  assert one.shape == (2, 1, net.width)
  with pytest.raises(ValueError, match="probe_last_blocks must be"):
    _run(net, images, method="block_features", last_blocks=2)


@pytest.mark.parametrize("causal", [True, False])
def test_text_causal_mask_hides_the_future(causal):
  m = text.TextTransformer(
    vocab_size=50,
    max_len=8,
    width=32,
    depth=2,
    heads=2,
    causal=causal,
    pool="eos",
    rngs=nnx.Rngs(0),
  )
  full = jnp.array([[5, 6, 7, 8, 0, 0]])
  changed_tail = jnp.array([[5, 6, 9, 3, 0, 0]])
  tokens = _run(m, jnp.concatenate([full, changed_tail]), method="token_features")
  assert np.allclose(tokens[0, :2], tokens[1, :2], atol=1e-5) == causal
  # EOS pooling reads the last non-pad token; extra padding changes nothing.
  np.testing.assert_allclose(_run(m, full)[0], tokens[0, 3], atol=1e-5)
  np.testing.assert_allclose(
    _run(m, full), _run(m, jnp.array([[5, 6, 7, 8, 0, 0, 0, 0]])), atol=1e-5
  )


def test_text_mean_pooling_averages_the_valid_tokens():
  m = text.TextTransformer(
    vocab_size=50,
    max_len=8,
    width=32,
    depth=1,
    heads=2,
    causal=False,
    pool="mean",
    rngs=nnx.Rngs(0),
  )
  tokens = jnp.array([[5, 6, 7, 0]])
  pooled = _run(m, tokens)
  np.testing.assert_allclose(
    pooled, _run(m, tokens, method="token_features")[:, :3].mean(1), atol=1e-5
  )
  np.testing.assert_allclose(pooled, _run(m, jnp.array([[5, 6, 7, 0, 0, 0]])), atol=1e-5)
  with pytest.raises(ValueError, match="pool='max'"):
    text.TextTransformer(
      vocab_size=50, max_len=8, width=32, depth=1, heads=2, pool="max", rngs=nnx.Rngs(0)
    )


@pytest.mark.parametrize("layers,batch_norm", [(1, False), (2, False), (3, True)])
def test_projection_head_layers_and_batch_norm(layers, batch_norm):
  head = heads.ProjectionMLP(16, 32, 8, layers=layers, batch_norm=batch_norm, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (6, 16))
  assert _run(head, x, train=True).shape == (6, 8)
  assert len(jax.tree.leaves(nnx.state(head, nnx.BatchStat))) == (
    2 * (layers - 1) if batch_norm else 0
  )
  # With BN, hidden Linears carry no bias (BN's offset replaces it).
  biases = [lin.bias is not None for lin in head.linears]
  assert biases == [not batch_norm] * (layers - 1) + [False]


def _tiny_resnet(norm="batch"):
  return resnet.ResNet(depth=18, base_width=4, norm=norm, stem="cifar", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_resnet_forward_train_and_eval(norm):
  m = _tiny_resnet(norm)
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  assert _run(m, x, train=True).shape == (4, 32) and _run(m, x).shape == (4, 32)
  imagenet = resnet.ResNet(depth=50, base_width=2, stem="imagenet", rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(imagenet)
  out = jax.eval_shape(
    lambda s, x: nnx.merge(graphdef, s)(x, train=True),
    state,
    jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32),
  )
  assert out.shape == (2, 2 * 8 * 4)


def test_batchnorm_statistics_are_global_over_a_sharded_batch():
  """Under jit, BN over a batch split across 8 devices equals BN over the whole batch."""
  graphdef, params, rest = nnx.split(_tiny_resnet(), nnx.Param, ...)
  params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
  x = jax.random.normal(jax.random.key(2), (16, 8, 8, 3)) * 3 + 1
  fn = jax.jit(lambda p, r, x: models.apply_and_update(graphdef, p, r, x, train=True))
  mesh = jax.make_mesh((8,), ("data",))
  with jax.default_matmul_precision("highest"):
    one_out, one_rest = fn(params, rest, x)
    sharded_x = jax.device_put(x, NamedSharding(mesh, P("data")))
    out, new_rest = fn(params, rest, sharded_x)
    per_shard_out, _ = fn(params, rest, x[:2])  # statistics of one device's rows only
  np.testing.assert_allclose(out, one_out, rtol=1e-4, atol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), new_rest, one_rest
  )
  assert not np.allclose(per_shard_out, one_out[:2], atol=1e-3)


def test_apply_and_update_returns_new_running_stats_through_a_gradient():
  graphdef, params, rest = nnx.split(_tiny_resnet(), nnx.Param, ...)
  params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
  x = jax.random.normal(jax.random.key(3), (8, 8, 8, 3)) + 2.0

  def loss(p):
    out, new_rest = models.apply_and_update(graphdef, p, rest, x, train=True)
    return jnp.mean(out**2), new_rest

  (_, new_rest), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  old, new = rest["stem_norm"]["norm"]["mean"], new_rest["stem_norm"]["norm"]["mean"]
  assert not np.allclose(old, new)  # running mean moved towards the batch's
  # Evaluation (train=False) reads the running averages it is given.
  evaluate = jax.jit(lambda r: nnx.merge(graphdef, params, r)(x[:2]))
  assert not np.allclose(evaluate(new_rest), evaluate(rest))


def test_build_model_picks_resnet_and_bn_head_for_multiview():
  cfg = ml_collections.ConfigDict(
    dict(
      embed_dim=8,
      head_hidden=16,
      head_layers=3,
      head_batch_norm=True,
      image=dict(name="resnet", depth=18, base_width=4, stem="cifar", norm="batch"),
    )
  )
  m = models.multi_view(cfg, rngs=nnx.Rngs(0))
  views = jax.random.normal(jax.random.key(4), (2, 3, 8, 8, 3))
  out = _run(m, views)
  assert out["z"].shape == (2, 3, 8)
  np.testing.assert_allclose(jnp.linalg.norm(out["z"], axis=-1), 1.0, rtol=1e-5)
  assert _run(m, views[:, 0], method="image_features").shape == (2, 32)
  cfg.image.name = "convnext"
  with pytest.raises(ValueError, match="config.model.image.name='convnext'"):
    models.multi_view(cfg, rngs=nnx.Rngs(0))
