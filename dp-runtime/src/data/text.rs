//! Text classification data as token-id sequences: a CSV with a text column and a 0/1 label column,
//! a train/test split by a hash of each row's text, a public vocabulary, and sequences padded or cut
//! to a fixed length.
//!
//! Nothing here depends on the other rows by default (see [`crate::data::provenance`]): removing or
//! adding a row never moves another row between splits or changes its token ids.
//!
//! Conventions (those of Keras' IMDb data, which give the paper's vocabulary of 10,004 ids):
//! - **Rows**: rows whose text is empty (after trimming whitespace) are skipped and counted; every
//!   other row must have a label of exactly `0` or `1`.
//! - **Split**: a row is in the test split when [`split_hash`] of its trimmed text, salted with
//!   [`TextOptions::seed`], is below `test_fraction × 2⁶⁴`; the hash is FNV-1a 64 over the seed's 8
//!   little-endian bytes and then the text's UTF-8 bytes, followed by SplitMix64's finaliser (which
//!   spreads every input bit over the high bits that the comparison reads). It is a function of the
//!   row alone, the same on every platform; rows with equal text share a split. The test share is
//!   `test_fraction` in expectation, not exactly. Each split keeps the file's row order.
//! - **Tokens**: text is lowercased; a token is a maximal run of alphanumeric characters and
//!   apostrophes (`’` counts as `'`), with apostrophes trimmed from both ends, so `it's` stays one
//!   token, `'quoted'` becomes `quoted`, and `t-shirt` gives `t` and `shirt`.
//! - **Vocabulary** ([`TextOptions::vocabulary`]): by default the first
//!   [`TextOptions::vocab_words`] words of [`Vocabulary::public_english`], a list shipped with the
//!   project (`data/vocab/english_10000.txt`, the 10,000 most frequent English tokens of wordfreq
//!   3.1.1 under these tokenizer rules; see docs/DATA.md). Word `k` (0-based by rank) gets id
//!   `k + 4`. Ids 0–3 are reserved: [`PAD`], [`START`], [`UNKNOWN`] (any other token),
//!   [`UNUSED`]. [`VocabularySource::FittedToTrainingSplitUnaccounted`] instead ranks the training
//!   split's own tokens (ties by byte order): it is not private, and [`TextCorpus`] says so.
//! - **Sequences**: [`START`] then the token ids; longer sequences are cut and shorter ones padded
//!   with [`PAD`] to [`TextOptions::max_len`], on the side given by [`TextOptions::truncate`] and
//!   [`TextOptions::pad`] (both [`Side::Pre`] by default, as Keras' `pad_sequences`: the end of a
//!   long text is kept and padding comes first, next to the start of an LSTM's input).

use std::collections::HashMap;
use std::path::Path;

use crate::data::tabular::{csv_error, find_columns, record_line};
use crate::data::{source, Dataset, Provenance};
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

/// The shipped public word list, one token per line in rank order (see docs/DATA.md).
const PUBLIC_ENGLISH: &str = include_str!("../../../data/vocab/english_10000.txt");

/// Number of words in [`Vocabulary::public_english`].
pub const PUBLIC_ENGLISH_WORDS: usize = 10_000;

/// Where the vocabulary of [`load_csv`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabularySource {
    /// The first `vocab_words` words of [`Vocabulary::public_english`]: public.
    PublicEnglish,
    /// **Not private.** The `vocab_words` most frequent tokens of the training split: every
    /// training row changes the counts, and one row can move a word in or out of the vocabulary
    /// and with it the ids of other rows. Outside any privacy accounting.
    FittedToTrainingSplitUnaccounted,
}

/// Which end of a sequence is cut or padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// At the beginning.
    Pre,
    /// At the end.
    Post,
}

/// How [`load_csv`] reads, splits and encodes a text CSV. The default reads the women's clothing
/// reviews (`Review Text`, `Recommended IND`) with Keras IMDb's settings and the public vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct TextOptions {
    /// Header name of the text column.
    pub text_column: String,
    /// Header name of the 0/1 label column.
    pub label_column: String,
    /// Where the vocabulary comes from.
    pub vocabulary: VocabularySource,
    /// Words kept in the vocabulary (the vocabulary has 4 more ids).
    pub vocab_words: usize,
    /// Length every sequence is padded or cut to.
    pub max_len: usize,
    /// Expected fraction of the kept rows in the test split, in (0, 1).
    pub test_fraction: f64,
    /// Salt of the split's hash: another seed, another split.
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
            vocabulary: VocabularySource::PublicEnglish,
            vocab_words: PUBLIC_ENGLISH_WORDS,
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
    provenance: Provenance,
}

