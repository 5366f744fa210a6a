//! Text classification data as token-id sequences: a CSV with a text column and a 0/1 label column,
//! a deterministic train/test split, a vocabulary built on the training split only, and sequences
//! padded or cut to a fixed length.
//!
//! Conventions (those of Keras' IMDb data, which give the paper's vocabulary of 10,004 ids):
//! - **Rows**: rows whose text is empty (after trimming whitespace) are skipped and counted; every
//!   other row must have a label of exactly `0` or `1`.
//! - **Split**: the kept rows are shuffled by a Fisher–Yates shuffle driven by ChaCha8 seeded with
//!   [`TextOptions::seed`] (index `j ≤ i` drawn as the high 64 bits of `u64 × (i + 1)`), the first
//!   `round(n × test_fraction)` of them form the test split and the rest the training split; each
//!   split keeps the file's row order. The result depends only on the file and the options.
//! - **Tokens**: text is lowercased; a token is a maximal run of alphanumeric characters and
//!   apostrophes (`’` counts as `'`), with apostrophes trimmed from both ends, so `it's` stays one
//!   token, `'quoted'` becomes `quoted`, and `t-shirt` gives `t` and `shirt`.
//! - **Vocabulary**: the [`TextOptions::vocab_words`] most frequent training tokens, ties broken by
//!   the token's byte order; word `k` (0-based by rank) gets id `k + 4`. Ids 0–3 are reserved:
//!   [`PAD`], [`START`], [`UNKNOWN`] (any other token), [`UNUSED`].
//! - **Sequences**: [`START`] then the token ids; longer sequences are cut and shorter ones padded
//!   with [`PAD`] to [`TextOptions::max_len`], on the side given by [`TextOptions::truncate`] and
//!   [`TextOptions::pad`] (both [`Side::Pre`] by default, as Keras' `pad_sequences`: the end of a
//!   long text is kept and padding comes first, next to the start of an LSTM's input).

use std::collections::HashMap;
use std::path::Path;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::tabular::{csv_error, find_columns, record_line};
use crate::data::{source, Dataset};
use crate::error::{Error, Result};

/// Padding id.
pub const PAD: u32 = 0;
/// Id that starts every sequence.
pub const START: u32 = 1;
/// Id of every token outside the vocabulary.
pub const UNKNOWN: u32 = 2;
/// Reserved, never produced (Keras' convention).
pub const UNUSED: u32 = 3;
/// Number of reserved ids before the first word.
pub const RESERVED: u32 = 4;

/// Which end of a sequence is cut or padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// At the beginning.
    Pre,
    /// At the end.
    Post,
}

/// How [`load_csv`] reads, splits and encodes a text CSV. The default reads the women's clothing
/// reviews (`Review Text`, `Recommended IND`) with Keras IMDb's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TextOptions {
    /// Header name of the text column.
    pub text_column: String,
    /// Header name of the 0/1 label column.
    pub label_column: String,
    /// Words kept in the vocabulary (the vocabulary has 4 more ids).
    pub vocab_words: usize,
    /// Length every sequence is padded or cut to.
    pub max_len: usize,
    /// Fraction of the kept rows in the test split, in (0, 1).
    pub test_fraction: f64,
    /// Seed of the split's shuffle.
    pub seed: u64,
    /// Side where padding goes.
    pub pad: Side,
    /// Side that is cut from a long sequence.
    pub truncate: Side,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            text_column: "Review Text".to_string(),
            label_column: "Recommended IND".to_string(),
            vocab_words: 10_000,
            max_len: 256,
            test_fraction: 0.2,
            seed: 0,
            pad: Side::Pre,
            truncate: Side::Pre,
        }
    }
}

