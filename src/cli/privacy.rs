//! `dp privacy`: the accountant on the command line.
//!
//! - `dp privacy epsilon --sampling-rate Q --noise-multiplier S --steps T --delta D [--accountant rdp|pld] [--json]`
//! - `dp privacy noise --sampling-rate Q --steps T --delta D --target-epsilon E [--accountant rdp|pld] [--json]`
//!
//! With `--json` stdout is exactly one JSON object: `{"epsilon": E, "order": A}` (order for RDP only) or
//! `{"noise_multiplier": S}`.

use clap::{Args, Subcommand};
use dp_runtime::accounting::{self, AccountantKind};
use dp_runtime::Result;
use serde_json::json;

/// The `privacy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// ε spent by a number of Poisson-subsampled Gaussian steps.
    Epsilon(EpsilonArgs),
    /// The smallest noise multiplier that keeps ε at or below a target.
    Noise(NoiseArgs),
}

/// Arguments of `dp privacy epsilon`.
#[derive(Debug, Args)]
pub struct EpsilonArgs {
    /// Poisson sampling rate q = expected batch size / dataset size, in (0, 1].
    #[arg(long, allow_hyphen_values = true)]
    pub sampling_rate: f64,
    /// Noise multiplier σ: noise standard deviation over the clipping norm.
    #[arg(long, allow_hyphen_values = true)]
    pub noise_multiplier: f64,
    /// Number of training steps.
    #[arg(long)]
    pub steps: u64,
    /// δ of the (ε, δ) guarantee, in (0, 1).
    #[arg(long, allow_hyphen_values = true)]
    pub delta: f64,
    /// Accountant: rdp or pld.
    #[arg(long, default_value = "rdp", value_parser = parse_accountant)]
    pub accountant: AccountantKind,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `dp privacy noise`.
#[derive(Debug, Args)]
pub struct NoiseArgs {
    /// Poisson sampling rate q = expected batch size / dataset size, in (0, 1].
    #[arg(long, allow_hyphen_values = true)]
    pub sampling_rate: f64,
    /// Number of training steps.
    #[arg(long)]
    pub steps: u64,
    /// δ of the (ε, δ) guarantee, in (0, 1).
    #[arg(long, allow_hyphen_values = true)]
    pub delta: f64,
    /// The ε not to exceed.
    #[arg(long, allow_hyphen_values = true)]
    pub target_epsilon: f64,
    /// Accountant: rdp or pld.
    #[arg(long, default_value = "rdp", value_parser = parse_accountant)]
    pub accountant: AccountantKind,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

fn parse_accountant(value: &str) -> std::result::Result<AccountantKind, String> {
    value.parse::<AccountantKind>().map_err(|_| format!("must be rdp or pld, got {value:?}"))
}

/// Runs a `privacy` subcommand, printing its result on stdout.
pub fn run(command: PrivacyCommand) -> Result<()> {
    match command {
        PrivacyCommand::Epsilon(args) => {
            let spent = accounting::epsilon(
                args.accountant,
                args.sampling_rate,
                args.noise_multiplier,
                args.steps,
                args.delta,
            )?;
            if args.json {
                let object = match spent.order {
                    Some(order) => json!({ "epsilon": spent.epsilon, "order": order }),
                    None => json!({ "epsilon": spent.epsilon }),
                };
                println!("{object}");
            } else {
                let order = spent.order.map(|a| format!(", optimal order {a}")).unwrap_or_default();
                println!(
                    "epsilon = {:.5} at delta = {} after {} steps with sampling rate {} and noise multiplier {} ({} accountant{order})",
                    spent.epsilon, args.delta, args.steps, args.sampling_rate, args.noise_multiplier, args.accountant
                );
            }
        }
        PrivacyCommand::Noise(args) => {
            let sigma = accounting::calibrate_noise(
                args.accountant,
                args.sampling_rate,
                args.steps,
                args.delta,
                args.target_epsilon,
            )?;
            if args.json {
                println!("{}", json!({ "noise_multiplier": sigma }));
            } else {
                // Rounded up, so that the printed value still meets the target.
                let shown = (sigma * 1e4).ceil() / 1e4;
                println!(
                    "noise multiplier {shown:.4} keeps epsilon <= {} at delta = {} after {} steps with sampling rate {} ({} accountant)",
                    args.target_epsilon, args.delta, args.steps, args.sampling_rate, args.accountant
                );
            }
        }
    }
    Ok(())
}
