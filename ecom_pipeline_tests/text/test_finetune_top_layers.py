"""Fine-tuning the top layers on cached bottom-layer states (the CPU path of ml/text/finetune.py)."""

import numpy as np
import pytest

from ecom_pipeline.ml.text.finetune import (
    FinetuneSettings,
    _pad,
    _Stack,
    finetune_classifier,
    layers_to_train,
    predict_proba,
    tune_class_bias,
)

FILLER = [
    "the",
    "box",
    "order",
    "seller",
    "item",
    "package",
    "store",
    "week",
    "colour",
    "size",
    "price",
    "day",
]
SIGNAL = {
    0: ["terrible", "broken", "awful"],
    1: ["okay", "average", "mediocre"],
    2: ["excellent", "perfect", "wonderful"],
}


def planted(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts of random filler words with one class word planted at a random position."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    texts = []
    for label in y:
        words = list(rng.choice(FILLER, rng.integers(3, 8)))
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(SIGNAL[int(label)])))
        texts.append(" ".join(words))
    return texts, y


@pytest.fixture(scope="module")
def encoder(shared_models_dir):
    from ecom_pipeline.ml.encoders import load_text_encoder

    return load_text_encoder("all-minilm-l6-v2", models_dir=shared_models_dir, device="cpu", max_length=24)


@pytest.fixture(scope="module")
def trained(encoder):
    texts, y = planted(72, seed=1)
    val_texts, val_y = planted(24, seed=2)
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    res = finetune_classifier(
        encoder,
        texts,
        y,
        3,
        val_texts=val_texts,
        val_y=val_y,
        settings=FinetuneSettings(
            trainable_layers=2, epochs=6, batch_size=16, lr=3e-4, head_lr=3e-3, budget_s=600, patience=3
        ),
    )
    return res, before


def test_cached_top_layers_equal_the_full_forward(encoder):
    """Training runs the top layers on cached bottom states: that must be the same function as the model."""
    import copy

    import torch

    from ecom_pipeline.ml.text.sentiment import FinetunedClassifier

    model = FinetunedClassifier(copy.deepcopy(encoder.model), encoder.dim, 3).eval()
    stack = _Stack(model, 2, "cpu")
    texts = ["terrible box", "an excellent seller, fast and well packed, would buy again", "okay"]
    ids = [encoder.tokenizer(t)["input_ids"] for t in texts]
    batch, mask = _pad(ids, "cpu", encoder.tokenizer.pad_token_id)
    with torch.no_grad():
        cached = stack.logits_from_states(stack.bottom(batch, mask), mask)
        full = model(batch, mask)
    assert torch.allclose(cached, full, atol=1e-5)


def test_finetune_beats_chance_on_a_planted_signal(encoder, trained):
    res, before = trained
    test_texts, test_y = planted(60, seed=3)
    probs = predict_proba(res.model, encoder, test_texts)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    accuracy = (probs.argmax(1) == test_y).mean()
    assert accuracy >= 0.6, f"accuracy {accuracy:.2f} on a planted signal (chance 0.33)"
    assert res.trainable_layers == 2 and res.n_layers == 6 and res.path == "top2_finetune"
    assert 1 <= res.best_epoch <= res.epochs_run and all("val_macro_f1" in h for h in res.history)
    # the caller's encoder is untouched; in the copy only the top 2 layers (and the new head) changed
    assert all((encoder.model.state_dict()[k] == v).all() for k, v in before.items())
    trained_state = res.model.backbone.state_dict()
    changed = {k for k, v in before.items() if not (trained_state[k] == v).all()}
    assert changed and all(k.startswith(("encoder.layer.4.", "encoder.layer.5.")) for k in changed)


def test_cpu_budget_stops_training(encoder):
    """The default budget counts this process's CPU seconds: a tiny one stops training at a batch boundary."""
    texts, y = planted(48, seed=4)
    budget = 6.0
    res = finetune_classifier(
        encoder, texts, y, 3, settings=FinetuneSettings(epochs=10_000, batch_size=8, budget_s=budget)
    )
    assert res.budget_clock == "cpu" and res.stopped == "budget" and res.epochs_run >= 1
    batch_cpu = max(h["cpu_seconds"] / h["batches"] for h in res.history)
    assert (
        res.cpu_seconds <= budget + 2 * batch_cpu + 1.0
    )  # past the budget by at most one batch + validation
    with pytest.raises(TimeoutError, match="caching"):
        finetune_classifier(encoder, texts, y, 3, settings=FinetuneSettings(budget_s=0.0))


