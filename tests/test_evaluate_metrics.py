"""kNN, zero-shot, retrieval, ranks and effective rank against small hand-computed cases."""

import math

import jax
import numpy as np
import pytest

from big_contrast import evaluate, sharding


def test_label_ranks_break_ties_towards_lower_class_index():
  scores = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 3.0, 3.0]])
  np.testing.assert_array_equal(evaluate.label_ranks(scores, np.array([0, 2, 2])), [0, 2, 1])
  metrics = evaluate.accuracy_from_ranks(np.array([0, 2, 1, 0]), np.array([0, 1, 1, 1]), 3)
  assert metrics == {"top1": 0.5, "mean_per_class": pytest.approx((1.0 + 1 / 3) / 2)}


# -- kNN -----------------------------------------------------------------------------------------

KNN_TRAIN_X = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [-1.0, 0.0]])
KNN_TRAIN_Y = np.array([0, 1, 1, 2])


@pytest.mark.parametrize(
  "k, temperature, expected_top1",
  [
    (1, 1.0, 1.0),  # nearest neighbour is the class-0 point itself
    (3, 1.0, 0.0),  # e^1 = 2.72 for class 0 < e^0.8 + e^0 = 3.23 for class 1
    (3, 0.1, 1.0),  # e^10 > e^8 + e^0: a sharper temperature trusts the closest point
  ],
)
def test_knn_weighted_votes_by_hand(k, temperature, expected_top1):
  result = evaluate.knn_accuracy(
    KNN_TRAIN_X,
    KNN_TRAIN_Y,
    np.array([[2.0, 0.0]]),
    np.array([0]),
    k=k,
    temperature=temperature,
    num_classes=3,
  )
  assert result["top1"] == expected_top1 and "top5" not in result


def _knn_reference(train_x, train_y, test_x, k, temperature, num_classes):
  def unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)

  sims = unit(test_x) @ unit(train_x).T
  votes = np.zeros((len(test_x), num_classes))
  for i, row in enumerate(sims):
    for j in np.argsort(-row, kind="stable")[:k]:
      votes[i, train_y[j]] += np.exp(row[j] / temperature)
  return votes


def _clustered(rng, sizes, classes, dim=8):
  """Train and test rows around the same class centres."""
  centers = rng.standard_normal((classes, dim))
  for n in sizes:
    y = rng.integers(0, classes, n)
    yield centers[y] + 0.8 * rng.standard_normal((n, dim)), y


@pytest.mark.parametrize("devices", [1, 8])  # one device; 8, with padded shards
def test_sharded_knn_matches_brute_force_reference(devices):
  rng = np.random.default_rng(0)
  # 61 train rows: padding on every mesh but D = 1.
  (train_x, train_y), (test_x, test_y) = _clustered(rng, (61, 23), 12)
  mesh = sharding.make_mesh({"data": -1}, jax.devices()[:devices])
  for k in (5, 20):
    ranks = evaluate.label_ranks(_knn_reference(train_x, train_y, test_x, k, 0.5, 12), test_y)
    with jax.default_matmul_precision("highest"):
      result = evaluate.knn_accuracy(
        train_x,
        train_y,
        test_x,
        test_y,
        k=k,
        temperature=0.5,
        num_classes=12,
        batch_size=7,
        mesh=mesh,
      )  # 7 does not divide 23
    assert 0.2 < result["top1"] < 1.0  # the clusters make the comparison informative
    assert result["top1"] == pytest.approx(np.mean(ranks < 1))
    assert result["top5"] == pytest.approx(np.mean(ranks < 5))
    assert result["k"] == k


def test_knn_clips_k_to_the_train_points():
  rng = np.random.default_rng(1)
  (train_x, train_y), (test_x, test_y) = _clustered(rng, (6, 10), 3)
  ranks = evaluate.label_ranks(_knn_reference(train_x, train_y, test_x, 6, 0.5, 3), test_y)
  with jax.default_matmul_precision("highest"):
    result = evaluate.knn_accuracy(train_x, train_y, test_x, test_y, k=50, temperature=0.5)
  assert result["k"] == 6 and result["top1"] == pytest.approx(np.mean(ranks < 1))
  with pytest.raises(ValueError, match="k=0"):
    evaluate.knn_accuracy(KNN_TRAIN_X, KNN_TRAIN_Y, KNN_TRAIN_X, KNN_TRAIN_Y, k=0)


# -- zero-shot -----------------------------------------------------------------------------------

TEXT_TABLE = {
  "a photo of a cat.": [1.0, 0.0, 0.0],
  "a drawing of a cat.": [0.0, 2.0, 0.0],  # norm 2: normalised before averaging
  "a photo of a dog.": [0.0, 0.0, 1.0],
  "a drawing of a dog.": [0.0, 0.0, 3.0],
}


def _fake_encode_text(texts):
  return np.array([TEXT_TABLE[t] for t in texts])


def test_zero_shot_classifier_averages_normalised_templates():
  classes = evaluate.zero_shot_classifier(
    _fake_encode_text, ["cat", "dog"], ["a photo of a {}.", "a drawing of a {}."]
  )
  s = 1 / math.sqrt(2)
  np.testing.assert_allclose(classes, [[s, s, 0.0], [0.0, 0.0, 1.0]], atol=1e-6)


def test_zero_shot_classifier_rejects_template_without_slot():
  with pytest.raises(ValueError, match="slot"):
    evaluate.zero_shot_classifier(_fake_encode_text, ["cat"], ["a photo"])


