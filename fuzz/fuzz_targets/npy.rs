//! Arbitrary bytes into the `.npy` reader; what parses must write back and parse to the same array,
//! and the dataset conversions must answer with a value or an error.
#![no_main]

use std::path::Path;

use dp_runtime::data::npy::{self, LabelKind, NpyData};
use libfuzzer_sys::fuzz_target;

/// Equality that treats two NaNs with the same bits as equal.
fn same_bits(a: &NpyData, b: &NpyData) -> bool {
    match (a, b) {
        (NpyData::F32(x), NpyData::F32(y)) => x.iter().map(|v| v.to_bits()).eq(y.iter().map(|v| v.to_bits())),
        (NpyData::F64(x), NpyData::F64(y)) => x.iter().map(|v| v.to_bits()).eq(y.iter().map(|v| v.to_bits())),
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.npy");
    let Ok(array) = npy::parse_bytes(path, data) else { return };
    let count = array.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    assert_eq!(count, Some(array.data.len()));
    let back = npy::parse_bytes(path, &array.to_bytes()).expect("a written array parses");
    assert_eq!(back.shape, array.shape);
    assert!(same_bits(&back.data, &array.data), "round trip changed the data");

    let _ = npy::labels(&array, path, LabelKind::Classes(10));
    let _ = npy::labels(&array, path, LabelKind::Binary);
    // Zero-sized trailing dimensions allow any leading one; keep the label array small.
    if let Some((&n, example)) = array.shape.split_first().filter(|(&n, _)| n <= 1 << 12) {
        let labels = npy::NpyArray::new(vec![n], NpyData::I64(vec![0; n])).expect("shape holds n");
        if let Ok(dense) = npy::dense_dataset(&array, path, &labels, path, example, LabelKind::Classes(1)) {
            assert!(dense.inputs.iter().all(|x| x.is_finite()));
        }
        if let [len] = example {
            let _ = npy::token_dataset(&array, path, &labels, path, *len, 100, LabelKind::Classes(1));
        }
    }
});