def test_wall_budget_is_respected(encoder):
    texts, y = planted(48, seed=4)
    budget = 6.0
    settings = FinetuneSettings(epochs=10_000, batch_size=8, budget_s=budget, budget_clock="wall")
    res = finetune_classifier(encoder, texts, y, 3, settings=settings)
    assert res.budget_clock == "wall" and res.stopped == "budget" and res.epochs_run >= 1
    batch_seconds = max(h["seconds"] / h["batches"] for h in res.history)
    assert res.seconds <= budget + 2 * batch_seconds + 1.0
    with pytest.raises(ValueError, match="budget_clock"):
        finetune_classifier(encoder, texts, y, 3, settings=FinetuneSettings(budget_clock="gpu"))


def test_cpu_clock_ignores_time_the_process_does_not_run():
    """What a busy machine withholds (here: a sleep) is not spent from a CPU budget, only from a wall one."""
    import time

    from ecom_pipeline.ml.text.finetune import BudgetClock

    cpu, wall = BudgetClock("cpu", 0.2), BudgetClock("wall", 0.2)
    time.sleep(0.3)
    assert wall.over() and wall.spent() >= 0.3
    assert not cpu.over() and cpu.spent() < 0.1
    busy_until = time.process_time() + 0.3
    while time.process_time() < busy_until:  # CPU work is what a CPU budget counts
        pass
    assert cpu.over()


def test_safe_format_round_trip(encoder, trained, tmp_path):
    from ecom_pipeline.ml.safe_artifacts import WEIGHTS_FILE, load_model_dir, save_model

    res, _ = trained
    texts, _ = planted(10, seed=5)
    spec = save_model(res.model, "pytorch", tmp_path / "model")
    assert spec["format"] == "torch_state_dict" and (tmp_path / "model" / WEIGHTS_FILE).exists()
    back = load_model_dir(tmp_path / "model")
    assert np.allclose(
        predict_proba(back, encoder, texts), predict_proba(res.model, encoder, texts), atol=1e-5
    )


def test_class_bias_is_tuned_for_macro_f1():
    # the model under-calls class 1: an offset on its log-probability recovers it
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    log_probs = np.log(np.full((30, 3), 0.1))
    log_probs[:10, 0] = log_probs[20:, 2] = np.log(0.8)
    log_probs[10:20, 0] = np.log(0.5)
    log_probs[10:20, 1] = np.log(0.4)
    bias = tune_class_bias(log_probs, y)
    assert bias[0] == 0 and ((log_probs + bias).argmax(1) == y).all()


def test_bad_input_is_refused(encoder):
    with pytest.raises(ValueError, match="labels"):
        finetune_classifier(encoder, ["a", "b"], [0], 3)
    with pytest.raises(ValueError, match="single class"):
        finetune_classifier(encoder, ["a", "b"], [1, 1], 3)
    with pytest.raises(ValueError, match="integers in"):
        finetune_classifier(encoder, ["a", "b"], [0, 3], 3)


def test_depth_follows_the_device():
    assert layers_to_train("cuda", 2) == 0  # all layers: the full fine-tune
    assert layers_to_train("cuda:1", 2) == 0
    assert layers_to_train("cpu", 2) == 2 and layers_to_train("cpu", 0) == 1


def _full_finetune(device: str, shared_models_dir):
    from ecom_pipeline.ml.encoders import load_text_encoder

    enc = load_text_encoder("all-minilm-l6-v2", models_dir=shared_models_dir, device=device, max_length=24)
    texts, y = planted(96, seed=6)
    res = finetune_classifier(
        enc,
        texts,
        y,
        3,
        settings=FinetuneSettings(trainable_layers=0, epochs=5, batch_size=16, lr=2e-4, budget_s=600),
    )
    assert res.path == "full_finetune" and res.trainable_layers == res.n_layers and res.cache_seconds < 1
    before, after = enc.model.state_dict(), res.model.backbone.state_dict()
    # every layer trained, the embeddings too (nothing cached)
    assert not (
        after["embeddings.word_embeddings.weight"] == before["embeddings.word_embeddings.weight"].cpu()
    ).all()
    assert not (
        after["encoder.layer.0.attention.self.query.weight"]
        == before["encoder.layer.0.attention.self.query.weight"].cpu()
    ).all()
    test_texts, test_y = planted(45, seed=7)
    accuracy = (predict_proba(res.model, enc, test_texts).argmax(1) == test_y).mean()
    assert accuracy >= 0.6, f"accuracy {accuracy:.2f} on a planted signal (chance 0.33); {res.history}"


def test_full_finetune_path_on_cpu(shared_models_dir):
    """The CUDA path (every layer trains) is the same code: exercised here on CPU with a small model."""
    _full_finetune("cpu", shared_models_dir)


