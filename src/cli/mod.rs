//! The `dp` command line: argument parsing (clap derive) and dispatch to one module per subcommand.
//!
//! To add a subcommand, add a variant to `Command` with its arguments type and a line in `run`.
//! Errors reach the user as one line on stderr; an invalid flag value names the flag and exits with 2,
//! like clap's own parse errors.

pub mod bench;
pub mod datasets;
pub mod devices;
pub mod models;
pub mod mpi_world;
pub mod paths;
pub mod plot;
pub mod privacy;
pub mod registry;
pub mod step;
pub mod train;

use clap::{Parser, Subcommand};
use dp_runtime::Error;
use std::process::ExitCode;

/// Exit status when a command refuses its input before doing any work: an invalid flag value (the
/// same as clap's usage errors), a file that cannot be read or written, a malformed file, data or a
/// checkpoint that does not fit the model, a plan over its privacy budget.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the work started and then failed (e.g. a training run whose update overflowed):
/// the message says what was done and what the outputs hold.
pub const EXIT_FAILURE: u8 = 1;

/// Differentially private training of compiled models.
#[derive(Debug, Parser)]
#[command(name = "dp", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `dp`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The built-in models: name, input shape, parameter count, data.
    Models(models::ModelsArgs),
    /// The compiled plan of a model, layer by layer.
    Describe(models::DescribeArgs),
    /// Train a built-in model on its real data with DP-SGD.
    // Boxed: its many flags make it several times larger than the other commands.
    Train(Box<train::TrainArgs>),
    /// Exactly one DP-SGD step on given examples, in PyTorch's conventions.
    Step(step::StepArgs),
    /// Privacy accounting: ε of a training plan, or the noise multiplier for a target ε.
    #[command(subcommand)]
    Privacy(privacy::PrivacyCommand),
    /// Step times, private and not, of the built-in models; the largest batch for a memory budget;
    /// the GEMM peak.
    Bench(bench::BenchArgs),
    /// What this dp can compute on: the CPU, and NVRTC and CUDA devices (with the `cuda` feature).
    Devices(devices::DevicesArgs),
}

/// Runs a parsed command, writing its result to stdout.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Models(args) => models::run_models(args),
        Command::Describe(args) => models::run_describe(args),
        Command::Train(args) => train::run(*args),
        Command::Step(args) => step::run(args),
        Command::Privacy(command) => privacy::run(command),
        Command::Bench(args) => bench::run(args),
        Command::Devices(args) => devices::run(args),
    }
}

/// What this CPU does with bf16 products, for `dp devices`.
pub fn bf16_products() -> &'static str {
    if dp_kernels::gemm_bf16::has_bf16_dot_products() {
        "bf16 products on AVX512-BF16"
    } else {
        "bf16 products emulated (no AVX512-BF16: --precision bf16 is slower than f32 here)"
    }
}

/// Says on stderr when `--precision bf16` will be emulated on this CPU (the same numbers, slower).
pub fn warn_if_bf16_is_emulated(precision: dp_runtime::Precision, device: DeviceArg) {
    let on_cpu = matches!(device, DeviceArg::Cpu);
    if on_cpu && precision == dp_runtime::Precision::Bf16 && !dp_kernels::gemm_bf16::has_bf16_dot_products() {
        eprintln!(
            "--precision bf16: this CPU has no AVX512-BF16, so the bf16 products are emulated in f32 on \
             rounded operands: the same results, slower than --precision f32"
        );
    }
}

/// Parses `--precision`: `f32` or `bf16`.
pub fn parse_precision(text: &str) -> Result<dp_runtime::Precision, String> {
    dp_runtime::Precision::from_name(text)
        .ok_or_else(|| format!("unknown precision `{text}`: expected f32 or bf16"))
}

/// Where a command computes: `cpu`, `cuda:N`, or `cuda` alone: this process's GPU,
/// [`gpu_of_local_rank`] (`cuda:0` outside `mpirun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    /// The GPU's ordinal, or `None` for `cuda` alone.
    Cuda(Option<usize>),
}

impl DeviceArg {
    /// `cpu`, `cuda:N` or `cuda`.
    pub fn name(self) -> String {
        match self {
            DeviceArg::Cpu => "cpu".into(),
            DeviceArg::Cuda(Some(ordinal)) => format!("cuda:{ordinal}"),
            DeviceArg::Cuda(None) => "cuda".into(),
        }
    }
}

/// The GPU `--device cuda` names among `device_count`: `cuda:<local rank mod device count>`, the
/// local rank being this process's on its node as the MPI launcher announces it (0 without one), so
/// that the ranks `mpirun` starts on a node with several GPUs spread over them, one each while there
/// are enough (docs/DISTRIBUTED.md).
pub fn gpu_of_local_rank(local_rank: Option<usize>, device_count: usize) -> usize {
    local_rank.unwrap_or(0) % device_count.max(1)
}

pub fn parse_device(text: &str) -> Result<DeviceArg, String> {
    match text {
        "cpu" => Ok(DeviceArg::Cpu),
        "cuda" => Ok(DeviceArg::Cuda(None)),
        _ => text
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(|ordinal| DeviceArg::Cuda(Some(ordinal)))
            .ok_or_else(|| format!("unknown device `{text}`: expected cpu, cuda or cuda:N")),
    }
}

/// The one-line message for an error, naming the command-line flag where one is at fault, and the
/// exit status that goes with it.
pub fn describe_error(error: &Error) -> (String, u8) {
    let message = match error {
        Error::InvalidArgument { name, message } => format!("--{} {message}", name.replace('_', "-")),
        other => other.to_string(),
    };
    (message, exit_status(error))
}

/// [`EXIT_USAGE`] for input refused, [`EXIT_FAILURE`] for work that started and failed.
fn exit_status(error: &Error) -> u8 {
    match error {
        Error::Io { .. }
        | Error::Format { .. }
        | Error::InvalidArgument { .. }
        | Error::Mismatch { .. }
        | Error::Budget(_) => EXIT_USAGE,
        Error::Interrupted { .. } | Error::RankFailed { .. } => EXIT_FAILURE,
    }
}

/// Parses the process arguments, runs the command and turns any error into one line on stderr and an
/// exit status: the whole of the `dp` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let (message, code) = describe_error(&error);
            eprintln!("error: {}", message.replace('\n', " "));
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_alone_is_the_gpu_of_the_local_rank() {
        assert_eq!(parse_device("cuda"), Ok(DeviceArg::Cuda(None)));
        assert_eq!(parse_device("cuda:3"), Ok(DeviceArg::Cuda(Some(3))));
        assert_eq!(parse_device("cpu"), Ok(DeviceArg::Cpu));
        assert!(parse_device("cuda:x").is_err());
        // Alone: cuda:0. Under mpirun: local ranks spread over the node's GPUs, cycling when fewer.
        assert_eq!(gpu_of_local_rank(None, 8), 0);
        let four_ranks_on_two_gpus: Vec<_> = (0..4).map(|r| gpu_of_local_rank(Some(r), 2)).collect();
        assert_eq!(four_ranks_on_two_gpus, [0, 1, 0, 1]);
        assert_eq!(gpu_of_local_rank(Some(3), 8), 3);
        // No GPU: cuda:0, which opening then refuses with the count.
        assert_eq!(gpu_of_local_rank(Some(5), 0), 0);
    }
}