/// The words of a vocabulary by rank; id = rank + 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Vocabulary {
    /// Builds a vocabulary of the `max_words` most frequent words in `texts` (ties by byte order).
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>, max_words: usize) -> Self {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for text in texts {
            for token in tokenize(text) {
                *counts.entry(token).or_insert(0) += 1;
            }
        }
        Self::from_counts(counts, max_words)
    }

    fn from_counts(counts: HashMap<String, u64>, max_words: usize) -> Self {
        let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(max_words);
        let words: Vec<String> = ranked.into_iter().map(|(w, _)| w).collect();
        let ids = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32 + RESERVED)).collect();
        Vocabulary { words, ids }
    }

    /// Number of ids, reserved ones included (the embedding table's row count).
    pub fn len(&self) -> usize {
        self.words.len() + RESERVED as usize
    }

    /// Always false: the reserved ids are part of every vocabulary.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The words by rank: `words()[k]` has id `k + 4`.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The id of `word` (already tokenized), or [`UNKNOWN`].
    pub fn id(&self, word: &str) -> u32 {
        self.ids.get(word).copied().unwrap_or(UNKNOWN)
    }

    /// The word of a word id; `None` for reserved or out-of-range ids.
    pub fn word(&self, id: u32) -> Option<&str> {
        id.checked_sub(RESERVED).and_then(|k| self.words.get(k as usize)).map(String::as_str)
    }

    /// [`START`] followed by the ids of the tokens of `text` (not padded).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        std::iter::once(START).chain(tokenize(text).map(|t| self.id(&t))).collect()
    }
}

/// The tokens of `text`; see the module documentation.
pub fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '\u{2019}'))
        .map(|piece| piece.trim_matches(|c| c == '\'' || c == '\u{2019}'))
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            piece
                .chars()
                .flat_map(char::to_lowercase)
                .map(|c| if c == '\u{2019}' { '\'' } else { c })
                .collect()
        })
}

/// A text CSV loaded into splits.
#[derive(Debug, Clone, PartialEq)]
pub struct TextCorpus {
    /// The training split: `[max_len]` token ids per example, 0/1 labels.
    pub train: Dataset<u32>,
    /// The test split, encoded with the training vocabulary.
    pub test: Dataset<u32>,
    /// The vocabulary built on the training split.
    pub vocabulary: Vocabulary,
    /// Data rows in the file.
    pub rows: usize,
    /// Rows skipped because their text was empty.
    pub skipped_empty: usize,
}

/// Loads the reviews CSV (or any text CSV described by `options`) as `(train, test, vocabulary)`;
/// examples are `[max_len]` token ids, labels 0.0 or 1.0.
pub fn load_reviews(
    path: impl AsRef<Path>,
    options: TextOptions,
) -> Result<(Dataset<u32>, Dataset<u32>, Vocabulary)> {
    let corpus = load_csv(path.as_ref(), &options)?;
    Ok((corpus.train, corpus.test, corpus.vocabulary))
}

/// Loads a text CSV file (raw or gzip) into a [`TextCorpus`].
pub fn load_csv(path: &Path, options: &TextOptions) -> Result<TextCorpus> {
    let bytes = source::read_bytes(path)?;
    parse(path, &bytes, options)
}

/// [`load_csv`] on bytes held in memory (raw or gzip); `path` names them in errors.
pub fn parse_csv_bytes(path: &Path, bytes: &[u8], options: &TextOptions) -> Result<TextCorpus> {
    let bytes = source::decode(path, bytes)?;
    parse(path, &bytes, options)
}

fn check_options(options: &TextOptions) -> Result<()> {
    if options.max_len == 0 {
        return Err(Error::invalid("max_len", "sequences need a length of at least 1"));
    }
    if !(options.test_fraction > 0.0 && options.test_fraction < 1.0) {
        return Err(Error::invalid(
            "test_fraction",
            format!("{} is not strictly between 0 and 1", options.test_fraction),
        ));
    }
    if options.vocab_words > (u32::MAX - RESERVED) as usize {
        return Err(Error::invalid("vocab_words", format!("{} ids do not fit in u32", options.vocab_words)));
    }
    Ok(())
}

