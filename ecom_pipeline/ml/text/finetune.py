"""Fine-tuning the review encoder under a time budget (CPU seconds on CPU, wall clock on CUDA): the top
transformer layers + a linear head on CPU, every layer on CUDA (the same code; the caller picks the depth
from the compute device).

CPU design: frozen bottom layers give the same output for a text in every epoch, so they run ONCE over every
text and their hidden states are cached; then only the top ``trainable_layers`` and the head train for several
epochs on the cache (an epoch costs about trainable/total of a full forward + backward).  With every layer
trainable there is nothing to cache and each batch runs the whole encoder (the full fine-tune).

Class weights are balanced (the neutral class is about 8 % of Olist reviews).  Epochs are chosen on a
validation window the caller carves from training time, and optionally one additive logit bias per class is
tuned there too (folded into the head, so the saved model carries it).  The result is a
:class:`~ecom_pipeline.ml.text.sentiment.FinetunedClassifier` (the whole encoder + head): it is saved in the
safe format and predicted with one full forward, exactly like the CUDA path.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FinetuneSettings:
    trainable_layers: int = (
        2  # top transformer layers trained; 0 or >= the encoder's depth: all (full fine-tune)
    )
    epochs: int = 8
    lr: float = 1e-4  # the trained transformer layers
    head_lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.01
    # budget for tokenising, caching and training (prediction not included), in seconds of ``budget_clock``
    budget_s: float = 900.0
    # "cpu": this process's CPU time (every thread, torch's included), so the same budget buys the same
    # training on a busy or a quiet machine (a wall-clock budget bought 264 s or 411 s of CPU depending on the
    # load); "wall": the wall clock (CUDA, where the GPU's time is what is spent); "none": no time budget,
    # ``epochs`` (and ``patience``) alone end the run: the same training whatever the machine's load
    budget_clock: str = "cpu"
    patience: int = 2  # epochs without a better validation macro-F1 before stopping
    tune_class_bias: bool = True  # per-class logit offsets chosen on the validation window
    # windows the offsets are fitted on (``compare_with_baselines``): 1 = the one validation window; n > 1 =
    # the pooled out-of-fold predictions of n rolling windows at the end of training time (n - 1 more
    # fine-tunes; the last window's model is the one kept, as with 1)
    offset_folds: int = 1
    seed: int = 0
    # e5 input prefix, "query" (e5's advice for classification; chosen on validation:
    # 0.710 vs 0.688 "passage")
    prefix: str = "query"
    label_smoothing: float = 0.0
    # "linear": one warm-up epoch, then decay to 0 over the planned epochs; "budget": a short warm-up, then
    # decay to 0 at the end of the budget
    lr_schedule: str = "constant"
    # average the trained weights of the k best epochs (by validation macro-F1); kept only where the average
    # scores at least as well as the best single epoch on the validation window
    average_best: int = 1
    # layer-wise lr decay: the top trained layer gets ``lr``, each layer below it ``layer_lr_decay`` times the
    # one above (1.0: every trained layer the same lr)
    layer_lr_decay: float = 1.0
    # LoRA (peft): > 0 trains rank-``lora_rank`` adapters on every linear map of the trained layers (all
    # layers with trainable_layers=0) instead of their weights; merged into the weights after training, so
    # the saved model is a plain encoder + head
    lora_rank: int = 0
    lora_alpha: float = 16.0
    # R-Drop: two forward passes with different dropout per batch, + alpha x their symmetric KL (0: off)
    rdrop_alpha: float = 0.0


@dataclass
class FinetuneResult:
    model: object  # FinetunedClassifier, on CPU, eval mode
    trainable_layers: int
    n_layers: int
    device: str
    epochs_run: int
    best_epoch: int  # 1-based; chosen on the validation window (the last epoch without one)
    stopped: str  # "epochs" | "patience" | "budget"
    cache_seconds: float
    seconds: float  # everything inside the budget (wall clock)
    cpu_seconds: float  # this process's CPU time over the same span (on a shared machine: what it really got)
    budget_s: float
    budget_clock: str  # "cpu" | "wall": what budget_s counts
    class_weights: list[float]
    class_bias: list[float]  # added to the head's bias after training (zeros when not tuned)
    history: list[dict] = field(default_factory=list)  # per epoch: train loss, validation macro-F1, seconds
    averaged_epochs: list[int] = field(default_factory=list)  # epochs whose weights were averaged (else [])
    val_macro_f1: float | None = None  # of the returned weights, before the class offsets
    val_log_probs: np.ndarray | None = (
        None  # of the returned model (offsets included) on the validation window
    )

    @property
    def path(self) -> str:
        return (
            "full_finetune"
            if self.trainable_layers == self.n_layers
            else f"top{self.trainable_layers}_finetune"
        )


def layers_to_train(device: str, cpu_layers: int) -> int:
    """How many top layers to train: every layer on CUDA (0 = all), ``cpu_layers`` on CPU."""
    return 0 if str(device).startswith("cuda") else max(1, int(cpu_layers))


BUDGET_CLOCKS = ("cpu", "wall", "none")


class BudgetClock:
    """Seconds spent since creation on ``kind``'s clock: "cpu" = ``time.process_time()`` (the CPU time of
    every thread of this process, torch's intra-op threads included; the time a busy machine withholds does
    not count), "wall" = ``time.monotonic()``, "none" = no budget (counts CPU time, never runs out: the
    epoch count ends the run)."""

    def __init__(self, kind: str, budget_s: float):
        if kind not in BUDGET_CLOCKS:
            raise ValueError(f"budget_clock must be one of {BUDGET_CLOCKS}, got {kind!r}")
        self.kind, self.budget_s = kind, float("inf") if kind == "none" else float(budget_s)
        self._now = time.monotonic if kind == "wall" else time.process_time
        self._start = self._now()

    def spent(self) -> float:
        return self._now() - self._start

    def over(self) -> bool:
        return self.spent() > self.budget_s

    def left_fraction(self, since: float) -> float:
        """Share of the budget left after ``since`` seconds spent (1 at ``since``, 0 at the end)."""
        return max(0.0, (self.budget_s - self.spent()) / max(1e-9, self.budget_s - since))

    def describe(self) -> str:
        if self.kind == "none":
            return "no time budget (fixed epochs)"
        return f"{self.budget_s:.0f} s of {'CPU time' if self.kind == 'cpu' else 'wall clock'}"


def _macro_f1(y, pred, n_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


BIAS_GRID = tuple(np.arange(-2.0, 2.01, 0.25))


def tune_class_bias(log_probs: np.ndarray, y: np.ndarray, *, grid=BIAS_GRID, rounds: int = 2) -> np.ndarray:
    """Additive per-class offsets on ``log_probs`` that maximise macro-F1 on these (validation) rows, by
    coordinate ascent over ``grid``; class 0 stays 0 (only differences between classes matter)."""
    k = log_probs.shape[1]
    bias = np.zeros(k)
    best = _macro_f1(y, log_probs.argmax(1), k)
    for _ in range(rounds):
        for c in range(1, k):
            for v in grid:
                trial = bias.copy()
                trial[c] = v
                score = _macro_f1(y, (log_probs + trial).argmax(1), k)
                if score > best + 1e-9:
                    best, bias = score, trial
    return bias


TFIDF_WEIGHTS = tuple(np.round(np.arange(0.0, 0.71, 0.1), 2))


def choose_tfidf_weight(ft_log_probs: np.ndarray, tfidf_log_probs: np.ndarray, y: np.ndarray) -> dict:
    """A validation-chosen average of the fine-tune with TF-IDF: per weight w, macro-F1 of
    (1-w)·log p_finetune + w·log p_tfidf with per-class offsets tuned on the same rows; the best w (ties: the
    smaller) with its offsets."""
    k = ft_log_probs.shape[1]
    by_weight, offsets = {}, {}
    for w in TFIDF_WEIGHTS:
        mix = (1 - w) * ft_log_probs + w * tfidf_log_probs
        offsets[float(w)] = tune_class_bias(mix, y)
        by_weight[float(w)] = _macro_f1(y, (mix + offsets[float(w)]).argmax(1), k)
    best = max(by_weight, key=lambda w: (by_weight[w], -w))
    return {
        "weight": best,
        "offsets": [float(b) for b in offsets[best]],
        "val_macro_f1": by_weight[best],
        "val_macro_f1_by_weight": by_weight,
    }


def blend_log_probs(ft_probs: np.ndarray, tfidf_probs: np.ndarray, choice: dict) -> np.ndarray:
    """The averaged scores of :func:`choose_tfidf_weight`'s choice (argmax = the blended call)."""
    w = choice["weight"]
    return (
        (1 - w) * np.log(np.clip(ft_probs, 1e-9, 1))
        + w * np.log(np.clip(tfidf_probs, 1e-9, 1))
        + np.asarray(choice["offsets"])
    )