impl Vocabulary {
    /// The shipped public English list: 10,000 tokens of wordfreq 3.1.1 in rank order (10,004 ids).
    pub fn public_english() -> Self {
        Self::from_ranked(PUBLIC_ENGLISH.lines().map(String::from).collect(), Provenance::Public)
    }

    /// The first `words` words of [`Vocabulary::public_english`].
    pub fn public_english_first(words: usize) -> Result<Self> {
        if words > PUBLIC_ENGLISH_WORDS {
            return Err(Error::invalid(
                "vocab_words",
                format!("{words} words asked, the public English list has {PUBLIC_ENGLISH_WORDS}"),
            ));
        }
        let ranked = PUBLIC_ENGLISH.lines().take(words).map(String::from).collect();
        Ok(Self::from_ranked(ranked, Provenance::Public))
    }

    /// **Not private.** The `max_words` most frequent tokens of `texts` (ties by byte order). When
    /// `texts` are private rows, the vocabulary reveals their words outside any privacy accounting;
    /// its [`Vocabulary::provenance`] says so.
    pub fn fit_to_private_texts_unaccounted<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        max_words: usize,
    ) -> Self {
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
        let words = ranked.into_iter().map(|(w, _)| w).collect();
        Self::from_ranked(words, Provenance::FittedToPrivateDataUnaccounted)
    }

    fn from_ranked(words: Vec<String>, provenance: Provenance) -> Self {
        let ids = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32 + RESERVED)).collect();
        Vocabulary { words, ids, provenance }
    }

    /// Whether the word list is public or was fitted to (private) texts.
    pub fn provenance(&self) -> Provenance {
        self.provenance
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
    /// The test split, encoded with the same vocabulary.
    pub test: Dataset<u32>,
    /// The vocabulary both splits are encoded with.
    pub vocabulary: Vocabulary,
    /// Whether the vocabulary is public or fitted to the training split (not private).
    pub vocabulary_provenance: Provenance,
    /// Whether the split is public: always [`Provenance::Public`], since each row's split is a hash
    /// of its own text.
    pub split_provenance: Provenance,
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
    let public_vocabulary = match options.vocabulary {
        VocabularySource::PublicEnglish => Some(Vocabulary::public_english_first(options.vocab_words)?),
        VocabularySource::FittedToTrainingSplitUnaccounted => None,
    };
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header = reader.headers().map_err(|e| csv_error(path, &e))?.clone();
    let columns = find_columns(path, &header, &[&options.text_column, &options.label_column])?;
    let (text_index, label_index) = (columns[0], columns[1]);
    let threshold = test_threshold(options.test_fraction);

    // Every distinct token gets an interned index so texts are tokenized once.
    let mut interned: HashMap<String, u32> = HashMap::new();
    let mut token_texts: Vec<Vec<u32>> = Vec::new();
    let mut labels: Vec<f32> = Vec::new();
    let mut is_test: Vec<bool> = Vec::new();
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
        is_test.push(split_hash(text, options.seed) < threshold);
    }

    let n = token_texts.len();
    let n_test = is_test.iter().filter(|&&test| test).count();
    if n_test == 0 || n_test == n {
        return Err(Error::format(
            path,
            format!("line {}", rows + 1),
            format!(
                "{n} rows with text ({skipped_empty} empty skipped) hash into {n_test} test and {} training \
                 rows with test fraction {}: both splits need at least one",
                n - n_test,
                options.test_fraction
            ),
        ));
    }

    let vocabulary = match public_vocabulary {
        Some(vocabulary) => vocabulary,
        None => {
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
            Vocabulary::from_counts(train_counts, options.vocab_words)
        }
    };
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
        vocabulary_provenance: vocabulary.provenance(),
        vocabulary,
        split_provenance: Provenance::Public,
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

/// The split hash of a row's (trimmed) text: FNV-1a 64 over `seed`'s 8 little-endian bytes and then
/// the text's UTF-8 bytes, followed by SplitMix64's finaliser. A row is in the test split when this
/// is below `test_fraction × 2⁶⁴`.
pub fn split_hash(text: &str, seed: u64) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let fnv = seed
        .to_le_bytes()
        .iter()
        .chain(text.as_bytes())
        .fold(FNV_OFFSET_BASIS, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME));
    // FNV-1a's last multiply moves the last bytes into the high bits only weakly; the finaliser
    // makes every input bit affect the comparison with the threshold.
    let mut z = fnv;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `test_fraction × 2⁶⁴` as an integer (exact in f64 up to rounding of the fraction itself).
fn test_threshold(test_fraction: f64) -> u64 {
    // A fraction in (0, 1) times 2⁶⁴ is below 2⁶⁴, and `as` saturates anyway.
    (test_fraction * 18_446_744_073_709_551_616.0) as u64
}
