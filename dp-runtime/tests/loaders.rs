//! The data loaders on small files written here (every bad-input case included) and on the real
//! files shipped in `data/`; no test reads anything outside the repository.

use std::io::Write;
use std::path::{Path, PathBuf};

use dp_runtime::data::npy::{self, LabelKind, NpyArray, NpyData};
use dp_runtime::data::tabular::{
    self, BinaryLabel, ColumnKind, FeatureColumn, NumericScale, PublicEncoding, TabularEncoder, TabularSchema,
};
use dp_runtime::data::text::{self, Side, TextOptions, Vocabulary, VocabularySource};
use dp_runtime::data::{adult, cifar10, idx, mnist, Provenance};
use dp_runtime::Error;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A fresh folder under the system temp dir, removed when the guard drops (also when a test fails).
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dp-loaders-{name}-"))
        .tempdir()
        .expect("the temporary folder is writable")
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// An IDX file: magic with `type_code`, big-endian `dims`, then `body` as given.
fn idx_bytes(type_code: u8, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, type_code, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// `count` 28×28 images whose pixel `k` of image `i` is `(i + k) % 256`.
fn mnist_images(count: u32) -> Vec<u8> {
    let body: Vec<u8> =
        (0..count as usize).flat_map(|i| (0..784).map(move |k| ((i + k) % 256) as u8)).collect();
    idx_bytes(0x08, &[count, 28, 28], &body)
}

/// Asserts a format error naming `file` at a location containing `location`, whose message
/// contains `message`; returns the whole text.
#[track_caller]
fn assert_format<T: std::fmt::Debug>(
    result: dp_runtime::Result<T>,
    file: &Path,
    location: &str,
    message: &str,
) -> String {
    match result {
        Err(e @ Error::Format { .. }) => {
            let Error::Format { path, location: loc, message: msg } = &e else { unreachable!() };
            assert_eq!(path, file, "wrong path in {e}");
            assert!(loc.contains(location), "location '{loc}' lacks '{location}' in: {e}");
            assert!(msg.contains(message), "message '{msg}' lacks '{message}' in: {e}");
            let text = e.to_string();
            assert!(text.contains(&file.display().to_string()), "{text}");
            text
        }
        other => panic!("expected a format error at {location} ({message}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// IDX and MNIST

#[test]
fn idx_reads_every_element_type_raw_and_gzip() {
    let tmp = temp_dir("idx-types");
    let dir = tmp.path();
    let cases: Vec<(u8, Vec<u8>, idx::IdxData)> = vec![
        (0x08, vec![0, 7, 255, 1, 2, 3], idx::IdxData::U8(vec![0, 7, 255, 1, 2, 3])),
        (0x09, vec![0, 7, 255, 128, 2, 3], idx::IdxData::I8(vec![0, 7, -1, -128, 2, 3])),
        (
            0x0B,
            [1i16, -2, 300, i16::MIN, 5, 6].iter().flat_map(|x| x.to_be_bytes()).collect(),
            idx::IdxData::I16(vec![1, -2, 300, i16::MIN, 5, 6]),
        ),
        (
            0x0C,
            [1i32, -2, 70_000, i32::MAX, 5, 6].iter().flat_map(|x| x.to_be_bytes()).collect(),
            idx::IdxData::I32(vec![1, -2, 70_000, i32::MAX, 5, 6]),
        ),
        (
            0x0D,
            [0.5f32, -1.25, 3e7, 0.0, 1.0, 2.0].iter().flat_map(|x| x.to_be_bytes()).collect(),
            idx::IdxData::F32(vec![0.5, -1.25, 3e7, 0.0, 1.0, 2.0]),
        ),
        (
            0x0E,
            [0.1f64, -2.5, 1e300, 0.0, 1.0, 2.0].iter().flat_map(|x| x.to_be_bytes()).collect(),
            idx::IdxData::F64(vec![0.1, -2.5, 1e300, 0.0, 1.0, 2.0]),
        ),
    ];
    for (code, body, expected) in cases {
        let bytes = idx_bytes(code, &[2, 3], &body);
        for (name, content) in
            [(format!("t{code}.idx"), bytes.clone()), (format!("t{code}.idx.gz"), gzip(&bytes))]
        {
            let path = write_file(dir, &name, &content);
            let array = idx::read(&path).unwrap();
            assert_eq!(array.dims, vec![2, 3]);
            assert_eq!(array.data, expected, "type 0x{code:02x} from {name}");
        }
    }
}

#[test]
fn idx_images_are_scaled_and_labels_are_class_indices() {
    let tmp = temp_dir("idx-views");
    let dir = tmp.path();
    let images = write_file(dir, "img", &idx_bytes(0x08, &[2, 1, 2], &[0, 255, 51, 102]));
    let read = idx::read_images(&images).unwrap();
    assert_eq!((read.count, read.rows, read.cols), (2, 1, 2));
    assert_eq!(read.pixels, vec![0.0, 1.0, 0.2, 0.4]);
    let labels = write_file(dir, "lab", &idx_bytes(0x08, &[3], &[9, 0, 4]));
    assert_eq!(idx::read_labels(&labels, 10).unwrap(), vec![9.0, 0.0, 4.0]);
}

#[test]
fn idx_bad_inputs_name_file_and_byte() {
    let tmp = temp_dir("idx-bad");
    let dir = tmp.path();
    let p = write_file(dir, "magic.idx", &[0x1a, 0, 8, 1, 0, 0, 0, 1, 5]);
    assert_format(idx::read(&p), &p, "byte 0", "wrong magic number");
    let p = write_file(dir, "type.idx", &idx_bytes(0x0A, &[1], &[5]));
    assert_format(idx::read(&p), &p, "byte 2", "unknown IDX element type 0x0a");
    let p = write_file(dir, "short.idx", &[0, 0]);
    assert_format(idx::read(&p), &p, "byte 0", "truncated");
    let p = write_file(dir, "header.idx", &[0, 0, 8, 3, 0, 0, 0, 2]);
    assert_format(idx::read(&p), &p, "byte 8", "truncated header");
    let p = write_file(dir, "data.idx", &idx_bytes(0x08, &[2, 28, 28], &[0; 1000]));
    assert_format(idx::read(&p), &p, "byte 1016", "truncated: dimensions [2, 28, 28]");
    let p = write_file(dir, "data16.idx", &idx_bytes(0x0B, &[3], &[0; 5]));
    assert_format(idx::read(&p), &p, "byte 13", "need 14 bytes");
    let p = write_file(dir, "trailing.idx", &idx_bytes(0x08, &[2], &[1, 2, 3]));
    assert_format(idx::read(&p), &p, "byte 10", "1 unexpected bytes");
    let p = write_file(dir, "zero.idx", &[0, 0, 8, 0]);
    assert_format(idx::read(&p), &p, "byte 3", "at least one dimension");
    let huge = u32::MAX;
    let p = write_file(dir, "overflow.idx", &idx_bytes(0x0E, &[huge, huge, huge], &[]));
    assert_format(idx::read(&p), &p, "byte 4", "overflow");
    let mut body = Vec::new();
    for x in [1.0f32, f32::NAN, 2.0] {
        body.extend_from_slice(&x.to_be_bytes());
    }
    let p = write_file(dir, "nan.idx", &idx_bytes(0x0D, &[3], &body));
    assert_format(idx::read(&p), &p, "byte 12", "element 1 is NaN");
    let body: Vec<u8> = [1.0f64, 2.0, f64::INFINITY].iter().flat_map(|x| x.to_be_bytes()).collect();
    let p = write_file(dir, "inf.idx", &idx_bytes(0x0E, &[3], &body));
    assert_format(idx::read(&p), &p, "byte 24", "element 2 is inf");
    let p = write_file(dir, "labels.idx", &idx_bytes(0x08, &[4], &[1, 2, 10, 3]));
    assert_format(idx::read_labels(&p, 10), &p, "byte 10", "label 10 of example 2 is out of range 0..10");
    let p = write_file(dir, "nolabels.idx", &idx_bytes(0x08, &[0], &[]));
    assert_format(idx::read_labels(&p, 10), &p, "byte 4", "no labels");
    let p = write_file(dir, "noimages.idx", &idx_bytes(0x08, &[0, 28, 28], &[]));
    assert_format(idx::read_images(&p), &p, "byte 4", "no images");
    let p = write_file(dir, "i32images.idx", &idx_bytes(0x0C, &[1, 1, 1], &[0, 0, 0, 1]));
    assert_format(idx::read_images(&p), &p, "byte 2", "images must be u8");
    let p = write_file(dir, "2dimages.idx", &idx_bytes(0x08, &[1, 4], &[0; 4]));
    assert_format(idx::read_images(&p), &p, "byte 3", "3 dimensions");
    let mut gz = gzip(&idx_bytes(0x08, &[100], &[7; 100]));
    gz.truncate(gz.len() - 6);
    let p = write_file(dir, "cut.idx.gz", &gz);
    assert_format(idx::read(&p), &p, "gzip stream", "cannot decompress");
    let missing = dir.join("absent.idx");
    match idx::read(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an io error, got {other:?}"),
    }
}

#[test]
fn mnist_loads_a_folder_of_small_files() {
    let tmp = temp_dir("mnist-small");
    let dir = tmp.path();
    write_file(dir, "train-images-idx3-ubyte.gz", &gzip(&mnist_images(3)));
    write_file(dir, "train-labels-idx1-ubyte", &idx_bytes(0x08, &[3], &[5, 0, 9]));
    write_file(dir, "t10k-images-idx3-ubyte", &mnist_images(2));
    write_file(dir, "t10k-labels-idx1-ubyte.gz", &gzip(&idx_bytes(0x08, &[2], &[1, 2])));
    let (train, test) = mnist::load(dir).unwrap();
    assert_eq!((train.len(), test.len()), (3, 2));
    assert_eq!(train.example_shape, vec![1, 28, 28]);
    assert_eq!(train.labels, vec![5.0, 0.0, 9.0]);
    assert_eq!(test.labels, vec![1.0, 2.0]);
    // Image 2, pixel 300 holds (2 + 300) % 256 = 46.
    assert_eq!(train.input(2)[300], 46.0 / 255.0);

    // As many labels as images, and 28×28 images.
    let p = write_file(dir, "t10k-labels-idx1-ubyte", &idx_bytes(0x08, &[3], &[1, 2, 3]));
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_format(mnist::load(dir), &p, "byte 4", "3 labels but 2 images");
    let p = write_file(dir, "t10k-images-idx3-ubyte", &idx_bytes(0x08, &[3, 2, 2], &[0; 12]));
    assert_format(mnist::load(dir), &p, "byte 8", "28×28, found 2×2");
    std::fs::remove_file(dir.join("train-labels-idx1-ubyte")).unwrap();
    match mnist::load(dir) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("train-labels-idx1-ubyte.gz"), "{e}"),
        other => panic!("expected a missing-file error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10

/// `count` records whose label is `(first_label + i) % 10` and pixel `k` is `(i * 7 + k) % 256`.
fn cifar_records(count: usize, first_label: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        out.push(((first_label + i) % 10) as u8);
        out.extend((0..3072).map(|k| ((i * 7 + k) % 256) as u8));
    }
    out
}

#[test]
fn cifar_loads_batches_in_nchw_order() {
    let tmp = temp_dir("cifar");
    let dir = tmp.path();
    let folder = dir.join(cifar10::ARCHIVE_FOLDER);
    std::fs::create_dir_all(&folder).unwrap();
    for (b, name) in cifar10::TRAIN_FILES.iter().enumerate() {
        write_file(&folder, name, &cifar_records(2, 2 * b));
    }
    write_file(&folder, "test_batch.bin.gz", &gzip(&cifar_records(3, 7)));
    let (train, test) = cifar10::load(dir).unwrap();
    assert_eq!((train.len(), test.len()), (10, 3));
    assert_eq!(train.example_shape, vec![3, 32, 32]);
    assert_eq!(train.labels, (0..10).map(|l| l as f32).collect::<Vec<_>>());
    assert_eq!(test.labels, vec![7.0, 8.0, 9.0]);
    // Record 1 of a batch: channel 1 (green), row 2, column 5 is byte 1024 + 2·32 + 5 of its image.
    let k = 1024 + 2 * 32 + 5;
    assert_eq!(test.input(1)[k], ((7 + k) % 256) as f32 / 255.0);

    let mut normalised = train.clone();
    let norm = cifar10::Normalization::fit(&train).unwrap();
    norm.apply(&mut normalised).unwrap();
    for c in 0..3 {
        let values: Vec<f64> = normalised
            .inputs
            .chunks_exact(3072)
            .flat_map(|img| img[c * 1024..(c + 1) * 1024].iter().map(|&x| f64::from(x)))
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "channel {c}: mean {mean}, var {var}");
    }
    let bad = cifar10::Normalization { mean: [0.0; 3], std: [1.0, 0.0, 1.0] };
    assert!(matches!(bad.apply(&mut normalised), Err(Error::InvalidArgument { .. })));
}

#[test]
fn cifar_bad_batches_name_file_and_byte() {
    let tmp = temp_dir("cifar-bad");
    let dir = tmp.path();
    let mut records = cifar_records(3, 0);
    records.truncate(3073 * 2 + 100);
    let p = write_file(dir, "cut.bin", &records);
    assert_format(cifar10::read_batch(&p), &p, "byte 6146", "truncated record");
    let mut records = cifar_records(3, 0);
    records[3073 * 2] = 10;
    let p = write_file(dir, "label.bin", &records);
    assert_format(cifar10::read_batch(&p), &p, "byte 6146", "label 10 of record 2 is out of range 0..10");
    let p = write_file(dir, "empty.bin", &[]);
    assert_format(cifar10::read_batch(&p), &p, "byte 0", "empty batch");
    match cifar10::load(dir) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("data_batch_1.bin"), "{e}"),
        other => panic!("expected a missing-file error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Adult and schema CSV

const ADULT_HEADER: &str = "age,workclass,fnlwgt,education,education-num,marital-status,occupation,\
relationship,race,sex,capital-gain,capital-loss,hours-per-week,native-country,income";

fn adult_row(age: u32, workclass: &str, country: &str, hours: u32, income: &str) -> String {
    format!(
        "{age},{workclass},1000,Bachelors,13,Never-married,Sales,Husband,White,Male,0,0,{hours},{country},{income}"
    )
}

/// Where each column's features start in Adult's 104: the 5 numeric columns and the 8 published
/// category lists in CSV order.
const AGE: usize = 0;
const WORKCLASS: usize = 1;
const EDUCATION: usize = 9;
const EDUCATION_NUM: usize = 25;
const MARITAL: usize = 26;
const OCCUPATION: usize = 33;
const RELATIONSHIP: usize = 47;
const RACE: usize = 53;
const SEX: usize = 58;
const CAPITAL_GAIN: usize = 60;
const CAPITAL_LOSS: usize = 61;
const HOURS: usize = 62;
const COUNTRY: usize = 63;

/// The features `adult_row` gives, computed here from the published lists and bounds.
fn expected_adult_features(
    age: f64,
    workclass: Option<usize>,
    country: Option<usize>,
    hours: f64,
) -> Vec<f32> {
    let mut features = vec![0f32; adult::FEATURES];
    features[AGE] = ((age.clamp(17.0, 90.0) - 17.0) / (90.0 - 17.0)) as f32;
    if let Some(w) = workclass {
        features[WORKCLASS + w] = 1.0;
    }
    features[EDUCATION] = 1.0; // Bachelors, first in adult.names
    features[EDUCATION_NUM] = ((13.0 - 1.0) / (16.0 - 1.0)) as f32;
    features[MARITAL + 2] = 1.0; // Never-married
    features[OCCUPATION + 3] = 1.0; // Sales
    features[RELATIONSHIP + 2] = 1.0; // Husband
    features[RACE] = 1.0; // White
    features[SEX + 1] = 1.0; // Male
    features[HOURS] = ((hours.clamp(1.0, 99.0) - 1.0) / (99.0 - 1.0)) as f32;
    if let Some(c) = country {
        features[COUNTRY + c] = 1.0;
    }
    features
}

#[test]
fn adult_public_encoding_fixes_categories_and_bounds() {
    let tmp = temp_dir("adult");
    let dir = tmp.path();
    let train = [
        ADULT_HEADER.to_string(),
        adult_row(20, "Private", "Peru", 40, "<=50K"),
        adult_row(40, "State-gov", "Cuba", 40, ">50K"),
        adult_row(60, "?", "Peru", 40, "<=50K"),
    ]
    .join("\n");
    let test = [
        ADULT_HEADER.to_string(),
        adult_row(50, "Federal-gov", "Holand-Netherlands", 99, ">50K."),
        adult_row(40, " Private", "?", 40, "<=50K."),
        adult_row(10, "Martian-gov", "Atlantis", 120, "<=50K"),
    ]
    .join("\n")
    .replacen(",0,0,99,", ",5000,1e9,99,", 1);
    let train_path = write_file(dir, "train.csv.gz", &gzip(train.as_bytes()));
    let test_path = write_file(dir, "test.csv", test.as_bytes());
    let splits = adult::load_splits(&train_path, &test_path).unwrap();
    let (train, test) = (&splits.train, &splits.test);
    // Always the 104 published features, whatever the files hold.
    assert_eq!(train.example_shape, vec![adult::FEATURES]);
    assert_eq!((train.len(), test.len()), (3, 3));
    assert_eq!(train.labels, vec![0.0, 1.0, 0.0]);
    assert_eq!(test.labels, vec![1.0, 0.0, 0.0]);
    // Peru is 39th and Cuba 13th in adult.names' country list; State-gov is 6th of workclass.
    assert_eq!(train.input(0), &expected_adult_features(20.0, Some(0), Some(38), 40.0)[..]);
    assert_eq!(train.input(1), &expected_adult_features(40.0, Some(5), Some(12), 40.0)[..]);
    assert_eq!(train.input(2), &expected_adult_features(60.0, None, Some(38), 40.0)[..], "'?' gives zeros");
    // Capital gain 5000 in thousands of dollars; capital loss 1e9 clipped to 99,999.
    let mut expected = expected_adult_features(50.0, Some(3), Some(40), 99.0);
    expected[CAPITAL_GAIN] = 5.0;
    expected[CAPITAL_LOSS] = 99.999;
    assert_eq!(test.input(0), &expected[..]);
    assert_eq!(
        test.input(1),
        &expected_adult_features(40.0, Some(0), None, 40.0)[..],
        "whitespace is trimmed"
    );
    // Age 10 and 120 hours are clipped to 17 and 99; unlisted categories give all-zero blocks.
    assert_eq!(test.input(2), &expected_adult_features(10.0, None, None, 120.0)[..]);
    assert_eq!((test.input(2)[AGE], test.input(2)[HOURS]), (0.0, 1.0));

    assert_eq!(splits.train_counts, tabular::EncodeCounts { missing: 1, unknown: 0, clipped: 0 });
    assert_eq!(splits.test_counts, tabular::EncodeCounts { missing: 1, unknown: 2, clipped: 3 });
    assert_eq!(splits.provenance, Provenance::Public);
    let encoder = adult::encoder().unwrap();
    assert_eq!(encoder.provenance(), Provenance::Public);
    let names = encoder.feature_names();
    assert_eq!(names.len(), adult::FEATURES);
    assert_eq!(
        [&names[AGE], &names[WORKCLASS], &names[EDUCATION_NUM], &names[CAPITAL_LOSS], &names[COUNTRY + 40]],
        ["age", "workclass=Private", "education-num", "capital-loss", "native-country=Holand-Netherlands"]
    );
    assert_eq!((adult::load(&train_path, &test_path).unwrap()), (splits.train.clone(), splits.test.clone()));
}

#[test]
fn schema_csv_handles_another_file_and_column_order() {
    let tmp = temp_dir("schema");
    let dir = tmp.path();
    let schema = TabularSchema {
        features: vec![
            FeatureColumn { name: "colour".into(), kind: ColumnKind::Categorical },
            FeatureColumn { name: "size".into(), kind: ColumnKind::Numeric },
        ],
        label: BinaryLabel {
            column: "ok".into(),
            positive: "yes".into(),
            negative: "no".into(),
            allow_trailing_period: false,
        },
        missing: "NA".into(),
    };
    let p = write_file(dir, "t.csv", b"ok,unused,size,colour\nyes,x,3,red\nno,y,3,blue\nno,z,3,NA\n");
    let table = tabular::read_table(&p, &schema).unwrap();

    // The public encoder: the caller's list (in its order) and bounds, whatever the file holds.
    let public = |colours: &[&str], scale: NumericScale| {
        TabularEncoder::public(
            &schema,
            vec![
                PublicEncoding::OneHot(colours.iter().map(|c| c.to_string()).collect()),
                PublicEncoding::Scaled(scale),
            ],
        )
    };
    let encoder = public(&["red", "green"], NumericScale::unit_interval(1.0, 5.0)).unwrap();
    assert_eq!(encoder.provenance(), Provenance::Public);
    let (data, counts) = encoder.encode(&table).unwrap();
    assert_eq!(encoder.feature_names(), ["colour=red", "colour=green", "size"]);
    assert_eq!(data.inputs, vec![1.0, 0.0, 0.5, 0.0, 0.0, 0.5, 0.0, 0.0, 0.5]);
    assert_eq!(counts, tabular::EncodeCounts { missing: 1, unknown: 1, clipped: 0 });
    let half = NumericScale { low: 0.0, high: 5.0, unit: 2.0 };
    let (data, counts) = public(&["blue"], half).unwrap().encode(&table).unwrap();
    assert_eq!(data.inputs, vec![0.0, 1.5, 1.0, 1.5, 0.0, 1.5]);
    assert_eq!(counts, tabular::EncodeCounts { missing: 1, unknown: 1, clipped: 0 });
    let (data, counts) =
        public(&["blue"], NumericScale::unit_interval(4.0, 8.0)).unwrap().encode(&table).unwrap();
    assert_eq!((data.inputs[1], counts.clipped), (0.0, 3));
    for (colours, scale, message) in [
        (&["red", "red"][..], NumericScale::unit_interval(0.0, 1.0), "'red' is listed twice"),
        (&["NA"][..], NumericScale::unit_interval(0.0, 1.0), "the missing marker"),
        (&[" red"][..], NumericScale::unit_interval(0.0, 1.0), "surrounding whitespace"),
        (&[][..], NumericScale::unit_interval(0.0, 1.0), "the category list is empty"),
        (&["red"][..], NumericScale::unit_interval(2.0, 2.0), "low < high"),
        (&["red"][..], NumericScale::unit_interval(0.0, f64::INFINITY), "must be finite"),
        (&["red"][..], NumericScale { low: 0.0, high: 1.0, unit: 0.0 }, "unit > 0"),
    ] {
        match public(colours, scale) {
            Err(e @ Error::InvalidArgument { .. }) => assert!(e.to_string().contains(message), "{e}"),
            other => panic!("{colours:?} {scale:?}: expected an error with '{message}', got {other:?}"),
        }
    }
    for encodings in [
        vec![PublicEncoding::OneHot(vec!["red".into()])],
        vec![
            PublicEncoding::Scaled(NumericScale::unit_interval(0.0, 1.0)),
            PublicEncoding::OneHot(vec!["red".into()]),
        ],
    ] {
        assert!(matches!(TabularEncoder::public(&schema, encodings), Err(Error::InvalidArgument { .. })));
    }

    // The encoder fitted to the (private) table: its categories and statistics, and it says so.
    let encoder = TabularEncoder::fit_to_private_data_unaccounted(&schema, &table).unwrap();
    assert_eq!(encoder.provenance(), Provenance::FittedToPrivateDataUnaccounted);
    assert!(!encoder.provenance().is_public());
    let (data, counts) = encoder.encode(&table).unwrap();
    assert_eq!(encoder.feature_names(), ["colour=blue", "colour=red", "size"]);
    // A constant column has std 1: (3 − 3) / 1 = 0, never NaN.
    assert_eq!(data.inputs, vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(data.labels, vec![1.0, 0.0, 0.0]);
    assert_eq!(counts.missing, 1);
    let p = write_file(dir, "dot.csv", b"ok,size,colour\nyes.,1,red\n");
    assert_format(tabular::read_table(&p, &schema), &p, "line 2, column 'ok'", "label 'yes.'");
}

#[test]
fn adult_bad_csv_names_file_and_line() {
    let tmp = temp_dir("adult-bad");
    let dir = tmp.path();
    let good = write_file(
        dir,
        "good.csv",
        format!("{ADULT_HEADER}\n{}\n", adult_row(30, "Private", "Peru", 40, ">50K")).as_bytes(),
    );
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("noheader.csv", adult_row(30, "Private", "Peru", 40, ">50K"), "line 1", "no column 'age'"),
        ("empty.csv", format!("{ADULT_HEADER}\n"), "line 2", "dataset is empty"),
        ("nothing.csv", String::new(), "line 1", "no column 'age'"),
        (
            "ragged.csv",
            format!("{ADULT_HEADER}\n{}\n{}\n", adult_row(30, "Private", "Peru", 40, ">50K"), "30,Private,1"),
            "line 3",
            "ragged row: 3 fields, but the header has 15",
        ),
        (
            "label.csv",
            format!("{ADULT_HEADER}\n{}\n", adult_row(30, "Private", "Peru", 40, "maybe")),
            "line 2, column 'income'",
            "label 'maybe' is neither '>50K' nor '<=50K'",
        ),
        (
            "nan.csv",
            format!(
                "{ADULT_HEADER}\n{}\n{}\n",
                adult_row(30, "Private", "Peru", 40, ">50K"),
                adult_row(30, "Private", "Peru", 40, ">50K").replacen("30", "NaN", 1)
            ),
            "line 3, column 'age'",
            "'NaN' is not a finite number",
        ),
        (
            "text.csv",
            format!(
                "{ADULT_HEADER}\n{}\n",
                adult_row(30, "Private", "Peru", 40, ">50K").replace(",40,", ",forty,")
            ),
            "line 2, column 'hours-per-week'",
            "'forty' is not a number",
        ),
        (
            "missing.csv",
            format!(
                "{ADULT_HEADER}\n{}\n",
                adult_row(30, "Private", "Peru", 40, ">50K").replacen("30", "?", 1)
            ),
            "line 2, column 'age'",
            "missing value '?' in a numeric column",
        ),
        (
            "twice.csv",
            format!("{ADULT_HEADER},age\n{},1\n", adult_row(30, "Private", "Peru", 40, ">50K")),
            "line 1",
            "names column 'age' twice",
        ),
        ("short.csv", format!("{ADULT_HEADER}\n30,Priv\u{0}"), "line 2", "ragged row"),
    ];
    for (name, content, location, message) in cases {
        let p = write_file(dir, name, content.as_bytes());
        assert_format(adult::load(&p, &good), &p, location, message);
        assert_format(adult::load(&good, &p), &p, location, message);
    }
    let row = adult_row(30, "Priv", "Peru", 40, ">50K").into_bytes();
    let row = [&row[..7], b"\xff\xfe", &row[7..]].concat();
    let p = write_file(dir, "bytes.csv", &[ADULT_HEADER.as_bytes(), b"\n", &row[..]].concat());
    assert_format(adult::load(&p, &good), &p, "line 2", "field 2 is not valid UTF-8");
    // Huge numbers are clipped by the public bounds; a standardisation fitted to them overflows,
    // which is an error, not an infinity.
    let big = adult_row(30, "Private", "Peru", 40, ">50K").replacen("30", "1e300", 1);
    let small = adult_row(30, "Private", "Peru", 40, ">50K").replacen("30", "-1e300", 1);
    let p = write_file(dir, "huge.csv", format!("{ADULT_HEADER}\n{big}\n{small}\n").as_bytes());
    let (huge, _) = adult::load(&p, &p).unwrap();
    assert_eq!((huge.input(0)[0], huge.input(1)[0]), (1.0, 0.0));
    let table = tabular::read_table(&p, &adult::schema()).unwrap();
    let fitted = TabularEncoder::fit_to_private_data_unaccounted(&adult::schema(), &table).unwrap();
    assert_format(fitted.encode(&table), &p, "feature 'age'", "overflows f32");
}

// ---------------------------------------------------------------------------------------------
// Text

#[test]
fn tokenizer_lowercases_and_keeps_inner_apostrophes() {
    let tokens: Vec<String> = text::tokenize("It's a T-shirt, 'really' GREAT!! don’t 42x ''").collect();
    assert_eq!(tokens, ["it's", "a", "t", "shirt", "really", "great", "don't", "42x"]);
    let vocab = Vocabulary::fit_to_private_texts_unaccounted(["b a a", "c b a", "d"], 2);
    assert_eq!(vocab.provenance(), Provenance::FittedToPrivateDataUnaccounted);
    assert_eq!(vocab.len(), 6);
    assert_eq!(
        (vocab.id("a"), vocab.id("b"), vocab.id("c"), vocab.id("zzz")),
        (4, 5, text::UNKNOWN, text::UNKNOWN)
    );
    assert_eq!(vocab.word(4), Some("a"));
    assert_eq!(vocab.word(text::UNKNOWN), None);
    assert_eq!(vocab.encode("A c"), vec![text::START, 4, text::UNKNOWN]);
    // Ties (c and d, once each) by byte order.
    assert_eq!(Vocabulary::fit_to_private_texts_unaccounted(["d c"], 1).word(4), Some("c"));
}

#[test]
fn padding_and_truncation_sides() {
    let ids = [1, 10, 11, 12];
    let mut cases = Vec::new();
    for (pad, truncate, len) in [
        (Side::Pre, Side::Pre, 6),
        (Side::Post, Side::Post, 6),
        (Side::Pre, Side::Pre, 3),
        (Side::Post, Side::Post, 3),
    ] {
        let options = TextOptions { max_len: len, pad, truncate, ..TextOptions::default() };
        let mut out = Vec::new();
        text::fit_length(&ids, &options, &mut out);
        cases.push(out);
    }
    assert_eq!(cases[0], vec![0, 0, 1, 10, 11, 12]);
    assert_eq!(cases[1], vec![1, 10, 11, 12, 0, 0]);
    assert_eq!(cases[2], vec![10, 11, 12]);
    assert_eq!(cases[3], vec![1, 10, 11]);
}

#[test]
fn public_vocabulary_is_ranked_tokens_of_our_tokenizer() {
    let vocabulary = Vocabulary::public_english();
    assert_eq!(vocabulary.provenance(), Provenance::Public);
    assert_eq!((vocabulary.len(), vocabulary.words().len()), (10_004, text::PUBLIC_ENGLISH_WORDS));
    let file = std::fs::read_to_string(repo_file("../data/vocab/english_10000.txt")).unwrap();
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(lines, vocabulary.words(), "the embedded list is the shipped file");
    assert!(file.ends_with('\n') && !file.contains('\r'));
    // Every word is one token of our tokenizer, spelled as the tokenizer gives it, and distinct.
    for (rank, word) in lines.iter().enumerate() {
        let tokens: Vec<String> = text::tokenize(word).collect();
        assert_eq!(tokens, [*word], "line {}", rank + 1);
        assert_eq!(vocabulary.id(word), rank as u32 + text::RESERVED, "'{word}' is listed twice");
    }
    assert_eq!(&lines[..6], ["the", "to", "and", "of", "a", "in"]);
    assert_eq!(
        vocabulary.encode("The dress, it's LOVELY"),
        [text::START, 4, vocabulary.id("dress"), vocabulary.id("it's"), vocabulary.id("lovely")]
    );
    assert!(["dress", "it's", "lovely"].iter().all(|w| vocabulary.id(w) != text::UNKNOWN));
    let first = Vocabulary::public_english_first(3).unwrap();
    assert_eq!(
        (first.words(), first.provenance()),
        (&["the".to_string(), "to".into(), "and".into()][..], Provenance::Public)
    );
    match Vocabulary::public_english_first(10_001) {
        Err(e @ Error::InvalidArgument { .. }) => assert!(e.to_string().contains("vocab_words"), "{e}"),
        other => panic!("expected an error for 10,001 words, got {other:?}"),
    }
}

#[test]
fn split_hash_is_fnv1a_then_splitmix_of_the_row_alone() {
    // Values computed independently (Python) from the documented definition.
    assert_eq!(text::split_hash("", 0), 0x813f_0174_a236_7c13);
    assert_eq!(
        text::split_hash("Absolutely wonderful - silky and sexy and comfortable", 0),
        0x3c9b_27c7_8a59_35cb
    );
    assert_eq!(text::split_hash("naïve – café", 7), 0xaa06_5030_bae1_5720);
}

#[test]
fn text_csv_split_vocabulary_and_sequences() {
    let tmp = temp_dir("text");
    let dir = tmp.path();
    let mut csv = String::from("id,Review Text,Recommended IND\n");
    let mut texts = Vec::new();
    for i in 0..40 {
        let extra = if i % 2 == 0 { "great" } else { "bad" };
        let text = format!("Review number {i}, {extra}");
        csv.push_str(&format!("{i},\"{text}\",{}\n", i % 2));
        texts.push(text);
    }
    csv.push_str("40,,1\n41,   ,0\n42,\"rare, Multi\nline\",0\n");
    texts.push("rare, Multi\nline".to_string());
    let p = write_file(dir, "reviews.csv.gz", &gzip(csv.as_bytes()));
    let options = TextOptions { max_len: 8, seed: 3, ..TextOptions::default() };
    let corpus = text::load_csv(&p, &options).unwrap();
    assert_eq!((corpus.rows, corpus.skipped_empty), (43, 2));
    assert_eq!(
        (corpus.vocabulary_provenance, corpus.split_provenance),
        (Provenance::Public, Provenance::Public)
    );
    assert_eq!(corpus.vocabulary, Vocabulary::public_english());
    // A row is in the test split exactly when its own text hashes below 0.2 × 2⁶⁴, in file order.
    let threshold = (0.2 * 18_446_744_073_709_551_616.0) as u64;
    let (test_texts, train_texts): (Vec<&String>, Vec<&String>) =
        texts.iter().partition(|t| text::split_hash(t.trim(), 3) < threshold);
    assert_eq!((corpus.train.len(), corpus.test.len()), (train_texts.len(), test_texts.len()));
    assert!(!test_texts.is_empty() && !train_texts.is_empty());
    for (data, texts) in [(&corpus.train, &train_texts), (&corpus.test, &test_texts)] {
        assert_eq!(data.example_shape, vec![8]);
        for (i, text) in texts.iter().enumerate() {
            let mut expected = Vec::new();
            text::fit_length(&corpus.vocabulary.encode(text), &options, &mut expected);
            assert_eq!(data.input(i), &expected[..], "{text}");
        }
    }
    // "review", "number", "great", "bad" are public words; "rare", "multi", "line" too.
    let v = &corpus.vocabulary;
    let review_ids = [v.id("review"), v.id("number"), v.id("7"), v.id("bad")];
    assert!(review_ids.iter().all(|&id| id != text::UNKNOWN), "{review_ids:?}");
    assert_eq!(
        text::split_hash("Review number 7, bad", 3) < threshold,
        test_texts.iter().any(|t| t.as_str() == "Review number 7, bad")
    );

    // Same file and options, same result; another seed, another split.
    assert_eq!(text::load_csv(&p, &options).unwrap(), corpus);
    let other = text::load_csv(&p, &TextOptions { seed: 4, ..options.clone() }).unwrap();
    assert_ne!(other.test, corpus.test);

    // The data-dependent vocabulary ranks the training split's tokens and says it is not private:
    // "review" and "number" are in every training row, and no test row's number is in it.
    let fitted =
        TextOptions { vocabulary: VocabularySource::FittedToTrainingSplitUnaccounted, ..options.clone() };
    let corpus = text::load_csv(&p, &fitted).unwrap();
    assert_eq!(corpus.vocabulary_provenance, Provenance::FittedToPrivateDataUnaccounted);
    assert_eq!(corpus.split_provenance, Provenance::Public);
    assert_eq!(&corpus.vocabulary.words()[..2], &["number", "review"]);
    for text in &test_texts {
        let number = text.split([' ', ',']).nth(2).unwrap();
        if number.parse::<u32>().is_ok() {
            assert_eq!(corpus.vocabulary.id(number), text::UNKNOWN, "test row {number} is in the vocabulary");
        }
    }
    // Asking the public list for more words than it has is an error naming the option.
    let too_many = TextOptions { vocab_words: 10_001, ..options };
    assert!(matches!(text::load_csv(&p, &too_many), Err(Error::InvalidArgument { .. })));
}

#[test]
fn text_bad_csv_names_file_and_line() {
    let tmp = temp_dir("text-bad");
    let dir = tmp.path();
    let opts = TextOptions::default();
    let p = write_file(dir, "label.csv", b"Review Text,Recommended IND\nok,1\nfine,yes\n");
    assert_format(
        text::load_csv(&p, &opts),
        &p,
        "line 3, column 'Recommended IND'",
        "label 'yes' is neither 0 nor 1",
    );
    let p = write_file(dir, "column.csv", b"Text,Recommended IND\nok,1\n");
    assert_format(text::load_csv(&p, &opts), &p, "line 1", "no column 'Review Text'");
    let p = write_file(dir, "ragged.csv", b"Review Text,Recommended IND\nok,1\nfine\n");
    assert_format(text::load_csv(&p, &opts), &p, "line 3", "ragged row");
    let p = write_file(dir, "few.csv", b"Review Text,Recommended IND\nok,1\n,0\n");
    assert_format(text::load_csv(&p, &opts), &p, "line 3", "1 rows with text (1 empty skipped) hash into");
    let p = write_file(dir, "empty.csv", b"Review Text,Recommended IND\n");
    assert_format(text::load_csv(&p, &opts), &p, "line 1", "0 rows with text");
    let bad = TextOptions { test_fraction: 1.0, ..TextOptions::default() };
    assert!(matches!(text::load_csv(&p, &bad), Err(Error::InvalidArgument { .. })));
    let bad = TextOptions { max_len: 0, ..TextOptions::default() };
    assert!(matches!(text::load_csv(&p, &bad), Err(Error::InvalidArgument { .. })));
}

// ---------------------------------------------------------------------------------------------
// .npy

/// A `.npy` file with the given header version, dict text and body.
fn npy_bytes(major: u8, dict: &str, body: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn npy_writes_numpy_layout_and_reads_it_back() {
    let tmp = temp_dir("npy");
    let dir = tmp.path();
    // np.save of np.arange(3, dtype=np.int64): a 118-byte header, data at byte 128.
    let p = dir.join("a.npy");
    npy::write_i64(&p, &[3], &[0, 1, 2]).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }";
    assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00\x76\x00");
    assert_eq!(&bytes[10..10 + dict.len()], dict.as_bytes());
    assert_eq!(bytes[127], b'\n');
    assert_eq!(bytes.len(), 128 + 24);
    assert_eq!(npy::read(&p).unwrap(), NpyArray { shape: vec![3], data: NpyData::I64(vec![0, 1, 2]) });

    let arrays = [
        NpyArray::new(vec![2, 1, 3], NpyData::F32(vec![0.5, -1.0, f32::NAN, 3.0, 4.0, 1e-30])).unwrap(),
        NpyArray::new(vec![], NpyData::F64(vec![2.5])).unwrap(),
        NpyArray::new(vec![2, 0], NpyData::I32(vec![])).unwrap(),
        NpyArray::new(vec![4], NpyData::U8(vec![0, 1, 254, 255])).unwrap(),
        NpyArray::new(vec![1, 2], NpyData::Bool(vec![true, false])).unwrap(),
    ];
    for (i, array) in arrays.iter().enumerate() {
        let p = dir.join(format!("{i}.npy"));
        npy::write(&p, array).unwrap();
        let back = npy::read(&p).unwrap();
        assert_eq!(back.shape, array.shape);
        assert_eq!(format!("{:?}", back.data), format!("{:?}", array.data), "NaN compares by its text");
    }
    assert!(std::fs::read_dir(dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));

    // Versions 2 and 3, big-endian, odd spacing and key order.
    let body: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| x.to_be_bytes()).collect();
    let p = write_file(
        dir,
        "v2.npy",
        &npy_bytes(2, "{ 'shape':(2 ,) ,'fortran_order':False,'descr':'>f4'}\n", &body),
    );
    assert_eq!(npy::read(&p).unwrap().data, NpyData::F32(vec![1.5, -2.0]));
    let body: Vec<u8> = [7i64, -8].iter().flat_map(|x| x.to_le_bytes()).collect();
    let p = write_file(
        dir,
        "v3.npy",
        &npy_bytes(3, "{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": (1, 2)}", &body),
    );
    assert_eq!(npy::read(&p).unwrap(), NpyArray { shape: vec![1, 2], data: NpyData::I64(vec![7, -8]) });
}

#[test]
fn npy_bad_files_name_file_and_place() {
    let tmp = temp_dir("npy-bad");
    let dir = tmp.path();
    let header = |descr: &str, fortran: &str, shape: &str| {
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}\n")
    };
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("magic.npy", b"\x93NUMPX\x01\x00".to_vec(), "byte 0", "wrong magic number"),
        ("short.npy", b"\x93NUMPY\x01".to_vec(), "byte 7", "truncated header"),
        ("version.npy", npy_bytes(4, &header("<f4", "False", "(1,)"), &[0; 4]), "byte 6", "version 4.0"),
        (
            "hdrlen.npy",
            b"\x93NUMPY\x01\x00\xff\x00{'descr'".to_vec(),
            "byte 18",
            "255 header bytes announced",
        ),
        (
            "fortran.npy",
            npy_bytes(1, &header("<f4", "True", "(2, 2)"), &[0; 16]),
            "fortran_order",
            "fortran_order = True",
        ),
        (
            "dtype.npy",
            npy_bytes(1, &header("<c8", "False", "(1,)"), &[0; 8]),
            "descr",
            "unsupported dtype '<c8'",
        ),
        (
            "struct.npy",
            npy_bytes(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", &[0; 4]),
            "header",
            "unexpected value",
        ),
        (
            "key.npy",
            npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': True}", &[0; 4]),
            "header",
            "unexpected key 'x'",
        ),
        ("nokey.npy", npy_bytes(1, "{'descr': '<f4', 'shape': (1,)}", &[0; 4]), "header", "needs 'descr'"),
        (
            "dim.npy",
            npy_bytes(1, &header("<f4", "False", "(99999999999999999999999,)"), &[]),
            "header",
            "too large",
        ),
        (
            "overflow.npy",
            npy_bytes(1, &header("<f8", "False", "(4294967296, 4294967296)"), &[]),
            "shape",
            "overflows",
        ),
        ("data.npy", npy_bytes(1, &header("<f4", "False", "(3,)"), &[0; 11]), "byte", "truncated data"),
        (
            "trailing.npy",
            npy_bytes(1, &header("|u1", "False", "(3,)"), &[0; 4]),
            "byte",
            "1 unexpected bytes",
        ),
        (
            "bool.npy",
            npy_bytes(1, &header("|b1", "False", "(3,)"), &[0, 1, 2]),
            "byte",
            "boolean element 2 is 2",
        ),
        (
            "utf8.npy",
            npy_bytes(1, "{'descr': '\u{ff}", &[])
                .iter()
                .map(|&b| if b == 0xc3 { 0xff } else { b })
                .collect(),
            "byte",
            "not text",
        ),
    ];
    for (name, bytes, location, message) in cases {
        let p = write_file(dir, name, &bytes);
        assert_format(npy::read(&p), &p, location, message);
    }
}

#[test]
fn npy_datasets_check_dtype_shape_range_and_count() {
    let tmp = temp_dir("npy-data");
    let dir = tmp.path();
    let (xp, yp) = (dir.join("X.npy"), dir.join("Y.npy"));
    let x = NpyArray::new(vec![2, 1, 2, 2], NpyData::F32((0..8).map(|i| i as f32).collect())).unwrap();
    let y = NpyArray::new(vec![2], NpyData::I64(vec![3, 9])).unwrap();
    let data = npy::dense_dataset(&x, &xp, &y, &yp, &[1, 2, 2], LabelKind::Classes(10)).unwrap();
    assert_eq!(
        (data.len(), data.labels.clone(), data.example_shape.clone()),
        (2, vec![3.0, 9.0], vec![1, 2, 2])
    );
    let x64 = NpyArray::new(vec![2, 4], NpyData::F64(vec![0.0; 8])).unwrap();
    let yf = NpyArray::new(vec![2], NpyData::F32(vec![1.0, 0.0])).unwrap();
    assert_eq!(
        npy::dense_dataset(&x64, &xp, &yf, &yp, &[4], LabelKind::Binary).unwrap().labels,
        vec![1.0, 0.0]
    );

    assert_format(
        npy::dense_dataset(&x, &xp, &y, &yp, &[1, 28, 28], LabelKind::Classes(10)),
        &xp,
        "shape",
        "[2, 1, 2, 2] does not match [N, 1, 28, 28]",
    );
    let mut nan = x.clone();
    if let NpyData::F32(v) = &mut nan.data {
        v[5] = f32::NAN;
    }
    assert_format(
        npy::dense_dataset(&nan, &xp, &y, &yp, &[1, 2, 2], LabelKind::Classes(10)),
        &xp,
        "element 5",
        "NaN is not finite (example 1)",
    );
    assert_format(
        npy::dense_dataset(&x, &xp, &y, &yp, &[1, 2, 2], LabelKind::Classes(9)),
        &yp,
        "element 1",
        "label 9 is out of range",
    );
    assert_format(
        npy::dense_dataset(&x, &xp, &yf, &yp, &[1, 2, 2], LabelKind::Classes(10)),
        &yp,
        "descr",
        "class labels must be integers",
    );
    let y3 = NpyArray::new(vec![3], NpyData::I64(vec![0, 1, 2])).unwrap();
    assert_format(
        npy::dense_dataset(&x, &xp, &y3, &yp, &[1, 2, 2], LabelKind::Classes(10)),
        &yp,
        "shape",
        "3 labels but 2 examples",
    );
    let half = NpyArray::new(vec![2], NpyData::F32(vec![0.5, 1.0])).unwrap();
    assert_format(
        npy::dense_dataset(&x64, &xp, &half, &yp, &[4], LabelKind::Binary),
        &yp,
        "element 0",
        "expected 0 or 1",
    );
    let empty = NpyArray::new(vec![0, 4], NpyData::F32(vec![])).unwrap();
    assert_format(
        npy::dense_dataset(&empty, &xp, &yf, &yp, &[4], LabelKind::Binary),
        &xp,
        "shape",
        "dataset is empty",
    );
    let tokens = NpyArray::new(vec![2, 3], NpyData::I32(vec![1, 2, 3, 4, 5, 6])).unwrap();
    assert_format(
        npy::dense_dataset(&tokens, &xp, &y, &yp, &[3], LabelKind::Classes(10)),
        &xp,
        "descr",
        "float32 or float64, found int32",
    );

    let data = npy::token_dataset(&tokens, &xp, &y, &yp, 3, 7, LabelKind::Classes(10)).unwrap();
    assert_eq!(data.inputs, vec![1, 2, 3, 4, 5, 6]);
    assert_format(
        npy::token_dataset(&tokens, &xp, &y, &yp, 3, 6, LabelKind::Classes(10)),
        &xp,
        "element 5",
        "token id 6 of example 1 is out of range 0..6",
    );
    let negative = NpyArray::new(vec![1, 2], NpyData::I64(vec![0, -1])).unwrap();
    let one = NpyArray::new(vec![1], NpyData::I64(vec![0])).unwrap();
    assert_format(
        npy::token_dataset(&negative, &xp, &one, &yp, 2, 5, LabelKind::Classes(2)),
        &xp,
        "element 1",
        "token id -1",
    );
    assert_format(
        npy::token_dataset(&x64, &xp, &one, &yp, 4, 5, LabelKind::Classes(2)),
        &xp,
        "descr",
        "int64 or int32, found float64",
    );
}

// ---------------------------------------------------------------------------------------------
// The real files

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn real_mnist() {
    let start = std::time::Instant::now();
    let (train, test) = mnist::load(repo_file("../data/mnist")).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    eprintln!("MNIST decoded in {seconds:.2} s");
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.example_shape, vec![1, 28, 28]);
    for data in [&train, &test] {
        let (min, max) = data.inputs.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert_eq!((min, max), (0.0, 1.0));
        let mean = data.inputs.iter().map(|&x| f64::from(x)).sum::<f64>() / data.inputs.len() as f64;
        assert!((mean - 0.1307).abs() < 0.003, "mean pixel {mean}");
        let mut histogram = [0usize; 10];
        for &l in &data.labels {
            histogram[l as usize] += 1;
        }
        // Every digit is between 8% and 12% of a split.
        for (digit, &count) in histogram.iter().enumerate() {
            let share = count as f64 / data.len() as f64;
            assert!((0.08..0.12).contains(&share), "digit {digit}: {share}");
        }
    }
    // The canonical first training labels: 5 0 4 1 9 2 1 3 1 4.
    assert_eq!(&train.labels[..10], &[5.0, 0.0, 4.0, 1.0, 9.0, 2.0, 1.0, 3.0, 1.0, 4.0]);
}

#[test]
fn real_adult() {
    let train_path = repo_file("../data/adult/adult_train.csv.gz");
    let test_path = repo_file("../data/adult/adult_test.csv.gz");
    let splits = adult::load_splits(&train_path, &test_path).unwrap();
    let (train, test) = (&splits.train, &splits.test);
    assert_eq!(train.example_shape, vec![adult::FEATURES]);
    assert_eq!((train.len(), test.len()), (32_561, 16_281));
    assert_eq!(splits.provenance, Provenance::Public);
    // `?` in workclass (1,836 + 963), occupation (1,843 + 966) and native-country (583 + 274); no
    // unlisted category and no number outside its public bounds in either file.
    assert_eq!(splits.train_counts, tabular::EncodeCounts { missing: 4_262, unknown: 0, clipped: 0 });
    assert_eq!(splits.test_counts, tabular::EncodeCounts { missing: 2_203, unknown: 0, clipped: 0 });

    // The published lists are exactly the categories present in the training file, spelled as there.
    let encoder = adult::encoder().unwrap();
    let table = tabular::read_table(&train_path, &adult::schema()).unwrap();
    let seen = TabularEncoder::fit_to_private_data_unaccounted(&adult::schema(), &table).unwrap();
    let sizes: Vec<usize> = encoder.categories().iter().map(|(_, c)| c.len()).collect();
    assert_eq!(sizes, [8, 16, 7, 14, 6, 5, 2, 41]);
    for ((column, published), (_, present)) in encoder.categories().into_iter().zip(seen.categories()) {
        let mut published = published.to_vec();
        published.sort();
        assert_eq!(published, present, "column {column}");
    }
    // About 24% of both splits earn more than 50K.
    // Features in [0, 1], capital gains and losses in [0, 99.999] (thousands of dollars).
    for data in [train, test] {
        let positive = data.labels.iter().sum::<f32>() / data.len() as f32;
        assert!((0.23..0.25).contains(&positive), "{positive}");
        for (j, x) in data.inputs.iter().enumerate() {
            let top =
                if [CAPITAL_GAIN, CAPITAL_LOSS].contains(&(j % adult::FEATURES)) { 99.999 } else { 1.0 };
            assert!((0.0..=top).contains(x), "feature {} is {x}", j % adult::FEATURES);
        }
    }
    // The scaled columns reach both ends (age 17 and 90, levels 1 and 16, 1 and 99 hours, the
    // 99,999 top-coded gain).
    let names = encoder.feature_names();
    for (column, top) in
        [("age", 1.0), ("education-num", 1.0), ("capital-gain", 99.999), ("hours-per-week", 1.0)]
    {
        let j = names.iter().position(|n| n == column).unwrap();
        let values = (0..train.len()).map(|i| train.input(i)[j]);
        let (min, max) = values.fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        assert_eq!((min, max), (0.0, top), "{column}");
    }
}

#[test]
fn real_reviews() {
    let path = repo_file("../data/reviews/womens_clothing_reviews.csv.gz");
    let corpus = text::load_csv(&path, &TextOptions::default()).unwrap();
    assert_eq!((corpus.rows, corpus.skipped_empty), (23_486, 845));
    // The hash puts 19.8% of the rows in the test split (0.2 expected).
    assert_eq!((corpus.train.len(), corpus.test.len()), (18_149, 4_492));
    assert_eq!(
        (corpus.vocabulary_provenance, corpus.split_provenance),
        (Provenance::Public, Provenance::Public)
    );
    assert_eq!(corpus.vocabulary, Vocabulary::public_english());
    assert_eq!(corpus.vocabulary.len(), 10_004);
    assert_eq!(corpus.train.example_shape, vec![256]);
    assert_eq!(corpus.test.example_shape, vec![256]);
    let (mut known, mut words) = (0usize, 0usize);
    for data in [&corpus.train, &corpus.test] {
        assert!(data.inputs.iter().all(|&id| (id as usize) < 10_004 && id != text::UNUSED));
        assert!((0..data.len()).all(|i| data.input(i).iter().filter(|&&id| id == text::START).count() == 1));
        let positive = data.labels.iter().sum::<f32>() / data.len() as f32;
        assert!((0.79..0.84).contains(&positive), "{positive}");
        let tokens = data.inputs.iter().filter(|&&id| id > text::UNUSED || id == text::UNKNOWN);
        for &id in tokens {
            words += 1;
            known += usize::from(id != text::UNKNOWN);
        }
    }
    // Most tokens of the reviews are in the public list.
    let coverage = known as f64 / words as f64;
    eprintln!("public vocabulary covers {:.1}% of the reviews' tokens (within 256)", 100.0 * coverage);
    assert!(coverage > 0.9, "{coverage}");
    assert_eq!(corpus.vocabulary.id("the"), 4);
    let (train, test, vocabulary) = text::load_reviews(&path, TextOptions::default()).unwrap();
    assert_eq!((train, test, vocabulary), (corpus.train, corpus.test, corpus.vocabulary));
}

// ---------------------------------------------------------------------------------------------
// Neighbouring datasets: one training row removed or added never changes the input shape or any
// other row's features, token ids or split (preprocessing is not fitted to the private rows).

/// Bit patterns of one example's features, so that -0.0 and 0.0 or two NaNs are told apart.
fn feature_bits(data: &dp_runtime::Dataset<f32>, i: usize) -> Vec<u32> {
    data.input(i).iter().map(|x| x.to_bits()).collect()
}

/// Where `longer` has one example more than `shorter`, which otherwise it equals example for example
/// (features bit for bit, and labels): `Ok(None)` when both are equal, `Ok(Some(k))` when `longer`
/// is `shorter` with example `k` inserted, `Err` describing the first difference otherwise.
fn extra_example<T: dp_runtime::InputElem + PartialEq>(
    shorter: &dp_runtime::Dataset<T>,
    longer: &dp_runtime::Dataset<T>,
    same: impl Fn(&dp_runtime::Dataset<T>, usize, &dp_runtime::Dataset<T>, usize) -> bool,
) -> Result<Option<usize>, String> {
    if shorter.example_shape != longer.example_shape {
        return Err(format!("shape {:?} became {:?}", shorter.example_shape, longer.example_shape));
    }
    let equal = |i: usize, j: usize| same(shorter, i, longer, j) && shorter.label(i) == longer.label(j);
    let first_difference = (0..shorter.len().min(longer.len())).find(|&i| !equal(i, i));
    match (longer.len() as isize - shorter.len() as isize, first_difference) {
        (0, None) => Ok(None),
        (1, None) => Ok(Some(shorter.len())),
        (1, Some(k)) => match (k..shorter.len()).find(|&i| !equal(i, i + 1)) {
            None => Ok(Some(k)),
            Some(i) => Err(format!(
                "example {i} changed (beyond the one inserted at {k}); {} of {} examples differ",
                (k..shorter.len()).filter(|&i| !equal(i, i + 1)).count(),
                shorter.len()
            )),
        },
        (0, Some(k)) => Err(format!(
            "example {k} changed; {} of {} examples differ",
            (0..shorter.len()).filter(|&i| !equal(i, i)).count(),
            shorter.len()
        )),
        (delta, _) => Err(format!("{} examples became {} ({delta:+})", shorter.len(), longer.len())),
    }
}

fn same_features(a: &dp_runtime::Dataset<f32>, i: usize, b: &dp_runtime::Dataset<f32>, j: usize) -> bool {
    feature_bits(a, i) == feature_bits(b, j)
}

fn same_tokens(a: &dp_runtime::Dataset<u32>, i: usize, b: &dp_runtime::Dataset<u32>, j: usize) -> bool {
    a.input(i) == b.input(j)
}

/// Seeded distinct row indices in `0..n`, for the random neighbours.
fn random_rows(n: usize, count: usize, seed: u64) -> Vec<usize> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut rows: Vec<usize> = Vec::new();
    while rows.len() < count {
        let row = rng.random_range(0..n);
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    rows
}

fn gunzip(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut bytes).unwrap();
    bytes
}