fn parse(path: &Path, bytes: &[u8], options: &TextOptions) -> Result<TextCorpus> {
    check_options(options)?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header = reader.headers().map_err(|e| csv_error(path, &e))?.clone();
    let columns = find_columns(path, &header, &[&options.text_column, &options.label_column])?;
    let (text_index, label_index) = (columns[0], columns[1]);

    // Every distinct token gets an interned index so texts are tokenized once.
    let mut interned: HashMap<String, u32> = HashMap::new();
    let mut token_texts: Vec<Vec<u32>> = Vec::new();
    let mut labels: Vec<f32> = Vec::new();
    let mut rows = 0;
    let mut skipped_empty = 0;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, &e)),
        }
        rows += 1;
        let text = record[text_index].trim();
        if text.is_empty() {
            skipped_empty += 1;
            continue;
        }
        let label = match record[label_index].trim() {
            "0" => 0.0,
            "1" => 1.0,
            other => {
                return Err(Error::format(
                    path,
                    format!("line {}, column '{}'", record_line(&record), options.label_column),
                    format!("label '{other}' is neither 0 nor 1"),
                ))
            }
        };
        let tokens = tokenize(text)
            .map(|t| {
                let next = interned.len() as u32;
                *interned.entry(t).or_insert(next)
            })
            .collect();
        token_texts.push(tokens);
        labels.push(label);
    }

    let n = token_texts.len();
    let n_test = (n as f64 * options.test_fraction).round() as usize;
    if n_test == 0 || n_test == n {
        return Err(Error::format(
            path,
            format!("line {}", rows + 1),
            format!(
                "{n} rows with text ({skipped_empty} empty skipped) cannot be split into non-empty training \
                 and test sets with test fraction {}",
                options.test_fraction
            ),
        ));
    }
    let mut is_test = vec![false; n];
    for &i in &shuffled_indices(n, options.seed)[..n_test] {
        is_test[i] = true;
    }

    let mut counts = vec![0u64; interned.len()];
    for (tokens, _) in token_texts.iter().zip(&is_test).filter(|(_, &test)| !test) {
        for &t in tokens {
            counts[t as usize] += 1;
        }
    }
    let train_counts: HashMap<String, u64> = interned
        .iter()
        .filter(|(_, &i)| counts[i as usize] > 0)
        .map(|(w, &i)| (w.clone(), counts[i as usize]))
        .collect();
    let vocabulary = Vocabulary::from_counts(train_counts, options.vocab_words);
    let mut id_of_interned = vec![UNKNOWN; interned.len()];
    for (word, &i) in &interned {
        id_of_interned[i as usize] = vocabulary.id(word);
    }

    let mut split = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    let mut ids = Vec::new();
    for ((tokens, &label), &test) in token_texts.iter().zip(&labels).zip(&is_test) {
        ids.clear();
        ids.push(START);
        ids.extend(tokens.iter().map(|&t| id_of_interned[t as usize]));
        let (inputs, split_labels) = &mut split[usize::from(test)];
        fit_length(&ids, options, inputs);
        split_labels.push(label);
    }
    let [(train_inputs, train_labels), (test_inputs, test_labels)] = split;
    Ok(TextCorpus {
        train: Dataset::new(train_inputs, train_labels, vec![options.max_len], 1)?,
        test: Dataset::new(test_inputs, test_labels, vec![options.max_len], 1)?,
        vocabulary,
        rows,
        skipped_empty,
    })
}

/// Appends `ids` padded or cut to `options.max_len` to `out`.
pub fn fit_length(ids: &[u32], options: &TextOptions, out: &mut Vec<u32>) {
    let len = options.max_len;
    let kept = match options.truncate {
        Side::Pre => &ids[ids.len().saturating_sub(len)..],
        Side::Post => &ids[..ids.len().min(len)],
    };
    let padding = len - kept.len();
    if options.pad == Side::Pre {
        out.extend(std::iter::repeat_n(PAD, padding));
    }
    out.extend_from_slice(kept);
    if options.pad == Side::Post {
        out.extend(std::iter::repeat_n(PAD, padding));
    }
}

/// The indices `0..n` in the order of the seeded Fisher–Yates shuffle described in the module docs.
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}