@pytest.mark.gpu
def test_full_finetune_on_cuda(shared_models_dir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _full_finetune("cuda", shared_models_dir)


def test_budget_schedule_weight_averaging_and_a_reused_cache(encoder, monkeypatch):
    texts, y = planted(48, seed=8)
    val_texts, val_y = planted(24, seed=9)
    cache: dict = {}
    settings = FinetuneSettings(
        trainable_layers=2,
        epochs=4,
        batch_size=16,
        lr=3e-4,
        head_lr=3e-3,
        budget_s=600,
        patience=4,
        lr_schedule="budget",
        average_best=2,
        prefix="query",
    )
    first = finetune_classifier(
        encoder, texts, y, 3, val_texts=val_texts, val_y=val_y, settings=settings, state_cache=cache
    )

    def no_bottom_pass(*_args):
        raise AssertionError("the frozen layers ran again: the cache was not reused")

    with monkeypatch.context() as m:
        m.setattr(_Stack, "bottom", no_bottom_pass)
        again = finetune_classifier(
            encoder, texts, y, 3, val_texts=val_texts, val_y=val_y, settings=settings, state_cache=cache
        )
    assert len(cache) == 1
    assert [h["val_macro_f1"] for h in again.history] == [h["val_macro_f1"] for h in first.history]
    # averaging is kept only where it is no worse on validation than the best single epoch
    best_single = max(h["val_macro_f1"] for h in first.history)
    assert first.averaged_epochs in ([], sorted(first.averaged_epochs)) and len(first.averaged_epochs) in (
        0,
        2,
    )
    assert first.val_macro_f1 >= best_single - 1e-9
    assert first.val_log_probs.shape == (24, 3) and np.allclose(
        np.exp(first.val_log_probs).sum(1), 1, atol=1e-5
    )
    assert first.model.prefix == "query"  # predicted with the prefix it was trained with
    probs = predict_proba(first.model, encoder, val_texts)
    assert np.allclose(np.log(probs), first.val_log_probs, atol=1e-4)
    with pytest.raises(ValueError, match="lr_schedule"):
        finetune_classifier(encoder, texts, y, 3, settings=FinetuneSettings(lr_schedule="cosine"))


def test_tfidf_weight_is_chosen_on_validation():
    from ecom_pipeline.ml.text.finetune import blend_log_probs, choose_tfidf_weight

    y = np.array([0, 1, 2] * 10)
    uninformative = np.log(np.full((30, 3), 1 / 3))
    informative = np.log(np.where(np.eye(3)[y] == 1, 0.8, 0.1))
    choice = choose_tfidf_weight(uninformative, informative, y)
    assert choice["weight"] > 0 and choice["val_macro_f1"] == 1.0
    assert (blend_log_probs(np.exp(uninformative), np.exp(informative), choice).argmax(1) == y).all()
    assert choose_tfidf_weight(informative, uninformative, y)["weight"] == 0.0  # ties: the smaller weight


@pytest.mark.slow
def test_lora_adapters_with_rdrop_train_and_merge_into_a_plain_encoder(encoder):
    """LoRA (peft) on the top 2 layers, R-Drop on: the adapters train, are merged into the weights, and the
    result is a plain encoder + head (no peft module left) that changed only in the adapted layers."""
    from peft.tuners.lora import LoraLayer

    texts, y = planted(72, seed=1)
    val_texts, val_y = planted(24, seed=2)
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    settings = FinetuneSettings(
        trainable_layers=2, lora_rank=8, rdrop_alpha=1.0, epochs=6, batch_size=16, lr=2e-3, head_lr=3e-3,
        budget_s=300, patience=3,
    )  # fmt: skip
    res = finetune_classifier(encoder, texts, y, 3, val_texts=val_texts, val_y=val_y, settings=settings)
    assert not any(isinstance(m, LoraLayer) for m in res.model.modules())
    after = res.model.backbone.state_dict()
    assert set(after) == set(before)  # the same architecture as the encoder: saved and served like any
    changed = {k for k, v in before.items() if not (after[k] == v).all()}
    assert changed and all(k.startswith(("encoder.layer.4.", "encoder.layer.5.")) for k in changed)
    test_texts, test_y = planted(60, seed=3)
    accuracy = (predict_proba(res.model, encoder, test_texts).argmax(1) == test_y).mean()
    assert accuracy >= 0.6, f"accuracy {accuracy:.2f} on a planted signal (chance 0.33); {res.history}"


def test_layer_lr_decay_gives_lower_layers_smaller_steps(encoder):
    import copy

    from ecom_pipeline.ml.text.finetune import _param_groups
    from ecom_pipeline.ml.text.sentiment import FinetunedClassifier

    model = FinetunedClassifier(copy.deepcopy(encoder.model), encoder.dim, 3)
    layers = list(model.backbone.encoder.layer[-3:])
    settings = FinetuneSettings(lr=1e-4, head_lr=1e-3, layer_lr_decay=0.5)
    groups = _param_groups(model.backbone.encoder.layer[-3:], layers, model.head, settings)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 5e-5, 2.5e-5, 1e-3])  # top, ..., head
    assert groups[0]["params"][0] is next(layers[-1].parameters())
