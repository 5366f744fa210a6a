//! The device noise kernels' arithmetic, compiled as C by the host's C compiler, against the CPU's
//! chunked draw: the same values, bit for bit, for several keys and lengths (full chunks, a short last
//! chunk, a vector shorter than one chunk). This checks the counter arithmetic, the ChaCha20 blocks,
//! the interleaved word order, both ziggurat passes and the retry stream without a GPU.

use std::path::PathBuf;
use std::process::Command;

use dp_cuda::noise::CHUNK;
use dp_runtime::noise::gaussian::{fill_chunk, ziggurat_tables};

/// The harness built once per test run, or `None` (with a visible message) when there is no C compiler.
fn harness() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("dp-cuda-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("host_harness");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/host_harness.c");
    // IEEE arithmetic as on the device (fmad=false) and in Rust: no contraction, no fast math.
    let built = Command::new("cc")
        .args(["-O2", "-std=c11", "-ffp-contract=off", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(source)
        .arg("-lm")
        .output();
    match built {
        Ok(out) if out.status.success() => Some(exe),
        Ok(out) => panic!("the noise kernels do not compile as C:\n{}", String::from_utf8_lossy(&out.stderr)),
        Err(e) if std::env::var_os("DP_REQUIRE_CC").is_none() => {
            eprintln!("1 host noise test skipped: no C compiler `cc` ({e})");
            None
        }
        Err(e) => panic!("DP_REQUIRE_CC is set but `cc` does not run: {e}"),
    }
}

fn tables_file(dir: &std::path::Path) -> PathBuf {
    let tables = ziggurat_tables();
    let bytes: Vec<u8> = tables
        .edge
        .iter()
        .chain(tables.ratio.iter())
        .chain(tables.density.iter())
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let path = dir.join("tables.bin");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn device_noise_arithmetic_equals_the_cpu_draw_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let tables = tables_file(exe.parent().unwrap());
    let keys: [[u8; 32]; 3] =
        [[0; 32], std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11)), [0xff; 32]];
    for key in keys {
        for len in [5, 129, CHUNK, 3 * CHUNK + 1001] {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let out = Command::new(&exe).arg(&tables).arg(&hex).arg(len.to_string()).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let device: Vec<f64> =
                out.stdout.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
            assert_eq!(device.len(), len);
            let mut cpu = vec![0.0; len];
            for (chunk, values) in cpu.chunks_mut(CHUNK).enumerate() {
                fill_chunk(&key, chunk as u64, values);
            }
            let differing = cpu.iter().zip(&device).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differing, 0, "key {hex}, len {len}: {differing} coordinates differ");
            // The slow path ran: some coordinates beyond the inner rectangles, some in the tail.
            if len > CHUNK {
                assert!(device.iter().any(|v| v.abs() > 3.7), "the tail was reached");
            }
        }
    }
    let _ = std::fs::remove_dir_all(exe.parent().unwrap());
}
