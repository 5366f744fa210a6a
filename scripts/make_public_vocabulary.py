"""Makes data/vocab/english_10000.txt: the public English vocabulary of the text pipeline.

The words come from wordfreq 3.1.1's English frequency list (data CC BY-SA 4.0, see docs/DATA.md),
never from a private dataset. Run once by hand; no test runs it, and the runtime embeds its output.

    pip download --no-deps wordfreq==3.1.1          # wordfreq-3.1.1-py3-none-any.whl, 56.8 MB
    pip install msgpack                             # to read the list (wordfreq's own dependency)
    python3 scripts/make_public_vocabulary.py wordfreq-3.1.1-py3-none-any.whl data/vocab/english_10000.txt

What it does:
1. reads `wordfreq/data/large_en.msgpack.gz` from the wheel: a header, then bin `i` holding the
   words whose frequency is 10^(-i/100) (wordfreq's "cB" format);
2. drops entries with a run of two or more digits: wordfreq 3 stores every such run as zeros
   (`0000` stands for every four-digit number), so the entry is not the text it spells;
3. tokenizes every other entry exactly as `dp_runtime::data::text::tokenize` does (lowercase per
   character; a token is a maximal run of alphanumeric characters and apostrophes, `’` counting as
   `'`, apostrophes trimmed from both ends) and gives each token the sum of the frequencies of the
   entries it occurs in (math.fsum: exactly rounded, so the order of summation does not matter);
4. keeps the 10,000 most frequent tokens, ties broken by the token's UTF-8 byte order (the rule of
   `Vocabulary`), and writes them one per line in rank order.

The Rust test `public_vocabulary_is_ranked_tokens_of_our_tokenizer` checks that every line is one
token of our tokenizer, so a difference between Python's and Rust's character classes would show.
"""

import gzip
import hashlib
import math
import re
import sys
import zipfile

import msgpack

WORDS = 10_000
LIST_IN_WHEEL = "wordfreq/data/large_en.msgpack.gz"
WHEEL_SHA256 = "4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473"
SMASHED_NUMBER = re.compile(r"[0-9]{2,}")


def is_token_char(c):
    return c.isalnum() or c in "'\u2019"


def tokenize(text):
    """The tokens of `text` by the rules of dp_runtime::data::text::tokenize."""
    tokens, piece = [], []
    for c in text + " ":
        if is_token_char(c):
            piece.append(c)
            continue
        token = "".join(piece).strip("'\u2019")
        piece = []
        if token:
            lowered = "".join(ch.lower() for ch in token)
            tokens.append(lowered.replace("\u2019", "'"))
    return tokens


def main(wheel_path, out_path):
    with open(wheel_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"{wheel_path}: sha256 {digest}, expected wordfreq 3.1.1's {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel_path) as wheel:
        packed = gzip.decompress(wheel.read(LIST_IN_WHEEL))
    header, *bins = msgpack.unpackb(packed, raw=False, strict_map_key=False)
    if header != {"format": "cB", "version": 1}:
        sys.exit(f"{LIST_IN_WHEEL}: unexpected header {header}")

    contributions = {}
    for centibels, entries in enumerate(bins):
        frequency = 10.0 ** (-centibels / 100)
        for entry in entries:
            if SMASHED_NUMBER.search(entry):
                continue
            for token in tokenize(entry):
                contributions.setdefault(token, []).append(frequency)
    frequencies = {token: math.fsum(parts) for token, parts in contributions.items()}
    ranked = sorted(frequencies, key=lambda t: (-frequencies[t], t.encode("utf-8")))[:WORDS]
    if len(ranked) != WORDS:
        sys.exit(f"only {len(ranked)} tokens in the list")
    with open(out_path, "w", encoding="utf-8", newline="\n") as out:
        out.writelines(token + "\n" for token in ranked)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: make_public_vocabulary.py WORDFREQ_WHEEL OUTPUT_TXT")
    main(sys.argv[1], sys.argv[2])