def _param_groups(body, trained_layers: list, head, settings: FinetuneSettings) -> list[dict]:
    """AdamW groups: each trained layer at ``lr`` x ``layer_lr_decay`` ** (its distance from the top), the
    rest of the body (embeddings in the full fine-tune) at the lowest layer's lr, the head at ``head_lr``;
    frozen parameters (LoRA's base weights) left out."""
    groups, seen = [], set()
    for depth, layer in enumerate(reversed(trained_layers)):
        params = [p for p in layer.parameters() if p.requires_grad]
        seen.update(id(p) for p in layer.parameters())
        groups.append({"params": params, "lr": settings.lr * settings.layer_lr_decay**depth})
    rest = [p for p in body.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups.append({"params": rest, "lr": settings.lr * settings.layer_lr_decay ** len(trained_layers)})
    groups.append({"params": list(head.parameters()), "lr": settings.head_lr})
    return [g for g in groups if g["params"]]


LORA_TARGETS = ("query", "key", "value", "dense")  # every linear map of a BERT / XLM-R layer


def _add_lora(layers: list, rank: int, alpha: float) -> None:
    """Rank-``rank`` LoRA adapters (peft) on every linear map of ``layers``, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.1, target_modules=list(LORA_TARGETS))
    for layer in layers:
        inject_adapter_in_model(config, layer)


def _merge_lora(root) -> None:
    """Fold every LoRA adapter under ``root`` into its base linear map and put the plain map back."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(root.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(root.get_submodule(parent_name) if parent_name else root, child, module.get_base_layer())


def _symmetric_kl(a, b):
    import torch.nn.functional as F

    la, lb = F.log_softmax(a.float(), -1), F.log_softmax(b.float(), -1)
    return (
        F.kl_div(la, lb, log_target=True, reduction="batchmean")
        + F.kl_div(lb, la, log_target=True, reduction="batchmean")
    ) / 2


def _check_inputs(texts: Sequence[str], y, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if len(texts) != len(y):
        raise ValueError(f"fine-tune: {len(texts)} texts but {len(y)} labels")
    if len(y) < 2:
        raise ValueError(f"fine-tune: need at least 2 labelled texts, got {len(y)}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"fine-tune: labels must be integers in [0, {n_classes}), got {np.unique(y)[:10]}")
    if len(np.unique(y)) < 2:
        raise ValueError("fine-tune: the training labels hold a single class")
    return y.astype(np.int64)


def _length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of texts of similar length (little padding): sort within random chunks of 20
    batches."""
    perm = rng.permutation(len(lengths))
    chunk = batch_size * 20
    batches = []
    for s in range(0, len(perm), chunk):
        part = perm[s : s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class _Stack:
    """The encoder as bottom (frozen, run once) + top (trained) layers over padded token / state batches."""

    def __init__(self, model, n_top: int, device: str):
        self.model, self.device = model, device
        self.layers = model.backbone.encoder.layer
        self.n_bottom = len(self.layers) - n_top

    def _mask(self, hidden, attention_mask):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.model.backbone.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def run(self, hidden, attention_mask, layers):
        mask = self._mask(hidden, attention_mask)
        for layer in layers:
            hidden = layer(hidden, mask)
        return hidden

    def bottom(self, ids, attention_mask):
        hidden = self.model.backbone.embeddings(input_ids=ids)
        return self.run(hidden, attention_mask, self.layers[: self.n_bottom])

    def logits_from_states(self, hidden, attention_mask):
        from ecom_pipeline.ml.encoders.pooling import mean_pool

        top = self.run(hidden, attention_mask, self.layers[self.n_bottom :])
        return self.model.head(mean_pool(top, attention_mask))


def _pad(seqs: list, device: str, pad_value: int = 0):
    """Right-pad 1-d id lists / 2-d state tensors to the longest; returns (batch, attention mask)."""
    import torch

    longest = max(len(s) for s in seqs)
    mask = torch.zeros(len(seqs), longest, dtype=torch.long)
    if isinstance(seqs[0], torch.Tensor):
        out = seqs[0].new_zeros((len(seqs), longest, seqs[0].shape[-1]))
        for i, s in enumerate(seqs):
            out[i, : len(s)] = s
            mask[i, : len(s)] = 1
    else:
        out = torch.full((len(seqs), longest), pad_value, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
    return out.to(device), mask.to(device)


def finetune_classifier(
    encoder,
    texts: Sequence[str],
    y,
    n_classes: int,
    *,
    val_texts: Sequence[str] = (),
    val_y=None,
    settings: FinetuneSettings = FinetuneSettings(),
    progress: Callable[[str], None] | None = None,
    state_cache: dict | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``encoder`` (a torch :class:`~ecom_pipeline.ml.encoders.text.TextEncoder`) + a
    linear head on mean-pooled states, class-weighted cross-entropy, AdamW, within ``settings.budget_s``
    seconds of ``settings.budget_clock`` (:class:`BudgetClock`; CPU time by default).

    The budget covers tokenising, caching the frozen layers' states and training; the run stops at the first
    batch boundary past it (then one validation pass), so it overruns by at most one batch and that pass.
    A budget that runs out before the cache is complete raises ``TimeoutError`` (nothing was trained).
    ``state_cache`` (a dict the caller keeps, for one encoder) holds the frozen layers' states per prefixed
    text and depth, so repeated runs on overlapping texts (validation windows, a configuration search) only
    compute the texts they add; the time the reused states took counts in no later run's ``seconds``.
    """
    import torch

    from ecom_pipeline.ml.text.sentiment import FinetunedClassifier

    t0, cpu0 = time.monotonic(), time.process_time()
    clock = BudgetClock(settings.budget_clock, settings.budget_s)
    say = progress or (lambda _msg: None)
    y = _check_inputs(texts, y, n_classes)
    has_val = len(val_texts) > 0
    vy = _check_inputs(val_texts, val_y, n_classes) if has_val and len(val_texts) >= 2 else None
    has_val = vy is not None
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    device = encoder.device

    model = FinetunedClassifier(
        copy.deepcopy(encoder.model), encoder.dim, n_classes, prefix=settings.prefix
    ).to(device)
    n_layers = len(model.backbone.encoder.layer)
    n_top = n_layers if settings.trainable_layers <= 0 else min(settings.trainable_layers, n_layers)
    full = n_top == n_layers
    stack = _Stack(model, n_top, device)
    for p in model.parameters():
        p.requires_grad_(False)
    body = model.backbone if full else stack.layers[stack.n_bottom :]
    trained_layers = list(stack.layers[stack.n_bottom :])
    if settings.lora_rank > 0:
        _add_lora(trained_layers, settings.lora_rank, settings.lora_alpha)
        for name, p in body.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        for p in body.parameters():
            p.requires_grad_(True)
    for p in model.head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        _param_groups(body, trained_layers, model.head, settings), weight_decay=settings.weight_decay
    )
    counts = np.bincount(y, minlength=n_classes).astype(float)
    weights = counts.sum() / np.maximum(counts, 1) / n_classes  # balanced: rare classes (neutral) weigh more
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights, dtype=torch.float32, device=device),
        label_smoothing=settings.label_smoothing,
    )

    all_texts = encoder.prefixed(list(texts) + list(val_texts if has_val else []), settings.prefix)
    ids = encoder.tokenizer(all_texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    lengths = np.array([len(s) for s in ids])
    pad_id = encoder.tokenizer.pad_token_id or 0
    n_train = len(y)

    # the frozen bottom layers, once per text (in length order: little padding)
    cache_start = time.monotonic()
    states: list = []
    # per text, so runs on overlapping texts (validation folds, a configuration search) share the states
    store = {} if state_cache is None else state_cache.setdefault((stack.n_bottom, encoder.max_length), {})
    if not full:
        model.eval()
        missing = [
            i for i in dict((t, i) for i, t in enumerate(all_texts)).values() if all_texts[i] not in store
        ]
        order = np.array(missing, dtype=int)[np.argsort(lengths[missing], kind="stable")]
        with torch.no_grad():  # not inference_mode: the cached states feed layers that need autograd
            for s in range(0, len(order), 64):
                if clock.over():
                    raise TimeoutError(
                        f"fine-tune budget ({clock.describe()}) ran out while caching the "
                        f"frozen layers' states ({s}/{len(order)} texts): raise the budget or "
                        "train on fewer texts"
                    )
                idx = order[s : s + 64]
                batch, mask = _pad([ids[i] for i in idx], device, pad_id)
                hidden = stack.bottom(batch, mask).float().cpu()
                for j, i in enumerate(idx):
                    store[all_texts[i]] = hidden[j, : lengths[i]].clone()
        states = [store[t] for t in all_texts]
        say(
            f"cached the states of the bottom {stack.n_bottom} layers for {len(missing):,} texts "
            f"({len(all_texts) - len(missing):,} reused) in {time.monotonic() - cache_start:.1f} s"
        )
    cache_seconds = time.monotonic() - cache_start

    def logits_for(idx):
        if full:
            batch, mask = _pad([ids[i] for i in idx], device, pad_id)
            return model(batch, mask)
        batch, mask = _pad([states[i] for i in idx], device)
        return stack.logits_from_states(batch, mask)

    def val_log_probs() -> np.ndarray:
        trained = model.backbone if full else stack.layers[stack.n_bottom :]
        trained.eval()
        model.head.eval()
        out = np.zeros((len(vy), n_classes))
        val_idx = np.arange(n_train, n_train + len(vy))
        order = val_idx[np.argsort(lengths[val_idx], kind="stable")]
        with torch.no_grad():
            for s in range(0, len(order), 128):
                idx = order[s : s + 128]
                out[idx - n_train] = torch.log_softmax(logits_for(idx).float(), -1).cpu().numpy()
        return out

    def trained_state() -> dict:  # the trained parameters only (with LoRA: the adapters), loaded non-strict
        return {
            "body": {k: v.detach().cpu().clone() for k, v in body.named_parameters() if v.requires_grad},
            "head": {k: v.detach().cpu().clone() for k, v in model.head.state_dict().items()},
        }

    def load_trained(state: dict) -> None:
        body.load_state_dict(state["body"], strict=False)
        model.head.load_state_dict(state["head"])

    history, best, best_epoch, bad, stopped = [], None, 0, 0, "epochs"
    best_f1 = -1.0
    train_lengths = lengths[:n_train]
    kept: list[tuple[float, int, dict]] = []  # (validation macro-F1, epoch, weights) of the best epochs
    if settings.lr_schedule not in ("constant", "linear", "budget"):
        raise ValueError(
            f"lr_schedule must be 'constant', 'linear' or 'budget', got {settings.lr_schedule!r}"
        )
    if settings.lr_schedule == "budget" and clock.kind == "none":
        raise ValueError(
            "lr_schedule 'budget' decays with the time budget: it needs budget_clock cpu or wall"
        )
    per_epoch = (n_train + settings.batch_size - 1) // settings.batch_size
    train_start = clock.spent()
    if settings.lr_schedule == "linear":  # warm up over the first epoch, then decay to 0 at the last
        total = max(1, per_epoch * settings.epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: min((step + 1) / per_epoch, max(0.0, (total - step) / max(1, total - per_epoch))),
        )
    elif settings.lr_schedule == "budget":  # warm up over 10 % of an epoch, decay with the budget's time left
        warmup = max(1, per_epoch // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: min(
                (step + 1) / warmup,
                clock.left_fraction(train_start),
            ),
        )
    for epoch in range(1, settings.epochs + 1):
        (model.backbone if full else stack.layers[stack.n_bottom :]).train()
        model.head.train()
        e0, e0_cpu, losses, out_of_time = time.monotonic(), time.process_time(), [], False
        for idx in _length_batches(train_lengths, settings.batch_size, rng):
            if clock.over():
                out_of_time = True
                break
            target = torch.as_tensor(y[idx], device=device)
            logits = logits_for(idx)
            loss = loss_fn(logits, target)
            if settings.rdrop_alpha > 0:  # a second pass (other dropout masks); pull the two outputs together
                again = logits_for(idx)
                loss = (loss + loss_fn(again, target)) / 2 + settings.rdrop_alpha * _symmetric_kl(
                    logits, again
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            if settings.lr_schedule != "constant":
                sched.step()
            losses.append(loss.item())
        if not losses:  # the budget ran out before this epoch's first batch
            stopped = "budget"
            break
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "batches": len(losses),
            "complete": not out_of_time,
            "seconds": round(time.monotonic() - e0, 1),
            "cpu_seconds": round(time.process_time() - e0_cpu, 1),
        }
        if has_val:
            row["val_macro_f1"] = _macro_f1(vy, val_log_probs().argmax(1), n_classes)
        history.append(row)
        say(f"epoch {epoch}: {row}")
        score = row.get("val_macro_f1", float(epoch))  # no validation window: the last epoch is kept
        if score > best_f1:
            best_f1, best, best_epoch, bad = score, trained_state(), epoch, 0
        else:
            bad += 1
        if settings.average_best > 1 and has_val:
            kept = sorted(
                kept + [(score, epoch, best if best_epoch == epoch else trained_state())], key=lambda t: -t[0]
            )[: settings.average_best]
        if out_of_time:
            stopped = "budget"
            break
        if has_val and bad >= settings.patience:
            stopped = "patience"
            break

    if best is None:
        raise TimeoutError(
            f"fine-tune budget ({clock.describe()}) ran out before the first training batch "
            f"(caching took {cache_seconds:.0f} s)"
        )
    load_trained(best)
    averaged: list[int] = []
    if len(kept) > 1:  # weight averaging of the best epochs, kept only if it is no worse on validation
        mean = {
            part: {k: sum(s[part][k].float() for _, _, s in kept) / len(kept) for k in best[part]}
            for part in ("body", "head")
        }
        load_trained(mean)
        avg_f1 = _macro_f1(vy, val_log_probs().argmax(1), n_classes)
        say(
            f"average of epochs {[e for _, e, _ in kept]}: validation macro-F1 {avg_f1:.4f} "
            f"(best single epoch {best_f1:.4f})"
        )
        if avg_f1 >= best_f1:
            averaged, best_f1 = sorted(e for _, e, _ in kept), avg_f1
        else:
            load_trained(best)
    bias = np.zeros(n_classes)
    final_val = val_log_probs() if has_val else None
    if has_val and settings.tune_class_bias:
        bias = tune_class_bias(final_val, vy)
        final_val = final_val + bias  # log-softmax is shift-equivariant per row: offsets added before it
        final_val = final_val - np.logaddexp.reduce(final_val, axis=1, keepdims=True)
        with torch.no_grad():
            model.head.bias += torch.as_tensor(
                bias, dtype=model.head.bias.dtype, device=model.head.bias.device
            )
    if settings.lora_rank > 0:
        _merge_lora(model)  # a plain encoder again: saved, loaded and served like any fine-tune
    for p in model.parameters():
        p.requires_grad_(True)
    return FinetuneResult(
        model=model.cpu().eval(),
        trainable_layers=n_top,
        n_layers=n_layers,
        device=device,
        epochs_run=len(history),
        best_epoch=best_epoch,
        stopped=stopped,
        cache_seconds=round(cache_seconds, 1),
        seconds=round(time.monotonic() - t0, 1),
        cpu_seconds=round(time.process_time() - cpu0, 1),
        budget_s=settings.budget_s,
        budget_clock=settings.budget_clock,
        class_weights=[float(w) for w in weights],
        class_bias=[float(b) for b in bias],
        history=history,
        averaged_epochs=averaged,
        val_macro_f1=float(best_f1) if has_val else None,
        val_log_probs=final_val,
    )