def test_zero_shot_accuracy_by_hand():
  classes = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
  images = np.array([[5.0, 1.0], [1.0, 2.0], [3.0, 1.0], [-1.0, 0.1]])
  labels = np.array([0, 0, 1, 2])  # predictions: 0, 1, 0, 2
  result = evaluate.zero_shot_accuracy(images, labels, classes)
  assert result == {"top1": 0.5, "mean_per_class_recall": pytest.approx((0.5 + 0.0 + 1.0) / 3)}


def test_zero_shot_top5_with_ten_classes():
  classes = np.eye(10)
  images = np.array([[0.0] * 9 + [1.0], np.linspace(1.0, 0.1, 10)])
  result = evaluate.zero_shot_accuracy(images, np.array([9, 4]), classes, batch_size=1)
  assert result["top1"] == 0.5 and result["top5"] == 1.0  # class 4 is 5th most similar


# -- retrieval -----------------------------------------------------------------------------------

IMAGES = np.eye(3)
TEXTS = np.array(
  [
    [1.0, 0.1, 0.0],  # -> image 0, ranked 1st
    [0.2, 1.0, 0.0],  # -> image 0, ranked 2nd (behind image 1)
    [0.0, 1.0, 0.3],  # -> image 1, ranked 1st
    [0.0, 0.3, 1.0],  # -> image 2, ranked 1st
    [0.5, 0.0, 0.4],  # -> image 2, ranked 2nd (behind image 0)
  ]
)
TEXT_TO_IMAGE = np.array([0, 0, 1, 2, 2])
# Image->text, by cosine: image 0 ranks text 0 (0.995) first: hit. Image 1 ranks text 1 (0.981)
# above its only caption, text 2 (0.958): hit at 2. Image 2 ranks text 3 (0.958) first: hit.
EXPECTED = {"i2t_R@1": 2 / 3, "i2t_R@2": 1.0, "t2i_R@1": 3 / 5, "t2i_R@2": 1.0}


def test_retrieval_recall_by_hand():
  result = evaluate.retrieval_recall(IMAGES, TEXTS, text_to_image=TEXT_TO_IMAGE, ks=(1, 2))
  assert result == pytest.approx(EXPECTED)


def test_retrieval_boolean_positives_and_chunks_agree_with_index_form():
  positives = np.zeros((5, 3), bool)
  positives[np.arange(5), TEXT_TO_IMAGE] = True
  result = evaluate.retrieval_recall(
    IMAGES, TEXTS, text_to_image=positives, ks=(1, 2), batch_size=2
  )
  assert result == pytest.approx(EXPECTED)


def test_retrieval_many_to_many_positives_and_query_without_positive():
  images = np.vstack([IMAGES, [[1.0, 1.0, 1.0]]])  # image 3 has no caption: left out of i2t
  positives = np.zeros((5, 4), bool)
  positives[np.arange(5), TEXT_TO_IMAGE] = True
  positives[1, 1] = True  # text 1 also describes image 1: now a hit at 1 both ways
  result = evaluate.retrieval_recall(images, TEXTS, text_to_image=positives, ks=(1, 10))
  # Text 4 ranks image 3 (cos 0.81) above image 2 (0.62) and image 0 (0.78): miss at 1.
  assert result == pytest.approx(
    {"i2t_R@1": 1.0, "i2t_R@10": 1.0, "t2i_R@1": 4 / 5, "t2i_R@10": 1.0}
  )


def test_retrieval_matches_brute_force_on_random_data():
  rng = np.random.default_rng(0)
  images, texts = rng.standard_normal((30, 6)), rng.standard_normal((45, 6))
  positives = rng.random((45, 30)) < 0.05
  result = evaluate.retrieval_recall(
    images, texts, text_to_image=positives, ks=(1, 5), batch_size=8
  )
  sims = texts @ images.T / np.outer(np.linalg.norm(texts, axis=1), np.linalg.norm(images, axis=1))
  for name, s, pos in [("t2i", sims, positives), ("i2t", sims.T, positives.T)]:
    order = np.argsort(-s, axis=1, kind="stable")
    hits = np.take_along_axis(pos, order, axis=1)
    valid = pos.any(1)
    for k in (1, 5):
      assert result[f"{name}_R@{k}"] == pytest.approx(hits[valid, :k].any(1).mean())


def test_retrieval_rejects_out_of_range_image_index():
  with pytest.raises(ValueError, match="text_to_image"):
    evaluate.retrieval_recall(IMAGES, TEXTS, text_to_image=np.array([0, 0, 1, 2, 3]))


# -- effective rank ------------------------------------------------------------------------------


@pytest.mark.parametrize("spectrum", ["covariance", "features"])
def test_effective_rank_isotropic_is_d_and_rank_one_is_one(spectrum):
  d = 6
  isotropic = np.vstack([np.eye(d), -np.eye(d)])  # centred, equal singular values
  assert evaluate.effective_rank(isotropic, spectrum=spectrum) == pytest.approx(d, rel=1e-5)
  rank_one = np.outer(np.arange(20.0), np.ones(d))
  assert evaluate.effective_rank(rank_one, spectrum=spectrum) == pytest.approx(1.0, rel=1e-5)


def test_effective_rank_of_a_known_spectrum():
  x = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # singular values ∝ (3, 1)

  def entropy_rank(p):
    p = np.asarray(p)
    return math.exp(-np.sum(p * np.log(p)))

  by_features = evaluate.effective_rank(x, spectrum="features")
  assert by_features == pytest.approx(entropy_rank([0.75, 0.25]))
  assert evaluate.effective_rank(x) == pytest.approx(entropy_rank([0.9, 0.1]))
