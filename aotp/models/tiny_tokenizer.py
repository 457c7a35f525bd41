"""A deterministic, download-free WordPiece tokenizer for the tiny random backbones.

The vocabulary is special tokens + lowercase characters (word-initial and ``##`` continuation
pieces) + a few hundred frequent English words, so tests tokenise real sentences into short,
stable sequences without any file or network access.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Frequent words keep tiny-model sequences short; the exact list only affects sequence lengths.
COMMON_WORDS = """
the of and to a in is was that for it with as on be by he at are this his from not or have an
they which one you had her all she there but were we their been has more when will would who no
what up out if so can said time about than its into them only other new some could these may then
do first any my now such like our over man me even most made after also did many before must
through back years where much your way well down should because each just those people how too
little state good very make world still own see men work long get here between both life being
under never day same another know while last might us great old year off come since against go came
right used take three is are was were been be not no yes true false good bad movie film story
""".split()


def build_tiny_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Return a lower-casing BERT-style WordPiece tokenizer with a ~360-token vocabulary."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab_list = list(SPECIAL_TOKENS)
    for token in list(chars) + ["##" + c for c in chars] + COMMON_WORDS:
        if token not in vocab_list:
            vocab_list.append(token)
    vocab = {token: index for index, token in enumerate(vocab_list)}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