def predict_proba(model, encoder, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Class probabilities of a fine-tuned classifier (one full forward per text, as served), in input
    order."""
    import torch

    model = model.to(encoder.device).eval()
    prefixed = encoder.prefixed(list(texts), getattr(model, "prefix", "passage"))
    out = np.zeros((len(prefixed), model.head.out_features), dtype=np.float32)
    order = np.argsort([len(t) for t in prefixed], kind="stable")
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            b = encoder.tokenize([prefixed[i] for i in idx])
            logits = model(b["input_ids"].to(encoder.device), b["attention_mask"].to(encoder.device))
            out[idx] = torch.softmax(logits.float(), -1).cpu().numpy()
    return out


@dataclass
class FoldValidation:
    """A configuration scored on several validation windows at the end of training time
    (:func:`~ecom_pipeline.ml.splits.rolling_origin_splits`): each fold trains before its window and chooses
    its epoch and class offsets there, as the asset does on its one window."""

    folds: list[dict]  # per fold: window start, n_fit, n_val, n_neutral, macro-F1, epochs, CPU seconds
    y: np.ndarray  # every window's labels, pooled (oldest window first)
    log_probs: np.ndarray  # the fold models' log-probabilities (offsets included) on the pooled windows
    # the same before each window's own offsets (what pooled offsets are fitted on), and each row's window
    raw_log_probs: np.ndarray | None = None
    window: np.ndarray | None = None
    last: FinetuneResult | None = None  # the newest window's fine-tune (kept with ``keep_last``)

    @property
    def pooled_macro_f1(self) -> float:
        return _macro_f1(self.y, self.log_probs.argmax(1), self.log_probs.shape[1])

    @property
    def mean_fold_macro_f1(self) -> float:
        return float(np.mean([f["val_macro_f1"] for f in self.folds]))


def validate_on_folds(
    encoder,
    labelled,
    n_classes: int,
    *,
    settings: FinetuneSettings,
    n_folds: int = 3,
    window_fraction: float = 0.15,
    state_cache: dict | None = None,
    progress: Callable[[str], None] | None = None,
    keep_last: bool = False,
) -> FoldValidation:
    """Fine-tune once per rolling-origin fold of ``labelled`` (``doc``, ``_y``, ``created_at``: training
    reviews only, never the test set) and pool the windows' predictions: the choice between configurations
    then rests on ``n_folds`` windows (about n_folds x as many neutral reviews) instead of one."""
    from ecom_pipeline.ml.splits import rolling_origin_splits

    folds, ys, scores, raw, last = [], [], [], [], None
    for split in rolling_origin_splits(
        labelled, "created_at", n_folds=n_folds, window_fraction=window_fraction
    ):
        fit, val = split.train, split.test
        res = finetune_classifier(
            encoder,
            fit["doc"].tolist(),
            fit["_y"].to_numpy(),
            n_classes,
            val_texts=val["doc"].tolist(),
            val_y=val["_y"].to_numpy(),
            settings=settings,
            state_cache=state_cache,
            progress=progress,
        )
        vy = val["_y"].to_numpy()
        folds.append(
            {
                "window_start": str(split.cutoff),
                "n_fit": len(fit),
                "n_val": len(val),
                "n_val_per_class": np.bincount(vy, minlength=n_classes).tolist(),
                "val_macro_f1": _macro_f1(vy, res.val_log_probs.argmax(1), n_classes),
                "val_macro_f1_before_offsets": res.val_macro_f1,
                "epochs_run": res.epochs_run,
                "best_epoch": res.best_epoch,
                "stopped": res.stopped,
                "cpu_seconds": res.cpu_seconds,
                "seconds": res.seconds,
                "history": res.history,
            }
        )
        ys.append(vy)
        scores.append(res.val_log_probs)
        raw.append(remove_offsets(res.val_log_probs, res.class_bias))
        last = res if keep_last else None
        if progress:
            progress(f"fold {len(folds)}/{n_folds}: {folds[-1]['val_macro_f1']:.4f} on {len(val)} reviews")
    window = np.concatenate([np.full(len(v), k) for k, v in enumerate(ys)])
    return FoldValidation(
        folds, np.concatenate(ys), np.concatenate(scores), np.concatenate(raw), window, last
    )


def remove_offsets(log_probs: np.ndarray, offsets) -> np.ndarray:
    """Log-probabilities before additive per-class ``offsets`` (renormalised; argmax-equivalent)."""
    out = log_probs - np.asarray(offsets, dtype=float)
    return out - np.logaddexp.reduce(out, axis=1, keepdims=True)


def cross_fitted_offsets(raw_log_probs: np.ndarray, y: np.ndarray, window: np.ndarray, fit_on) -> np.ndarray:
    """Out-of-sample calibrated scores: each window's rows get offsets fitted on other windows only
    (``fit_on(k, windows)`` -> the windows to fit window k's offsets on), so a calibration strategy is scored
    on rows it never saw; returns the offset log-probabilities, row-aligned."""
    out = np.empty_like(raw_log_probs)
    windows = sorted(set(window.tolist()))
    for k in windows:
        src = np.isin(window, fit_on(k, windows))
        offsets = tune_class_bias(raw_log_probs[src], y[src])
        out[window == k] = raw_log_probs[window == k] + offsets
    return out


def set_class_offsets(result: FinetuneResult, offsets) -> None:
    """Replace the offsets folded into ``result.model``'s head bias with ``offsets`` (so the saved and served
    model applies them: one forward, no side table), in place; ``result.val_log_probs`` follows."""
    import torch

    new, old = np.asarray(offsets, dtype=float), np.asarray(result.class_bias, dtype=float)
    head = result.model.head
    with torch.no_grad():
        head.bias += torch.as_tensor(new - old, dtype=head.bias.dtype, device=head.bias.device)
    if result.val_log_probs is not None:
        result.val_log_probs = remove_offsets(result.val_log_probs, old - new)
    result.class_bias = [float(b) for b in new]


# the registered model (one 3-class model; its binary call is P(positive) > P(negative)) the gate decides on
FINETUNED_NAME = "ecom.sentiment_finetuned"


@dataclass
class FinetuneComparison:
    """The fine-tuned encoder vs the frozen-embedding head and TF-IDF on the project's one time split."""

    cutoff: str  # test = reviews from here on (the split of ``sentiment.fit_and_evaluate``)
    val_cutoff: str  # validation window = training reviews from here on (epochs and class bias chosen there)
    n_fit: int
    n_val: int
    finetune: FinetuneResult
    predict_seconds: float
    # setting -> model ("finetuned", "frozen_head", "tfidf", "majority") -> classification metrics
    metrics: dict[str, dict[str, dict[str, float]]]
    n_test: dict[str, int]
    # setting -> "<metric>_vs_<baseline>" -> paired-bootstrap Comparison over the setting's test reviews
    comparisons: dict[str, dict[str, object]]
    decisions: dict[str, object]  # setting -> serving-gate Decision (fine-tune vs its best baseline)
    baseline_models: dict[str, dict[str, object]]  # setting -> {"tfidf": pipeline, "frozen_head": estimator}
    # the fine-tune averaged with a TF-IDF trained on the fit reviews, weight chosen on validation; evaluated
    # (metrics under "finetuned_tfidf"), not served: setting -> "<metric>_vs_<baseline>" -> Comparison
    blend: dict = field(default_factory=dict)
    blend_comparisons: dict[str, dict[str, object]] = field(default_factory=dict)
    # where the served per-class logit offsets were fitted: windows, reviews, offsets, pooled macro-F1
    calibration: dict = field(default_factory=dict)


def _finetune_with_offsets(
    encoder, train, fit, val, settings: FinetuneSettings, val_fraction: float, progress
):
    """The fine-tune on ``fit`` (epoch chosen on ``val``, the newest ``val_fraction`` of ``train``) with its
    per-class logit offsets: fitted on ``val`` alone (``offset_folds`` 1), or on the pooled out-of-fold
    predictions of ``offset_folds`` rolling windows of ``train`` whose newest is ``val`` (that model is
    kept)."""
    vy = val["_y"].to_numpy()
    if settings.offset_folds <= 1 or not settings.tune_class_bias:
        ft = finetune_classifier(
            encoder,
            fit["doc"].tolist(),
            fit["_y"].to_numpy(),
            3,
            val_texts=val["doc"].tolist(),
            val_y=vy,
            settings=settings,
            progress=progress,
        )
        return ft, {
            "windows": 1 if settings.tune_class_bias else 0,
            "n_reviews": len(val),
            "offsets": ft.class_bias,
        }
    folds = validate_on_folds(
        encoder,
        train,
        3,
        settings=settings,
        n_folds=settings.offset_folds,
        window_fraction=val_fraction,
        progress=progress,
        keep_last=True,
    )
    ft = folds.last
    if len(ft.val_log_probs) != len(val):  # rolling_origin_splits' newest window is the validation window
        raise RuntimeError(
            f"newest rolling window has {len(ft.val_log_probs)} reviews, validation {len(val)}"
        )
    offsets = tune_class_bias(folds.raw_log_probs, folds.y)
    set_class_offsets(ft, offsets)
    pooled = folds.raw_log_probs + offsets
    return ft, {
        "windows": settings.offset_folds,
        "n_reviews": len(folds.y),
        "offsets": ft.class_bias,
        "pooled_val_macro_f1": _macro_f1(folds.y, pooled.argmax(1), 3),
        "folds": [
            {k: f[k] for k in ("window_start", "n_fit", "n_val", "val_macro_f1_before_offsets")}
            for f in folds.folds
        ],
    }


BASELINE_NAMES = {"tfidf": "ecom.sentiment_baseline.{setting}", "frozen_head": "ecom.sentiment.{setting}"}
GATE_METRIC = {"3class": "macro_f1", "binary": "accuracy"}


def compare_with_baselines(
    frame,
    embeddings: np.ndarray,
    encoder,
    *,
    settings: FinetuneSettings = FinetuneSettings(),
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    progress: Callable[[str], None] | None = None,
) -> FinetuneComparison:
    """Fine-tune on the 3-class labels of the training reviews (minus a validation window carved from the end
    of training time), then score it on the test reviews against the frozen-embedding head and TF-IDF
    (``sentiment.fit_and_evaluate``, trained on all training reviews) for 3-class (macro-F1) and binary
    (accuracy; the fine-tune's binary call is P(positive) > P(negative), 3s left out as everywhere).

    ``frame`` has ``doc``, ``score`` and ``created_at``; ``embeddings`` is row-aligned (frozen encoder).
    """
    from sklearn.metrics import accuracy_score

    from ecom_pipeline.ml.evaluation import scorer_comparison
    from ecom_pipeline.ml.serving_gate import decide
    from ecom_pipeline.ml.splits import temporal_split
    from ecom_pipeline.ml.text.sentiment import (
        SETTINGS,
        classification_metrics,
        fit_and_evaluate,
        macro_f1_comparison,
        majority_baseline,
        sentiment_labels,
        tfidf_baseline,
    )

    base = {"3class": fit_and_evaluate(frame, embeddings, "3class", test_fraction=test_fraction)}
    cutoff = base["3class"].cutoff
    base["binary"] = fit_and_evaluate(frame, embeddings, "binary", cutoff=cutoff)
    y3 = sentiment_labels(frame["score"], "3class")
    labelled = frame.reset_index(drop=True).assign(_row=np.arange(len(frame)), _y=y3)[y3 >= 0]
    split = temporal_split(labelled, "created_at", cutoff=cutoff)
    inner = temporal_split(split.train, "created_at", test_fraction=val_fraction)
    fit, val = inner.train, inner.test
    if len(fit) < 2 or len(val) < 2 or fit["_y"].nunique() < 2:
        raise ValueError(
            f"fine-tune: too few training reviews for a validation window (fit {len(fit)}, "
            f"validation {len(val)})"
        )
    ft, calibration = _finetune_with_offsets(encoder, split.train, fit, val, settings, val_fraction, progress)
    t0 = time.monotonic()
    probs = predict_proba(ft.model, encoder, split.test["doc"].tolist())
    predict_seconds = time.monotonic() - t0
    tfidf_fit = tfidf_baseline().fit(fit["doc"], fit["_y"])  # the validation window stays unseen by it
    blend = choose_tfidf_weight(
        ft.val_log_probs, np.log(np.clip(tfidf_fit.predict_proba(val["doc"]), 1e-9, 1)), val["_y"].to_numpy()
    )
    blend_scores = blend_log_probs(probs, tfidf_fit.predict_proba(split.test["doc"]), blend)
    test_rows = split.test["_row"].to_numpy()

    def accuracy(yy, pp):
        return accuracy_score(yy, pp)

    metrics, comparisons, decisions, n_test, models, blend_comparisons = {}, {}, {}, {}, {}, {}
    for setting in ("3class", "binary"):
        res = base[setting]
        y = sentiment_labels(frame["score"].to_numpy()[test_rows], setting)
        keep = y >= 0
        rows, y = test_rows[keep], y[keep]
        ft_pred = (
            probs[keep].argmax(1) if setting == "3class" else (probs[keep, 2] > probs[keep, 0]).astype(int)
        )
        blended = blend_scores[keep]
        blend_pred = blended.argmax(1) if setting == "3class" else (blended[:, 2] > blended[:, 0]).astype(int)
        preds = {
            "finetuned": ft_pred,
            "finetuned_tfidf": blend_pred,
            "frozen_head": res.model.predict(embeddings[rows]),
            "tfidf": res.baseline.predict(frame["doc"].to_numpy()[rows].tolist()),
        }
        classes = SETTINGS[setting]
        train_y = sentiment_labels(frame["score"].to_numpy()[split.train["_row"].to_numpy()], setting)
        majority = majority_baseline(train_y[train_y >= 0])
        metrics[setting] = {name: classification_metrics(y, p, classes) for name, p in preds.items()}
        metrics[setting]["majority"] = classification_metrics(y, np.full(len(y), majority), classes)
        n_test[setting] = len(y)
        comparisons[setting], blend_comparisons[setting] = {}, {}
        for baseline in ("tfidf", "frozen_head", "finetuned"):
            blend_comparisons[setting][f"{GATE_METRIC[setting]}_vs_{baseline}"] = (
                macro_f1_comparison(y, blend_pred, preds[baseline])
                if setting == "3class"
                else scorer_comparison(
                    y,
                    blend_pred,
                    preds[baseline],
                    accuracy,
                    metric="accuracy",
                    higher_is_better=True,
                    needs_both_classes=False,
                )
            )
        for baseline in ("tfidf", "frozen_head"):
            comparisons[setting][f"macro_f1_vs_{baseline}"] = macro_f1_comparison(y, ft_pred, preds[baseline])
            comparisons[setting][f"accuracy_vs_{baseline}"] = scorer_comparison(
                y,
                ft_pred,
                preds[baseline],
                accuracy,
                metric="accuracy",
                higher_is_better=True,
                needs_both_classes=False,
            )
        metric = GATE_METRIC[setting]
        best = max(("tfidf", "frozen_head"), key=lambda b: metrics[setting][b][metric])
        decisions[setting] = decide(
            "sentiment_finetuned",
            setting,
            FINETUNED_NAME,
            BASELINE_NAMES[best].format(setting=setting),
            comparisons[setting][f"{metric}_vs_{best}"],
        )
        models[setting] = {"tfidf": res.baseline, "frozen_head": res.model}
    return FinetuneComparison(
        str(cutoff),
        str(inner.cutoff),
        len(fit),
        len(val),
        ft,
        round(predict_seconds, 1),
        metrics,
        n_test,
        comparisons,
        decisions,
        models,
        blend,
        blend_comparisons,
        calibration,
    )
