"""Tiny model folders for the kiln run tests, made on the spot: a 2-layer BERT (tools/gen/gen_bert.py
bert-tiny, random weights) with a WordPiece tokenizer trained by the `tokenizers` package, and a
small image classifier (pixel_values -> mean pool -> linear) with a preprocessor_config.json.
Needs numpy, onnx and tokenizers (tests/requirements.lock)."""
import json
import os
import struct
import subprocess
import sys
import zlib

WORDS = ("the a kiln runs models on graphs tensors fast slow small large red green blue cat dog bird "
         "river mountain city people music art science history every day night morning evening "
         "quickly slowly happy sad bright dark old new open close read write learn teach build break "
         "Paris Berlin Anna Marco computer network language question answer").split()


def corpus(n=3000):
    out = []
    state = 12345
    for i in range(n):
        k = 4 + i % 9
        words = []
        for _ in range(k):
            state = (state * 1103515245 + 12345) % (1 << 31)
            words.append(WORDS[state % len(WORDS)])
        out.append(" ".join(words) + (". " if i % 3 else "! ") + str(i % 97))
    return out


def train_wordpiece(path, vocab_size=600):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    tok.save(path)
    return tok.get_vocab_size()


def make_bert(d, gen, seed=0, config_vocab=1000, pooling=None, normalize=False, st_max_seq=None):
    """A BERT feature-extraction folder. pooling: a sentence-transformers Pooling mode
    ("cls", "max", "mean", "lasttoken") written to 1_Pooling/config.json."""
    os.makedirs(d, exist_ok=True)
    subprocess.run([sys.executable, gen, "--preset", "bert-tiny", "--seed", str(seed), "--out", os.path.join(d, "model.onnx")],
                   check=True, capture_output=True)
    train_wordpiece(os.path.join(d, "tokenizer.json"))
    json.dump({"model_type": "bert", "vocab_size": config_vocab, "hidden_size": 64, "num_hidden_layers": 2,
               "max_position_embeddings": 128, "pad_token_id": 0}, open(os.path.join(d, "config.json"), "w"))
    json.dump({"model_max_length": 128, "pad_token": "[PAD]", "do_lower_case": True},
              open(os.path.join(d, "tokenizer_config.json"), "w"))
    if pooling or normalize or st_max_seq:
        mods = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            mods.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        json.dump(mods, open(os.path.join(d, "modules.json"), "w"))
        os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
        modes = ("cls_token", "mean_tokens", "max_tokens", "lasttoken")
        pc = {"word_embedding_dimension": 64}
        pc.update({f"pooling_mode_{m}": (m.startswith(pooling or "mean")) for m in modes})
        json.dump(pc, open(os.path.join(d, "1_Pooling", "config.json"), "w"))
        if st_max_seq:
            json.dump({"max_seq_length": st_max_seq, "do_lower_case": False},
                      open(os.path.join(d, "sentence_bert_config.json"), "w"))
    return d


def make_image_classifier(d, size=16, labels=("cat", "dog", "bird")):
    """pixel_values [N,3,size,size] -> GlobalAveragePool -> Flatten -> Gemm -> logits."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((len(labels), 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(len(labels)).astype(np.float32), "B")
    nodes = [helper.make_node("GlobalAveragePool", ["pixel_values"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "B"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "tiny_image", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, size, size])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(labels)])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, os.path.join(d, "model.onnx"))
    json.dump({"model_type": "resnet", "id2label": {str(i): l for i, l in enumerate(labels)},
               "label2id": {l: i for i, l in enumerate(labels)}}, open(os.path.join(d, "config.json"), "w"))
    json.dump({"do_resize": True, "size": {"height": size, "width": size}, "resample": 2, "do_rescale": True,
               "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
               "image_processor_type": "ViTImageProcessor"}, open(os.path.join(d, "preprocessor_config.json"), "w"))
    return d


def write_png(path, w, h, rgb):
    """An 8-bit RGB PNG from a function (x, y) -> (r, g, b), with only the standard library."""
    raw = b"".join(b"\x00" + b"".join(bytes(rgb(x, y)) for x in range(w)) for y in range(h))
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def add_sentence_embedding(model_path, scale=2.0):
    """Adds a pooled output the way sentence-transformers ONNX exports carry one:
    sentence_embedding = scale * (masked mean of last_hidden_state); the scale tells it apart
    from pooling done outside the model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    m = onnx.load(model_path)
    g = m.graph
    g.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "se_axis1"),
                          numpy_helper.from_array(np.array([2], np.int64), "se_axis2"),
                          numpy_helper.from_array(np.array(scale, np.float32), "se_scale")])
    g.node.extend([
        helper.make_node("Cast", ["attention_mask"], ["se_maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["se_maskf", "se_axis2"], ["se_mask3"]),
        helper.make_node("Mul", ["last_hidden_state", "se_mask3"], ["se_masked"]),
        helper.make_node("ReduceSum", ["se_masked", "se_axis1"], ["se_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["se_mask3", "se_axis1"], ["se_count"], keepdims=0),
        helper.make_node("Div", ["se_sum", "se_count"], ["se_mean"]),
        helper.make_node("Mul", ["se_mean", "se_scale"], ["sentence_embedding"]),
    ])
    hidden = g.output[0].type.tensor_type.shape.dim[2].dim_value
    g.output.append(helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden]))
    onnx.save(m, model_path)
