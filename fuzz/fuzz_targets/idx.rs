//! Arbitrary bytes into the IDX reader and its image and label views (raw or gzip).
#![no_main]

use std::path::Path;

use dp_runtime::data::idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.idx");
    if let Ok(array) = idx::parse_bytes(path, data) {
        let count: usize = array.dims.iter().product();
        assert_eq!(count, array.data.len(), "dimensions and element count disagree");
    }
    if let Ok(images) = idx::parse_images_bytes(path, data) {
        assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
        assert!(images.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
    }
    if let Ok(labels) = idx::parse_labels_bytes(path, data, 10) {
        assert!(labels.iter().all(|&l| (0.0..10.0).contains(&l)));
    }
});
