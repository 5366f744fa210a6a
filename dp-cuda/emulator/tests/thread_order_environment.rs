//! `DP_EMULATOR_THREAD_ORDER` and `DP_EMULATOR_SEED`, which the emulator reads once per process: this
//! test (harness = false) runs itself as a child process under each setting, and the child prints
//! the order in which a launch's threads began, or the launch's error.

use std::ffi::c_void;
use std::process::Command;

use dp_cuda_emulator::kernels;

/// Set in the child processes' environment.
const CHILD: &str = "DP_EMU_THREAD_ORDER_TEST_CHILD";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        print_launch_order();
    } else {
        check_the_environment_settings();
        println!("thread_order_environment: ok");
    }
}

/// Launches dp_emu_selftest_indices over 4 blocks of 8 threads and prints `order` and the rank at
/// which each thread of the grid began (blockIdx, then threadIdx order), or `error` and the error.
fn print_launch_order() {
    let (blocks, threads) = (4usize, 8usize);
    let mut out = vec![u32::MAX; blocks * threads * 3];
    let mut started = 0u32;
    let (mut o, mut s) = (out.as_mut_ptr(), &mut started as *mut u32);
    let mut params: [*mut c_void; 2] = [(&mut o as *mut *mut u32).cast(), (&mut s as *mut *mut u32).cast()];
    // SAFETY: the kernel's two pointers, to buffers of 3 values per thread and one counter.
    let result = unsafe {
        kernels::launch_self_test(
            "dp_emu_selftest_indices",
            [blocks as u32, 1, 1],
            [threads as u32, 1, 1],
            params.as_mut_ptr(),
        )
    };
    match result {
        Ok(()) => {
            let ranks: Vec<String> = out.chunks(3).map(|thread| thread[2].to_string()).collect();
            println!("order {}", ranks.join(" "));
        }
        Err(error) => println!("error {}", error.message),
    }
}

/// What a child prints with the thread order and the seed set as given (unset when `None`).
fn child(order: Option<&str>, seed: Option<&str>) -> String {
    let mut command = Command::new(std::env::current_exe().expect("this test's path"));
    command.env(CHILD, "1").env_remove("DP_EMULATOR_THREAD_ORDER").env_remove("DP_EMULATOR_SEED");
    if let Some(order) = order {
        command.env("DP_EMULATOR_THREAD_ORDER", order);
    }
    if let Some(seed) = seed {
        command.env("DP_EMULATOR_SEED", seed);
    }
    let output = command.output().expect("running the child");
    assert!(output.status.success(), "{order:?} {seed:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
}

fn order_of(ranks: impl Iterator<Item = usize>) -> String {
    let ranks: Vec<String> = ranks.map(|r| r.to_string()).collect();
    format!("order {}", ranks.join(" "))
}

fn check_the_environment_settings() {
    let forward = order_of(0..32);
    assert_eq!(child(None, None), forward, "forward by default");
    assert_eq!(child(Some("forward"), None), forward);
    assert_eq!(child(Some("reverse"), None), order_of((0..32).rev()));

    let shuffled = child(Some("shuffled"), None);
    assert!(shuffled.starts_with("order "), "{shuffled}");
    let mut ranks: Vec<usize> = shuffled["order ".len()..].split(' ').map(|r| r.parse().unwrap()).collect();
    assert_ne!(shuffled, forward);
    assert_ne!(shuffled, order_of((0..32).rev()));
    ranks.sort_unstable();
    assert_eq!(ranks, (0..32).collect::<Vec<_>>(), "every thread once");
    assert_eq!(child(Some("shuffled"), None), shuffled, "the same in every process");
    assert_eq!(child(Some("shuffled"), Some("0")), shuffled, "seed 0 is the default");
    let seeded = child(Some("shuffled"), Some("0x2545f4914f6cdd1d"));
    assert_ne!(seeded, shuffled, "another seed, other permutations");
    assert_eq!(child(Some("shuffled"), Some("2685821657736338717")), seeded, "the same seed in decimal");
    assert_eq!(child(Some("forward"), Some("12345")), forward, "the seed changes only shuffled");

    // Blocks of one warp each: a warp's lanes begin one after the other, the blocks in a permutation.
    let warps = child(Some("warps"), None);
    let ranks: Vec<usize> =
        warps.strip_prefix("order ").expect(&warps).split(' ').map(|r| r.parse().unwrap()).collect();
    let mut block_order: Vec<usize> = ranks.chunks(8).map(|block| block[0] / 8).collect();
    for block in ranks.chunks(8) {
        assert_eq!(block, (block[0]..block[0] + 8).collect::<Vec<_>>(), "{warps}");
    }
    assert_ne!(block_order, [0, 1, 2, 3], "{warps}");
    block_order.sort_unstable();
    assert_eq!(block_order, [0, 1, 2, 3], "{warps}");

    for wrong in ["Reverse", "", "random"] {
        assert_eq!(
            child(Some(wrong), None),
            format!(
                "error dp_emu_selftest_indices: DP_EMULATOR_THREAD_ORDER={wrong}: the accepted values are \
                 forward (the default), reverse, shuffled and warps"
            )
        );
    }
    for wrong in ["12x", "-1", "", "18446744073709551616"] {
        assert_eq!(
            child(Some("shuffled"), Some(wrong)),
            format!(
                "error dp_emu_selftest_indices: DP_EMULATOR_SEED={wrong}: not an unsigned 64-bit number \
                 (decimal, or hexadecimal after 0x)"
            )
        );
    }
}