#[test]
fn adult_neighbouring_datasets_keep_shape_and_every_other_row() {
    let train_path = repo_file("../data/adult/adult_train.csv.gz");
    let test_path = repo_file("../data/adult/adult_test.csv.gz");
    let test_bytes = std::fs::read(&test_path).unwrap();
    // UCI's Adult has no quoted fields, so a data row is a line.
    let text = String::from_utf8(gunzip(&train_path)).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    let rows: Vec<String> = lines.map(String::from).collect();
    let load = |rows: &[String]| {
        let bytes = format!("{header}\n{}\n", rows.join("\n"));
        adult::load_bytes(Path::new("adult_train.csv"), bytes.as_bytes(), &test_path, &test_bytes).unwrap()
    };
    let (train, test) = load(&rows);
    assert_eq!(train.example_shape, vec![104]);
    assert_eq!(train.len(), 32_561);

    let column = |name: &str| header.split(',').position(|h| h.trim() == name).unwrap();
    let field = |row: &str, j: usize| row.split(',').nth(j).unwrap().trim().to_string();
    let (country, gain) = (column("native-country"), column("capital-gain"));
    let holand = rows.iter().position(|r| field(r, country) == "Holand-Netherlands").unwrap();
    let largest_gain = (0..rows.len())
        .max_by_key(|&i| (field(&rows[i], gain).parse::<u64>().unwrap(), std::cmp::Reverse(i)))
        .unwrap();
    let mut removed = vec![
        (holand, "the only Holand-Netherlands row"),
        (largest_gain, "the first row with the largest capital-gain"),
        (0, "the first row"),
        (rows.len() - 1, "the last row"),
    ];
    removed.extend(random_rows(rows.len(), 4, 10).into_iter().map(|i| (i, "a seeded random row")));
    for (row, what) in removed {
        let mut neighbour = rows.clone();
        neighbour.remove(row);
        let (smaller, smaller_test) = load(&neighbour);
        let outcome = extra_example(&smaller, &train, same_features);
        assert_eq!(outcome, Ok(Some(row)), "removing training row {row} ({what})");
        assert_eq!(extra_example(&smaller_test, &test, same_features), Ok(None), "test rows, {what}");
    }

    let unseen = rows[0]
        .split(',')
        .enumerate()
        .map(|(j, value)| match header.split(',').nth(j).unwrap().trim() {
            "age" => "150".to_string(),
            "workclass" => "Interplanetary-gov".to_string(),
            "native-country" => "Atlantis".to_string(),
            "capital-gain" | "capital-loss" => "1e12".to_string(),
            "hours-per-week" => "1000".to_string(),
            _ => value.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    for (extra, what) in [
        (rows[largest_gain].clone(), "a duplicate of the largest capital-gain row"),
        (rows[holand].clone(), "a second Holand-Netherlands row"),
        (unseen, "a row with unseen categories and extreme numbers"),
    ] {
        let mut neighbour = rows.clone();
        neighbour.push(extra);
        let (larger, larger_test) = load(&neighbour);
        assert_eq!(extra_example(&train, &larger, same_features), Ok(Some(rows.len())), "adding {what}");
        assert_eq!(extra_example(&test, &larger_test, same_features), Ok(None), "test rows, adding {what}");
    }
}

#[test]
fn text_neighbouring_datasets_keep_every_other_rows_ids_and_split() {
    let path = repo_file("../data/reviews/womens_clothing_reviews.csv.gz");
    let options = TextOptions::default();
    let bytes = gunzip(&path);
    let mut reader = csv::Reader::from_reader(&bytes[..]);
    let header = reader.headers().unwrap().clone();
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let text_column = header.iter().position(|h| h == "Review Text").unwrap();
    let label_column = header.iter().position(|h| h == "Recommended IND").unwrap();
    let load = |records: &[csv::StringRecord]| {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(&header).unwrap();
        for record in records {
            writer.write_record(record).unwrap();
        }
        text::parse_csv_bytes(Path::new("reviews.csv"), &writer.into_inner().unwrap(), &options).unwrap()
    };
    let corpus = load(&records);
    assert_eq!((corpus.train.len() + corpus.test.len(), corpus.skipped_empty), (22_641, 845));
    let encoded = |corpus: &text::TextCorpus, record: &csv::StringRecord| {
        let mut ids = Vec::new();
        text::fit_length(&corpus.vocabulary.encode(&record[text_column]), &options, &mut ids);
        ids
    };

    // Exactly one split holds the row's example (at its file position), the other is unchanged.
    let check =
        |shorter: &text::TextCorpus, longer: &text::TextCorpus, record: &csv::StringRecord, what: &str| {
            let train = extra_example(&shorter.train, &longer.train, same_tokens);
            let test = extra_example(&shorter.test, &longer.test, same_tokens);
            let (split, at) = match (train, test) {
                (Ok(Some(k)), Ok(None)) => (&longer.train, k),
                (Ok(None), Ok(Some(k))) => (&longer.test, k),
                other => panic!("{what}: train and test differ by {other:?}"),
            };
            assert_eq!(split.input(at), &encoded(longer, record)[..], "{what}: the row's own ids");
            let label: f32 = record[label_column].trim().parse().unwrap();
            assert_eq!(split.label(at), &[label], "{what}: the row's own label");
        };
    let empty = records.iter().position(|r| r[text_column].trim().is_empty()).unwrap();
    let mut removed = vec![(0, "the first row"), (records.len() - 1, "the last row")];
    removed.extend(random_rows(records.len(), 4, 11).into_iter().map(|i| (i, "a seeded random row")));
    for &(row, what) in &removed {
        let mut neighbour = records.clone();
        let record = neighbour.remove(row);
        if record[text_column].trim().is_empty() {
            continue;
        }
        check(&load(&neighbour), &corpus, &record, &format!("removing row {row} ({what})"));
    }
    let mut neighbour = records.clone();
    neighbour.remove(empty);
    let without_empty = load(&neighbour);
    assert_eq!((&without_empty.train, &without_empty.test), (&corpus.train, &corpus.test), "an empty row");

    let mut unseen = records[0].clone();
    let mut fields: Vec<String> = unseen.iter().map(String::from).collect();
    fields[text_column] = "Zyzzyvas quuxle the flibbertigibbet gown; it's 12345 times betterish".to_string();
    unseen = csv::StringRecord::from(fields);
    let duplicate =
        removed[2..].iter().map(|&(row, _)| row).find(|&row| !records[row][text_column].trim().is_empty());
    for (extra, what) in [
        (records[duplicate.unwrap()].clone(), "a duplicate of a random row"),
        (unseen, "a row of unseen words"),
    ] {
        let mut neighbour = records.clone();
        neighbour.push(extra.clone());
        check(&corpus, &load(&neighbour), &extra, &format!("adding {what}"));
    }
}
