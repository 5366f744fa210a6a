//! Arbitrary bytes into the Adult loader: the first byte chooses where the input splits into a
//! training file and a test file, so both the fitting and the applying path see arbitrary data.
#![no_main]

use std::path::Path;

use dp_runtime::data::adult;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let split = usize::from(cut) * rest.len() / 256;
    let (train, test) = rest.split_at(split);
    // The same bytes as both files, then the two halves.
    for (train, test) in [(rest, rest), (train, test)] {
        if let Ok((train, test)) =
            adult::load_bytes(Path::new("train.csv"), train, Path::new("test.csv"), test)
        {
            assert_eq!(train.example_shape, test.example_shape);
            assert!(train.inputs.iter().chain(&test.inputs).all(|x| x.is_finite()));
            assert!(train.labels.iter().chain(&test.labels).all(|&l| l == 0.0 || l == 1.0));
            assert!(!train.is_empty() && !test.is_empty());
        }
    }
});
