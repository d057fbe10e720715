"""Tiny random BLIP / BLIP-2 captioners built from transformers configs and saved to a folder: no download.

Shared by the captioner tests and every test that needs a working captioner offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def tiny_blip() -> tuple[Any, Any]:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    tok.add_special_tokens({"bos_token": "[DEC]"})
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok
    )
    config = BlipConfig(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64,
            patch_size=16, initializer_range=0.2,
        ),
        text_config=dict(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=64, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
            sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id, initializer_range=0.2,
        ),
        projection_dim=32,
        initializer_range=0.2,
    )  # fmt: skip
    # With the default init (0.02) a tiny BLIP gives every image the same caption, which would make
    # the order checks vacuous; a wider init and this seed give three different captions.
    torch.manual_seed(3)
    return BlipForConditionalGeneration(config).eval(), processor


def tiny_blip2() -> tuple[Any, Any]:
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        GPT2Tokenizer,
    )

    words = ["<pad>", "</s>", "<unk>"] + [f"g{i}" for i in range(40)]
    tok = GPT2Tokenizer(
        vocab={w: i for i, w in enumerate(words)}, merges=[], unk_token="<unk>", bos_token="</s>",
        eos_token="</s>", pad_token="<pad>",
    )  # fmt: skip
    image_processor = BlipImageProcessor(size={"height": 56, "width": 56})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=4)
    config = Blip2Config(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14
        ),
        qformer_config=dict(
            vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            encoder_hidden_size=32, max_position_embeddings=64,
        ),
        text_config=dict(
            model_type="opt", vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
            num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=128, bos_token_id=1,
            eos_token_id=1, pad_token_id=0,
        ),
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    torch.manual_seed(3)
    return Blip2ForConditionalGeneration(config).eval(), processor


def save_tiny_captioner(kind: str, directory: Path) -> Path:
    """Build the tiny `kind` ("blip" or "blip2") and save model + processor with save_pretrained."""
    net, processor = tiny_blip() if kind == "blip" else tiny_blip2()
    directory.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
