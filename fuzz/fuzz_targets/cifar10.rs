//! Arbitrary bytes into the CIFAR-10 batch parser (raw or gzip).
#![no_main]

use std::path::Path;

use dp_runtime::data::cifar10;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((inputs, labels)) = cifar10::parse_batch_bytes(Path::new("fuzz.bin"), data) {
        assert_eq!(inputs.len(), labels.len() * cifar10::IMAGE_LEN);
        assert!(!labels.is_empty());
        assert!(labels.iter().all(|&l| (0.0..10.0).contains(&l)));
    }
});
