//! Arbitrary bytes into the text CSV loader (small vocabulary and length so the fuzzer runs fast).
#![no_main]

use std::path::Path;

use dp_runtime::data::text::{self, Side, TextOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else { return };
    let options = TextOptions {
        vocab_words: 20,
        max_len: 1 + usize::from(choice % 16),
        test_fraction: 0.5,
        seed: u64::from(choice),
        pad: if choice & 0x40 == 0 { Side::Pre } else { Side::Post },
        truncate: if choice & 0x80 == 0 { Side::Pre } else { Side::Post },
        ..TextOptions::default()
    };
    if let Ok(corpus) = text::parse_csv_bytes(Path::new("fuzz.csv"), rest, &options) {
        let vocab = corpus.vocabulary.len();
        assert!(vocab <= 24);
        for data in [&corpus.train, &corpus.test] {
            assert!(!data.is_empty());
            assert_eq!(data.inputs.len(), data.len() * options.max_len);
            assert!(data.inputs.iter().all(|&id| (id as usize) < vocab && id != text::UNUSED));
        }
        assert_eq!(corpus.train.len() + corpus.test.len() + corpus.skipped_empty, corpus.rows);
    }
});
